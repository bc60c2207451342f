#!/usr/bin/env bash
# In-process ONNX inference (segnode / tract) beside onnxruntime: a 3D U-Net-sized model on a
# 512x512x200 CT phantom (benches/onnx_bench.py). A few minutes on 2 cores.
#   benches/onnx.sh [--spacing 2.0] [--base 16] [--patch 128] [--slices 200] [--runs 1]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --workspace --all-targets
target="${CARGO_TARGET_DIR:-target}"
py="${SEGNODE_TEST_PYTHON:-.venv/bin/python}"
exec "$py" benches/onnx_bench.py --segnode "$target/release/segnode" --phantom "$target/release/segnode-phantom" --python "$py" "$@"

#!/usr/bin/env bash
# Lung pipeline benchmark: segnode vs the scipy.ndimage peer on generated 512x512x300 and 512x512x600
# (thin-slice) chest phantoms. Builds segnode in release, then prints the table (benches/lung_bench.py).
#   benches/lung.sh            full size (needs ~2 GB of disk under benches/out and a few minutes)
#   benches/lung.sh --quick    256x256 smoke run
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --workspace --all-targets
target="${CARGO_TARGET_DIR:-target}"
py="${SEGNODE_TEST_PYTHON:-.venv/bin/python}"
exec "$py" benches/lung_bench.py --segnode "$target/release/segnode" --phantom "$target/release/segnode-phantom" --python "$py" "$@"

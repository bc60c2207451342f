#!/usr/bin/env bash
# Cochlear pipeline benchmark: segnode vs the scipy threshold-and-components peer on a generated
# 400x400x400 CBCT phantom at 0.2 mm (both ears). Builds segnode in release, then prints the table
# (benches/cochlear_bench.py).
#   benches/cochlear.sh               400^3 (the phantom, ~125 MB, is cached under benches/out)
#   benches/cochlear.sh --cube 200    a smaller cube
#   benches/cochlear.sh --runs 5      segnode runs (median reported)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --workspace --all-targets
target="${CARGO_TARGET_DIR:-target}"
py="${SEGNODE_TEST_PYTHON:-.venv/bin/python}"
exec "$py" benches/cochlear_bench.py --segnode "$target/release/segnode" --phantom "$target/release/segnode-phantom" --python "$py" "$@"

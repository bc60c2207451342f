#!/usr/bin/env bash
# Seeded sweep of the cochlear pipeline on both phantom generators (issue 11):
#   1. the second, independent generator (tests/py/cbct2.py) through `segnode segment`, table per band
#      (benches/cochlear_sweep.py; phantoms cached under benches/out/cbct2 between runs);
#   2. the first generator (crates/segnode-phantom cbct.rs), every variant over COCHLEAR_SEEDS seeds
#      (tests/cochlear_phantom.rs every_variant_over_seeds prints one row per array).
#   benches/cochlear_sweep.sh                 seeds 0-59 of the second generator, 4 seeds per variant
#   benches/cochlear_sweep.sh --seeds 0-21    fewer
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --workspace --all-targets
target="${CARGO_TARGET_DIR:-target}"
py="${SEGNODE_TEST_PYTHON:-.venv/bin/python}"
"$py" benches/cochlear_sweep.py --segnode "$target/release/segnode" --cache benches/out/cbct2 --seeds 0-59 "$@" || true
echo
echo "first generator (crates/segnode-phantom cbct.rs): variant | side | Dice (truth: metal as the device shows it) | found/truth | max err mm | angle truth | found"
COCHLEAR_SEEDS="${COCHLEAR_SEEDS:-4}" cargo test --release --quiet --test cochlear_phantom every_variant_over_seeds -- --nocapture 2>&1 | grep '^seed' || true

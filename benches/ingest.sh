#!/usr/bin/env bash
# Ingest benchmark (see benches/ingest.py): builds segnode in release mode, makes sure the peers are
# installed, then runs the comparison. Extra arguments go to ingest.py (e.g. --runs 5 --only segnode).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps >/dev/null
cargo build --release --quiet --workspace --all-targets
exec .venv/bin/python benches/ingest.py "$@"

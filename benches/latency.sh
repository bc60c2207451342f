#!/usr/bin/env bash
# End-to-end latency benchmark (see benches/latency.py): builds segnode and the phantom writer in release
# mode, makes sure the peers (DCMTK, Orthanc, PostgreSQL) are installed, then measures release -> SEG in
# Orthanc per index backend and completion mode. Extra arguments go to latency.py (e.g. --runs 5).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps >/dev/null
cargo build --release --quiet --workspace --all-targets
exec .venv/bin/python benches/latency.py "$@"

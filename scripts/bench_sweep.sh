#!/usr/bin/env bash
# The renewal sweep at fleet scale (docs/sweep.md):
#
#   scripts/bench_sweep.sh [--secrets N] [--due-every K]
#
# Installs moto and the Runtime Interface Emulator (scripts/setup.sh), builds
# the key broker in release, and runs scripts/bench_sweep.py: N managed
# secrets on its own moto server (default 2,000, every K-th due, default 10),
# one sweep renewing itself and one handing off to a queue, through the
# release binary under the emulator; wall time, peak memory and calls per
# service. A benchmark: CI never runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
nice -n 10 cargo build --quiet --release --bin p1-key-broker
exec .venv/bin/python scripts/bench_sweep.py "$@"

#!/usr/bin/env bash
# The renewal sweep at fleet scale (docs/sweep.md):
#
#   scripts/bench_sweep.sh [--secrets N] [--due-every K] [--latency-ms L]
#                          [--read-concurrency 1,8] [--cohort]
#
# Installs moto and the Runtime Interface Emulator (scripts/setup.sh), builds
# the key broker in release, and runs scripts/bench_sweep.py: N managed
# secrets on its own moto server (default 2,000, every K-th due, default 10),
# every AWS call L ms late (the fault proxy; default 0), sweeps handing off to
# a queue at each read concurrency, then one renewing itself, through the
# release binary under the emulator; wall time, peak memory and calls per
# service. docs/sweep.md has the figures (20,000 secrets, 30 ms). A
# benchmark: CI never runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
nice -n 10 cargo build --quiet --release --bin p1-key-broker
exec .venv/bin/python scripts/bench_sweep.py "$@"

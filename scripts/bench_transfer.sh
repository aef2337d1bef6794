#!/usr/bin/env bash
# Throughput and peak memory of the retrain runner's streamed transfers on
# loopback: the release binary of p1-retrain under AWS's runtime emulator
# moves an object of N MiB from S3 (moto) to the upload URL (the vendor
# stand-in), and a results file of N MiB back into S3, once with a length
# and once chunked (multipart). Prints one line per direction and the
# function's peak RSS (tests/it/large_transfer.rs does the work).
#
#   scripts/bench_transfer.sh [MiB]        (default 1024)
#
# Loopback only, and moto keeps objects in memory/temp files: the figures
# say how much the runner itself costs, not what S3 or a real pre-signed
# host would sustain.
set -euo pipefail
cd "$(dirname "$0")/.."
mib=${1:-1024}
scripts/setup.sh
trap 'scripts/services.sh stop' EXIT
scripts/services.sh start
# shellcheck disable=SC1091
source .local/env
export PATH="$PWD/.venv/bin:$PATH"
cargo build --release --bin p1-retrain
P1_RETRAIN_BINARY=$PWD/target/release/p1-retrain P1_TRANSFER_MIB=$mib \
  cargo test --test it large_transfer -- --nocapture 2>&1 | grep -E "large transfer|test result|panicked"

#!/usr/bin/env bash
# Throughput, CPU and peak memory of the retrain runner's streamed transfers
# on loopback (docs/performance.md): the release binary of p1-retrain moves
# an object of N MiB from S3 (moto) to the upload URL (the vendor stand-in)
# and a results file of N MiB back into S3, once with a length (one
# streamed PutObject) and once chunked (a multipart upload), each pass with
# its own object; bench/transfer.py does the work and says how.
#
#   scripts/bench_transfer.sh [MiB] [--no-verify] [--json FILE]
#                                      (default 1024 MiB; target/bench/transfer.json)
#
# Starts its own moto server and vendor stand-in on loopback (as the tests
# run them) and stops them when it ends; the clone's scripts/services.sh
# ones, which the tests may be using, are left alone. scripts/bench.sh runs
# it in the cold-start benchmark's run, with P1_BENCH_SKIP_BUILD=1 (the
# release binary is built there; P1_RETRAIN_BINARY names it).
#
# Loopback only, and moto keeps objects in memory/temp files: the figures
# say how much the runner itself costs, not what S3 or a real pre-signed
# host would sustain. (tests/it/large_transfer.rs checks the bounded memory
# in CI.)
set -euo pipefail
cd "$(dirname "$0")/.."
mib=1024
case "${1:-}" in
  '' | -*) ;;
  *[!0-9]*) echo "bench_transfer: MiB must be a whole number, not '$1'" >&2; exit 2 ;;
  *) mib=$1; shift ;;
esac
scripts/setup.sh
binary=${P1_RETRAIN_BINARY:-target/release/p1-retrain}
if [ "${P1_BENCH_SKIP_BUILD:-0}" != 1 ]; then
  echo "bench_transfer: building the runner (release)" >&2
  nice -n 10 cargo build --release --bin p1-retrain
fi
exec .venv/bin/python bench/transfer.py --mib "$mib" --binary "$binary" "$@"

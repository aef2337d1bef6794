#!/usr/bin/env bash
# The cold-start benchmark, one command (docs/performance.md):
#
#   scripts/bench.sh [--arm64] [--rounds N] [--warm N] [--warmup N]
#                    [--transports http,tls] [--layouts host,bundle]
#                    [--contenders function,floor,python,runner] [--stock-stand-ins]
#                    [--runner-object-kib N] [--transfers MiB | --no-transfers]
#                    [--out FILE]
#
# Installs what it needs into the clone (.venv via scripts/setup.sh: moto and
# cargo-lambda; .venv-bench: the Python baseline's boto3, requests and
# awslambdaric, and with --arm64 zig from PyPI's ziglang), builds the key
# broker and the retrain runner (one release build of both binaries) and the
# floor (examples/floor.rs), and runs scripts/bench_cold_start.py, which
# starts its own stand-ins on loopback (moto and the vendor stand-in, plain
# and behind TLS under a test CA; not the clone's scripts/services.sh ones,
# which it leaves alone), measures cold starts of the broker, the floor, the
# Python baseline and the runner (a `start` of a --runner-object-kib CSV,
# default 64) and warm requests of the first three, then runs
# scripts/bench_transfer.sh on the same runner binary (--transfers MiB each
# way, default 1024, about a minute here; --no-transfers skips it), prints
# one table with the transfer rows under it, writes the same figures as JSON
# (target/bench/results.json; the previous one is kept as results.prev.json)
# and stops everything it started.
#
# --arm64 also builds the arm64 Lambda zips (`cargo lambda build --release
# --arm64 --output-format zip`, a second release build) to report their size.
#
# A benchmark, not a test: CI never runs it, and nothing judges its figures.
set -euo pipefail
cd "$(dirname "$0")/.."

ZIGLANG_VERSION=0.15.1

arm64=0
args=()
for arg in "$@"; do
  case "$arg" in
    --arm64) arm64=1 ;;
    -h|--help) sed -n '2,29p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) args+=("$arg") ;;
  esac
done

PYTHON=${PYTHON:-python3}
scripts/setup.sh

# The baseline's pins live in bench/python/requirements.txt.
stamp=".venv-bench/.p1-bench-$(sha256sum bench/python/requirements.txt | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "bench: creating .venv-bench from bench/python/requirements.txt (boto3, requests, awslambdaric)" >&2
  rm -rf .venv-bench
  "$PYTHON" -m venv .venv-bench
  .venv-bench/bin/pip install --quiet --disable-pip-version-check -r bench/python/requirements.txt
  touch "$stamp"
fi

echo "bench: building the function and the retrain runner (release)" >&2
nice -n 10 cargo build --release --bin p1-key-broker --bin p1-retrain
# The floor is built naively, as a user's first function would be: with
# aws-lc's default CPU-jitter entropy source, which .cargo/config.toml turns
# off for this project. Its own target dir, so that the two aws-lc builds do
# not replace each other.
echo "bench: building the floor (release, aws-lc defaults, target/floor)" >&2
AWS_LC_SYS_NO_JITTER_ENTROPY=0 nice -n 10 \
  cargo build --release --example floor --target-dir target/floor

arm64_args=()
if [ "$arm64" = 1 ]; then
  if ! rustup target list --installed 2>/dev/null | grep -qx aarch64-unknown-linux-gnu; then
    note="not measured: the Rust target aarch64-unknown-linux-gnu is not installed (rustup target add aarch64-unknown-linux-gnu)"
    echo "bench: $note" >&2
    arm64_args+=(--arm64-note "$note")
  else
    zstamp=".venv-bench/.p1-bench-ziglang${ZIGLANG_VERSION}"
    if [ ! -f "$zstamp" ]; then
      echo "bench: installing ziglang==$ZIGLANG_VERSION into .venv-bench (cargo lambda's cross linker)" >&2
      .venv-bench/bin/pip install --quiet --disable-pip-version-check "ziglang==$ZIGLANG_VERSION"
      touch "$zstamp"
    fi
    echo "bench: building the arm64 zips (cargo lambda build --release --arm64 --output-format zip)" >&2
    # cargo lambda finds zig through `python3 -m ziglang` on PATH.
    PATH="$PWD/.venv-bench/bin:$PWD/.venv/bin:$PATH" nice -n 10 \
      cargo lambda build --release --arm64 --output-format zip --bin p1-key-broker
    # (cargo lambda takes no --target-dir; it honours CARGO_TARGET_DIR.)
    AWS_LC_SYS_NO_JITTER_ENTROPY=0 CARGO_TARGET_DIR=target/floor \
      PATH="$PWD/.venv-bench/bin:$PWD/.venv/bin:$PATH" nice -n 10 \
      cargo lambda build --release --arm64 --output-format zip --example floor
    arm64_args+=(--arm64-zip "function=target/lambda/p1-key-broker/bootstrap.zip"
                 --arm64-zip "floor=target/floor/lambda/floor/bootstrap.zip")
  fi
else
  arm64_args+=(--arm64-note "not built (scripts/bench.sh --arm64 builds it)")
fi

.venv/bin/python scripts/bench_cold_start.py ${args[@]+"${args[@]}"} ${arm64_args[@]+"${arm64_args[@]}"}

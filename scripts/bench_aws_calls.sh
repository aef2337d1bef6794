#!/usr/bin/env bash
# Healthy Secrets Manager call times from this crate's SDK set-up, against
# moto on loopback (docs/reliability.md):
#
#   scripts/bench_aws_calls.sh [N]      (default 200 calls of each operation)
#
# Installs moto (scripts/setup.sh), starts its own moto server on a free
# loopback port, runs examples/aws_calls.rs in release, and stops moto.
# A benchmark: CI never runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
.venv/bin/moto_server -H 127.0.0.1 -p "$port" >/dev/null 2>&1 &
moto=$!
trap 'kill $moto 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  .venv/bin/python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/', timeout=1)" 2>/dev/null && break
  sleep 0.1
done
nice -n 10 cargo build --quiet --release --example aws_calls
AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=us-east-1 \
  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
  target/release/examples/aws_calls "${1:-200}"

#!/usr/bin/env bash
# Starts or stops the local stand-ins on loopback:
#   - moto's server (Secrets Manager, Step Functions, SQS, EventBridge),
#   - the Prediction One vendor stand-in (scripts/vendor_standin.py), once
#     over plain HTTP and once over TLS under a test CA made here
#     (scripts/test_ca.py, in .local/tls/),
#   - the fault-injecting proxy in front of moto (scripts/aws_fault_proxy.py).
# `start` writes .local/env, a file of `export` lines that point the AWS SDK
# (AWS_ENDPOINT_URL, moto itself) and the function (P1_API_BASE_URL) at them,
# name the proxy (P1_FAULT_PROXY_URL) for the tests that want faults and the
# TLS stand-in (P1_STANDIN_TLS_URL, its CA in P1_TEST_CA), and make clients
# trust the system's roots plus the test CA (SSL_CERT_FILE).
# Logs: .local/moto.log, .local/standin.log, .local/standin-tls.log,
# .local/faults.log.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .local

stop() {
  for name in faults moto standin standin-tls; do
    if [ -f ".local/$name.pid" ]; then
      kill "$(cat ".local/$name.pid")" 2>/dev/null || true
      rm -f ".local/$name.pid"
    fi
  done
}

wait_for() { # url
  for _ in $(seq 1 100); do
    if .venv/bin/python - "$1" <<'PY' 2>/dev/null; then return 0; fi
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=1)
PY
    sleep 0.1
  done
  echo "services: $1 did not come up" >&2
  return 1
}

free_port() {
  .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start() {
  stop
  local moto_port standin_port faults_port
  moto_port=$(free_port)
  .venv/bin/moto_server -H 127.0.0.1 -p "$moto_port" >.local/moto.log 2>&1 &
  echo $! >.local/moto.pid
  rm -f .local/standin.port
  .venv/bin/python scripts/vendor_standin.py --port 0 --port-file .local/standin.port \
    >.local/standin.log 2>&1 &
  echo $! >.local/standin.pid
  for _ in $(seq 1 100); do [ -s .local/standin.port ] && break; sleep 0.1; done
  standin_port=$(cat .local/standin.port)
  local tls_port
  .venv/bin/python scripts/test_ca.py .local/tls
  rm -f .local/standin-tls.port
  .venv/bin/python scripts/vendor_standin.py --port 0 --port-file .local/standin-tls.port \
    --tls-cert .local/tls/cert.pem --tls-key .local/tls/key.pem \
    >.local/standin-tls.log 2>&1 &
  echo $! >.local/standin-tls.pid
  for _ in $(seq 1 100); do [ -s .local/standin-tls.port ] && break; sleep 0.1; done
  tls_port=$(cat .local/standin-tls.port)
  wait_for "http://127.0.0.1:$moto_port/moto-api/"
  wait_for "http://127.0.0.1:$standin_port/_standin/health"
  rm -f .local/faults.port
  .venv/bin/python scripts/aws_fault_proxy.py --upstream "http://127.0.0.1:$moto_port" \
    --port 0 --port-file .local/faults.port >.local/faults.log 2>&1 &
  echo $! >.local/faults.pid
  for _ in $(seq 1 100); do [ -s .local/faults.port ] && break; sleep 0.1; done
  faults_port=$(cat .local/faults.port)
  wait_for "http://127.0.0.1:$faults_port/_faults/health"
  # Let moto run real state machines, so task-token workflows run end to end.
  .venv/bin/python - "$moto_port" <<'PY'
import json, sys, urllib.request
req = urllib.request.Request(
    f"http://127.0.0.1:{sys.argv[1]}/moto-api/config",
    data=json.dumps({"stepfunctions": {"execute_state_machine": True}}).encode(),
    headers={"Content-Type": "application/json"}, method="POST")
urllib.request.urlopen(req, timeout=5)
PY
  cat >.local/env <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:$moto_port
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
unset AWS_SESSION_TOKEN AWS_PROFILE
export P1_API_BASE_URL=http://127.0.0.1:$standin_port
export P1_STANDIN_URL=http://127.0.0.1:$standin_port
export P1_FAULT_PROXY_URL=http://127.0.0.1:$faults_port
export P1_STANDIN_TLS_URL=https://127.0.0.1:$tls_port
export P1_TEST_CA=$PWD/.local/tls/ca.pem
export SSL_CERT_FILE=$PWD/.local/tls/bundle.pem
ENV
  echo "services: moto on 127.0.0.1:$moto_port, vendor stand-in on 127.0.0.1:$standin_port" \
    "(TLS: $tls_port), fault proxy on 127.0.0.1:$faults_port" >&2
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac

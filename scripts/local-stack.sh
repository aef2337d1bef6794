#!/usr/bin/env bash
# The whole stack on this machine, no AWS account and no container engine:
# infra/template.yaml deployed by LocalStack's CloudFormation exactly as it
# deploys on AWS, both functions running the real binaries (built for this
# machine), the Prediction One stand-in behind TLS as the vendor.
#
#   scripts/local-stack.sh up              build, start, deploy (or update), print the outputs
#   scripts/local-stack.sh status          the stack's status and outputs
#   scripts/local-stack.sh sweep           send the sweep schedule's input to the function
#   scripts/local-stack.sh request [MODEL] a key request through the request queue
#   scripts/local-stack.sh upload [FILE [MODEL]]
#                                          new data in the bucket: the retraining, step by step
#   scripts/local-stack.sh down            delete the stack, stop everything
#
# Needs Rust and Python 3.12+ (LocalStack 2026.3.0; pyenv's will do): the
# first `up` installs LocalStack into .venv-localstack (PyPI, about 500 MB)
# and builds the binaries. Everything listens on loopback only. What
# LocalStack does not check (IAM, the dashboard, schedules firing, bucket
# lifecycle) is in docs/local-stack.md. Logs: .local/localstack-local.log,
# each function's output in .local/localstack-local/functions/.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
py=$root/.venv-localstack/bin/python
standin_pid=.local/local-stack-standin.pid
standin_port=.local/local-stack-standin.port

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stack_py() {
  # shellcheck disable=SC1091
  source .local/localstack-local.env
  P1_STACK_STANDIN_URL=https://127.0.0.1:$(cat "$standin_port") \
    P1_STACK_BINARIES=$root/target/debug PYTHONDONTWRITEBYTECODE=1 \
    "$py" scripts/localstack/stack.py "$@"
}

start() {
  mkdir -p .local
  if ! alive "$standin_pid"; then
    "$py" scripts/test_ca.py .local/local-stack-tls
    rm -f "$standin_port"
    "$py" scripts/vendor_standin.py --port 0 --port-file "$standin_port" \
      --tls-cert .local/local-stack-tls/cert.pem --tls-key .local/local-stack-tls/key.pem \
      >.local/local-stack-standin.log 2>&1 &
    echo $! >"$standin_pid"
    for _ in $(seq 1 100); do [ -s "$standin_port" ] && break; sleep 0.1; done
    # A new CA: LocalStack is restarted so that the functions trust it.
    scripts/localstack.sh stop local
  fi
  if ! alive .local/localstack-local.pid; then
    P1_EXECUTOR_CA_BUNDLE=$root/.local/local-stack-tls/bundle.pem scripts/localstack.sh start local
  fi
}

running() {
  alive "$standin_pid" && alive .local/localstack-local.pid || {
    echo "local-stack: not running (scripts/local-stack.sh up)" >&2
    exit 1
  }
}

case "${1:-}" in
  up)
    echo "local-stack: building the functions (cargo build --bins)" >&2
    cargo build --quiet --bins
    scripts/localstack.sh install
    start
    stack_py up
    cat <<'TRY'

Three things to try:
  scripts/local-stack.sh request 42     a retrain key for model 42, through the request queue
  scripts/local-stack.sh sweep          the schedule's {"sweep": "due"}: the train key, through the queue
  scripts/local-stack.sh upload         a CSV under retrain/42/: one execution, one job at the stand-in
                                        (a minute or more: the workflow polls every 60 s)
The functions' output: .local/localstack-local/functions/. Remove it all: scripts/local-stack.sh down
TRY
    ;;
  status) running; stack_py status ;;
  sweep | request | upload) running; stack_py "$@" ;;
  down)
    if alive .local/localstack-local.pid && [ -s "$standin_port" ]; then stack_py down || true; fi
    scripts/localstack.sh stop local
    if alive "$standin_pid"; then kill "$(cat "$standin_pid")"; fi
    rm -f "$standin_pid" "$standin_port"
    echo "local-stack: stopped" >&2
    ;;
  *)
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
    ;;
esac

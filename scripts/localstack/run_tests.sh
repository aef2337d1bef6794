#!/usr/bin/env bash
# The tests of the whole stack (SPEC section 13), on a LocalStack of their
# own (`scripts/localstack.sh start stack`, fresh state every run):
#   1. test_executor.py: the executor plugin (a bootstrap that echoes, one
#      that crashes, one that times out);
#   2. test_deployed_stack.py: infra/template.yaml as shipped, created, run,
#      updated and deleted, with the real binaries behind its functions and
#      the vendor stand-in behind TLS.
#
#   scripts/localstack/run_tests.sh [cargo build options, e.g. --locked]
#
# Builds the two binaries (host architecture, the dev profile that
# `cargo test` already built; P1_STACK_BINARIES names another folder of
# them), installs LocalStack (PyPI), then runs everything else in a network
# namespace with loopback only when it can (root, as in CI): nothing can
# leave the machine. Logs: .local/localstack-stack.log, the functions'
# output in .local/localstack-stack/functions/, the stand-in's in
# .local/stack-standin.log.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ -z "${P1_IN_NETNS:-}" ]; then
  if [ -z "${P1_STACK_BINARIES:-}" ]; then
    cargo build --quiet --bins "$@"
  fi
  scripts/localstack.sh install
  if [ "$(id -u)" = 0 ] && unshare -n true 2>/dev/null; then
    exec unshare -n -- env P1_IN_NETNS=1 "$0" "$@"
  fi
  echo "run_tests: not root (or no unshare): running on the host's loopback" >&2
fi

root=$PWD
py=$root/.venv-localstack/bin/python
if [ -n "${P1_IN_NETNS:-}" ]; then
  # A new network namespace has only lo, and it is down.
  "$py" - <<'PY'
import fcntl, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
flags = struct.unpack("16sH14s", fcntl.ioctl(s, 0x8913, struct.pack("16sH14s", b"lo", 0, bytes(14))))[1]
fcntl.ioctl(s, 0x8914, struct.pack("16sH14s", b"lo", flags | 1, bytes(14)))  # SIOCSIFFLAGS, IFF_UP
PY
fi

mkdir -p .local
cleanup() {
  cd "$root"
  scripts/localstack.sh stop stack
  if [ -f .local/stack-standin.pid ]; then
    kill "$(cat .local/stack-standin.pid)" 2>/dev/null || true
    rm -f .local/stack-standin.pid
  fi
}
trap cleanup EXIT

# The vendor stand-in behind TLS, under a test CA made here.
"$py" scripts/test_ca.py .local/stack-tls
rm -f .local/stack-standin.port
"$py" scripts/vendor_standin.py --port 0 --port-file .local/stack-standin.port \
  --tls-cert .local/stack-tls/cert.pem --tls-key .local/stack-tls/key.pem \
  >.local/stack-standin.log 2>&1 &
echo $! >.local/stack-standin.pid
for _ in $(seq 1 100); do [ -s .local/stack-standin.port ] && break; sleep 0.1; done
[ -s .local/stack-standin.port ] || { echo "run_tests: the stand-in did not start" >&2; exit 1; }

# The functions trust the system's roots and the test CA, nothing else.
P1_EXECUTOR_CA_BUNDLE=$PWD/.local/stack-tls/bundle.pem scripts/localstack.sh start stack
# shellcheck disable=SC1091
source .local/localstack-stack.env

export P1_STACK_STANDIN_URL=https://127.0.0.1:$(cat .local/stack-standin.port)
export P1_STACK_CA=$PWD/.local/stack-tls/ca.pem
export P1_STACK_BINARIES=${P1_STACK_BINARIES:-$PWD/target/debug}
export P1_STACK_FUNCTION_LOGS=$PWD/.local/localstack-stack/functions
export PYTHONDONTWRITEBYTECODE=1
cd scripts/localstack
"$py" test_executor.py
"$py" test_deployed_stack.py

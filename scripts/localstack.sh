#!/usr/bin/env bash
# Installs, starts or stops LocalStack's open-source core as a plain Python
# process on loopback (no container, no auth token, no internet), for the
# tests where the real S3 -> EventBridge -> Step Functions event path matters;
# moto (scripts/services.sh) stays the stand-in for everything else.
# See shared/localstack.md for what was found to work and how it differs
# from AWS.
#
#   scripts/localstack.sh install
#       Creates .venv-localstack with localstack-core[runtime], pinned, its
#       dependencies pinned to its release date (pip's --uploaded-prior-to).
#       localstack-core 2026.3.0 needs Python 3.12 or later: the first
#       Python 3.12+ found (python3, python3.N on PATH, pyenv's versions; or
#       LOCALSTACK_PYTHON) gets it; otherwise python3 (3.11) gets 4.8.1, the
#       newest that works there. Idempotent: a stamp file names the version
#       and Python, and a second run with the same ones does nothing.
#       About 1-2 minutes and 500 MB the first time; needs PyPI.
#   scripts/localstack.sh start
#       Installs if needed, then starts it on a free loopback port with
#       S3, EventBridge, Step Functions, SQS and Secrets Manager, waits for
#       /_localstack/health and writes .local/localstack.env, one line:
#       `export P1_LOCALSTACK_URL=http://127.0.0.1:<port>` (it leaves
#       AWS_ENDPOINT_URL alone: the other tests use moto). Its state starts
#       empty every time; its files (and cache) are in .local/localstack/.
#       Log: .local/localstack.log. A running one is stopped first.
#   scripts/localstack.sh stop
#       SIGTERM, up to 15 s for it to exit, then SIGKILL.
#   scripts/localstack.sh start stack|local | stop stack|local
#       An instance for the whole stack deployed by CloudFormation: "stack"
#       for its tests (scripts/localstack/run_tests.sh), "local" for a
#       user's (scripts/local-stack.sh), so that a test run never stops a
#       user's stack. Also CloudFormation,
#       IAM, STS, Lambda (its functions run as local processes by the
#       executor plugin in scripts/localstack/plugin), CloudWatch, Logs and
#       Scheduler; path-style queue URLs (SQS_ENDPOINT_STRATEGY=path: the
#       default host sqs.<region>.127.0.0.1 is not a valid URL host) and
#       queue mappings that poll every second. Files: .local/localstack-NAME*,
#       env in .local/localstack-NAME.env (P1_STACK_LOCALSTACK_URL); the
#       functions' output in .local/localstack-NAME/functions/<name>.log.
#       P1_EXECUTOR_CA_BUNDLE, when set, is the CA bundle the functions trust.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .local

VENV=.venv-localstack
PIP_VERSION=26.0.1
# On Python 3.12 or later:
LOCALSTACK_VERSION=2026.3.0
LOCALSTACK_DEPS_BEFORE=2026-03-24T00:00:00Z
# On Python 3.11 (2026.3.0 fails there; 4.9 to 4.13.1 fail at CreateStateMachine):
LOCALSTACK_PY311_VERSION=4.8.1
LOCALSTACK_PY311_DEPS_BEFORE=2025-09-17T00:00:00Z
SERVICES=s3,events,stepfunctions,sqs,secretsmanager
STACK_SERVICES=$SERVICES,cloudformation,iam,sts,lambda,logs,cloudwatch,scheduler

# Sets the instance's file names from its name ("" or "stack").
instance() {
  case "${1:-}" in
    "") NAME=localstack; ENV_VAR=P1_LOCALSTACK_URL ;;
    stack | local) NAME=localstack-$1; ENV_VAR=P1_STACK_LOCALSTACK_URL ;;
    *) echo "localstack: unknown instance '$1' (none, stack or local)" >&2; exit 2 ;;
  esac
  INSTANCE=${1:-}
  PIDFILE=.local/$NAME.pid
  ENVFILE=.local/$NAME.env
  LOGFILE=.local/$NAME.log
}

# Prints "MAJOR.MINOR" of a working interpreter with venv and ensurepip
# (Debian's python3.N without python3.N-venv has no ensurepip); fails if
# it is not one (pyenv's shims fail for versions that are not selected).
py_minor() {
  "$1" -c 'import sys, venv, ensurepip; print("%d.%d" % sys.version_info[:2])' 2>/dev/null
}

# Sets PYTHON, PY_MINOR, VERSION and DEPS_BEFORE.
choose() {
  local pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
  local candidates=() cand minor pass
  if [ -n "${LOCALSTACK_PYTHON:-}" ]; then
    candidates=("$LOCALSTACK_PYTHON")
  else
    candidates=(python3 python3.13 python3.12 python3.14 python3.15)
    if [ -d "$pyenv_root/versions" ]; then
      while IFS= read -r cand; do
        candidates+=("$cand/bin/python3")
      done < <(find "$pyenv_root/versions" -mindepth 1 -maxdepth 1 -name '3.*' | sort -rV)
    fi
  fi
  # First 3.12 or 3.13 (both known to work), then anything later.
  for pass in known later; do
    for cand in "${candidates[@]}"; do
      minor=$(py_minor "$cand") || continue
      case "$pass:$minor" in
        known:3.12 | known:3.13) ;;
        later:3.1[4-9] | later:3.[2-9][0-9]) ;;
        *) continue ;;
      esac
      PYTHON=$(command -v "$cand")
      PY_MINOR=$minor
      VERSION=$LOCALSTACK_VERSION
      DEPS_BEFORE=$LOCALSTACK_DEPS_BEFORE
      return 0
    done
  done
  cand=${LOCALSTACK_PYTHON:-python3}
  minor=$(py_minor "$cand") || {
    echo "localstack: no usable Python 3 (with venv) found" >&2
    exit 1
  }
  case $minor in
    3.11) ;;
    *) echo "localstack: Python $minor ($cand) is too old: need 3.11 (localstack-core" \
      "$LOCALSTACK_PY311_VERSION) or 3.12+ ($LOCALSTACK_VERSION)" >&2; exit 1 ;;
  esac
  PYTHON=$(command -v "$cand")
  PY_MINOR=$minor
  VERSION=$LOCALSTACK_PY311_VERSION
  DEPS_BEFORE=$LOCALSTACK_PY311_DEPS_BEFORE
}

install() {
  choose
  local stamp="$VENV/.p1-localstack-$VERSION-py$PY_MINOR-pip$PIP_VERSION"
  if [ -f "$stamp" ]; then
    return 0
  fi
  echo "localstack: installing localstack-core[runtime]==$VERSION into $VENV" \
    "with $PYTHON (Python $PY_MINOR), dependencies as of $DEPS_BEFORE" >&2
  # A venv made by another Python (or a half-finished one) is not reused.
  rm -rf "$VENV"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "pip==$PIP_VERSION"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --prefer-binary \
    --uploaded-prior-to "$DEPS_BEFORE" "localstack-core[runtime]==$VERSION"
  touch "$stamp"
}

# True if PID is a running LocalStack: not a reused pid, not a zombie.
is_localstack() {
  [[ "$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline")" == *localstack.runtime.main* ]]
}

# True until PID has exited: gone, or a zombie (Threads: 1) that the
# init process has not reaped yet (that can take a second or two here).
still_running() {
  local st
  st=$(awk '/^State:/ { s = $2 } /^Threads:/ { t = $2 } END { print s t }' \
    "/proc/$1/status" 2>/dev/null) || return 1
  [ -n "$st" ] && [ "$st" != Z1 ]
}

stop() {
  instance "${1:-}"
  if [ -f "$PIDFILE" ]; then
    local pid
    pid=$(cat "$PIDFILE")
    if is_localstack "$pid" && kill -TERM "$pid" 2>/dev/null; then
      for _ in $(seq 1 150); do
        still_running "$pid" || break
        sleep 0.1
      done
      if still_running "$pid"; then
        echo "localstack: pid $pid still running 15 s after SIGTERM; sending SIGKILL" >&2
        kill -KILL "$pid" 2>/dev/null || true
      fi
    fi
    rm -f "$PIDFILE"
  fi
  rm -f "$ENVFILE"
}

start() {
  install
  stop "${1:-}"
  local port root url
  port=$("$VENV/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  root=$PWD/.local/$NAME
  # A fresh filesystem every start, but for its cache: the index of AWS's
  # service specs that it builds at its first request (without it, that run
  # ends up ~340 MB bigger) and its self-signed certificate. Its service
  # state lives in memory only.
  local cache=$root/fs/var/lib/localstack/cache
  if [ -d "$cache" ]; then mv "$cache" "$root/cache.keep"; fi
  rm -rf "$root/fs"
  mkdir -p "$root/fs/var/lib/localstack" "$root/home"
  if [ -d "$root/cache.keep" ]; then mv "$root/cache.keep" "$cache"; fi
  url=http://127.0.0.1:$port
  local extra=(SERVICES="$SERVICES")
  if [ -n "$INSTANCE" ]; then
    [ "$VERSION" = "$LOCALSTACK_VERSION" ] || {
      echo "localstack: the stack needs localstack-core $LOCALSTACK_VERSION (Python 3.12+);" \
        "$VERSION cannot update it" >&2
      exit 1
    }
    mkdir -p "$root/functions"
    extra=(SERVICES="$STACK_SERVICES"
      PYTHONPATH="$PWD/scripts/localstack/plugin"
      LAMBDA_RUNTIME_EXECUTOR=p1-process
      P1_EXECUTOR_LOG_DIR="$root/functions"
      P1_EXECUTOR_CA_BUNDLE="${P1_EXECUTOR_CA_BUNDLE:-}"
      SQS_ENDPOINT_STRATEGY=path
      LAMBDA_EVENT_SOURCE_MAPPING_MAX_BACKOFF_ON_EMPTY_POLL_SEC=1)
  fi
  # DISABLE_EVENTS turns off its usage reporting, DNS_ADDRESS=0 its DNS
  # server, SKIP_SSL_CERT_DOWNLOAD its certificate download: nothing leaves
  # loopback. OVERRIDE_IN_DOCKER=0: these machines have a /.dockerenv, from
  # which it would think it runs in its container, ignore FILESYSTEM_ROOT and
  # write to /var/lib/localstack. No AWS_* from the caller's shell (e.g.
  # .local/env's moto endpoint) reaches it.
  env -u AWS_ENDPOINT_URL -u AWS_PROFILE -u AWS_CONFIG_FILE -u AWS_SHARED_CREDENTIALS_FILE \
    GATEWAY_LISTEN="127.0.0.1:$port" \
    LOCALSTACK_HOST="127.0.0.1:$port" \
    "${extra[@]}" \
    SKIP_SSL_CERT_DOWNLOAD=1 \
    DISABLE_EVENTS=1 \
    DNS_ADDRESS=0 \
    OVERRIDE_IN_DOCKER=0 \
    FILESYSTEM_ROOT="$root/fs" \
    HOME="$root/home" \
    "$VENV/bin/python" -m localstack.runtime.main >"$LOGFILE" 2>&1 &
  local pid=$!
  echo "$pid" >"$PIDFILE"
  local deadline=$((SECONDS + 60))
  while [ "$SECONDS" -lt "$deadline" ]; do
    # Not is_localstack: until the fork has exec'd, its cmdline is this script's.
    if ! still_running "$pid"; then
      echo "localstack: exited while starting; end of $LOGFILE:" >&2
      tail -n 30 "$LOGFILE" >&2
      rm -f "$PIDFILE"
      return 1
    fi
    if "$VENV/bin/python" - "$url/_localstack/health" <<'PY' 2>/dev/null; then
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=1)
PY
      echo "export $ENV_VAR=$url" >"$ENVFILE"
      echo "localstack: localstack-core $VERSION (Python $PY_MINOR) on $url," \
        "pid $pid; env in $ENVFILE" >&2
      return 0
    fi
    sleep 0.1
  done
  echo "localstack: not ready after 60 s; see $LOGFILE" >&2
  stop "$INSTANCE"
  return 1
}

case "${1:-}" in
  install) install ;;
  start) instance "${2:-}"; start "${2:-}" ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: $0 install | start [stack|local] | stop [stack|local]" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# Runs the functions locally, the way they run on Lambda: `cargo lambda
# watch` hosts the binaries, `cargo lambda invoke` sends the events, moto
# stands in for AWS and scripts/vendor_standin.py for Prediction One.
#
#   scripts/local-run.sh [events/<fixture>.json]
#       The key broker on one fixture (default: events/direct-train.json);
#       prints the result and the stored records (keys redacted).
#   scripts/local-run.sh --retrain [DATA.csv|DATA.zip] [--switch-model]
#       The whole retraining workflow (scripts/local_workflow.py): uploads
#       the data (default: a generated CSV) to s3://p1-retrain-data/retrain/42/,
#       runs the state machine from infra/ on moto with the retrain runner
#       serving its steps, and prints each step, the execution's output,
#       the results object and the stored key record.
set -euo pipefail
cd "$(dirname "$0")/.."
retrain=
switch=
data=
if [ "${1:-}" = "--retrain" ]; then
  retrain=yes
  shift
  for arg in "$@"; do
    case $arg in
      --switch-model) switch=--switch-model ;;
      *) data=$arg ;;
    esac
  done
  if [ -n "$data" ]; then
    [ -f "$data" ] || { echo "no such data file: $data" >&2; exit 2; }
  fi
else
  fixture=${1:-events/direct-train.json}
  [ -f "$fixture" ] || { echo "no such fixture: $fixture" >&2; exit 2; }
fi

scripts/setup.sh
watch_pid=
cleanup() {
  [ -n "$watch_pid" ] && kill -- "-$watch_pid" 2>/dev/null || true
  scripts/services.sh stop
}
trap cleanup EXIT
scripts/services.sh start
# shellcheck disable=SC1091
source .local/env
export PATH="$PWD/.venv/bin:$PATH"

# The account's secret key, as an operator would store it.
.venv/bin/python - <<'PY'
import boto3
sm = boto3.client("secretsmanager")
sm.create_secret(Name="prediction-one/secret-key", SecretString='{"secret_key": "sk-local-demo"}')
PY

port=$(.venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "local-run: building and starting the functions under cargo lambda watch (first build takes a few minutes)" >&2
P1_SECRET_KEY_SECRET_ID=prediction-one/secret-key \
  setsid cargo lambda watch --ignore-changes -A 127.0.0.1 -P "$port" >.local/watch.log 2>&1 &
watch_pid=$!
for _ in $(seq 1 600); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.5
done

if [ -n "$retrain" ]; then
  if [ -z "$data" ]; then
    data=.local/new-data.csv
    .venv/bin/python scripts/local_workflow.py --sample "$data"
  fi
  echo "local-run: the retraining workflow on $data" >&2
  # shellcheck disable=SC2086
  .venv/bin/python scripts/local_workflow.py "$port" "$data" $switch || {
    echo "local-run: the workflow failed; the runner's log is in .local/watch.log" >&2
    exit 1
  }
  exit 0
fi

echo "local-run: cargo lambda invoke --data-file $fixture" >&2
echo "== result"
cargo lambda invoke p1-key-broker -A 127.0.0.1 -P "$port" --data-file "$fixture" || {
  echo "local-run: the invocation failed; the function's log is in .local/watch.log" >&2
  exit 1
}
echo "== stored in Secrets Manager (api_key redacted)"
.venv/bin/python - <<'PY'
import boto3, json
sm = boto3.client("secretsmanager")
shown = 0
for page in sm.get_paginator("list_secrets").paginate():
    for s in sorted(page["SecretList"], key=lambda s: s["Name"]):
        if not s["Name"].startswith("prediction-one/api-key/"):
            continue
        v = sm.get_secret_value(SecretId=s["ARN"], VersionStage="AWSCURRENT")
        record = json.loads(v["SecretString"])
        record["api_key"] = "<redacted %d chars>" % len(record.get("api_key", ""))
        print(json.dumps({"secret": s["Name"], "version_id": v["VersionId"], "record": record}, indent=2))
        shown += 1
if not shown:
    print("(no key secret yet: nothing was stored)")
PY

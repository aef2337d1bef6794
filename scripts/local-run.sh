#!/usr/bin/env bash
# Runs the function locally on one fixture, the way it runs on Lambda:
# `cargo lambda watch` hosts the binary, `cargo lambda invoke` sends the
# fixture, moto stands in for AWS and scripts/vendor_standin.py for
# Prediction One. Prints the result and the stored records (keys redacted).
#
#   scripts/local-run.sh [events/<fixture>.json]     (default: direct-train)
set -euo pipefail
cd "$(dirname "$0")/.."
fixture=${1:-events/direct-train.json}
[ -f "$fixture" ] || { echo "no such fixture: $fixture" >&2; exit 2; }

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
echo "local-run: building and starting the function under cargo lambda watch (first build takes a few minutes)" >&2
P1_SECRET_KEY_SECRET_ID=prediction-one/secret-key \
  setsid cargo lambda watch --ignore-changes -A 127.0.0.1 -P "$port" >.local/watch.log 2>&1 &
watch_pid=$!
for _ in $(seq 1 600); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.5
done

echo "local-run: cargo lambda invoke --data-file $fixture" >&2
echo "== result"
cargo lambda invoke -A 127.0.0.1 -P "$port" --data-file "$fixture" || {
  echo "local-run: the invocation failed; the function's log is in .local/watch.log" >&2
  exit 1
}
echo "== stored in Secrets Manager (api_key redacted)"
.venv/bin/python - <<'PY'
import boto3, json
sm = boto3.client("secretsmanager")
for page in sm.get_paginator("list_secrets").paginate():
    for s in sorted(page["SecretList"], key=lambda s: s["Name"]):
        if not s["Name"].startswith("prediction-one/api-key/"):
            continue
        v = sm.get_secret_value(SecretId=s["ARN"], VersionStage="AWSCURRENT")
        record = json.loads(v["SecretString"])
        record["api_key"] = "<redacted %d chars>" % len(record.get("api_key", ""))
        print(json.dumps({"secret": s["Name"], "version_id": v["VersionId"], "record": record}, indent=2))
PY

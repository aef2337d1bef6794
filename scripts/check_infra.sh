#!/usr/bin/env bash
# Offline checks of the deployable infrastructure (infra/), no AWS account:
#   1. expands infra/template.yaml (SAM) to plain CloudFormation with
#      aws-sam-translator (scripts/expand_sam.py), as deployed and with every
#      optional feature on;
#   2. cfn-lint on the SAM template and on the expanded one (with the custom
#      rules in infra/cfn-lint-custom-rules.txt);
#   3. checkov on the SAM template, the expanded one and the all-options one
#      (--skip-download: no platform calls); any failed check fails;
#   4. pytest infra/tests: the IAM statements (the key broker's and the
#      retrain runner's, against the SDK calls in src/), the retraining
#      workflow (infra/retrain-runner.asl.json, its rule and placeholders),
#      and broken copies of the template that cfn-lint must reject.
#
#   scripts/check_infra.sh [VENV]     (default: .venv-infra in the clone)
#
# Installs VENV from infra/requirements.txt when it is missing or the pins
# changed (a stamp file records which). Network: PyPI only, first run only.
# A separate venv from .venv: checkov's pins conflict with moto's.
# Runs every step even after a failure, and exits non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
start=$(date +%s)

venv=${1:-.venv-infra}
case $venv in /*) ;; *) venv="$root/$venv" ;; esac
requirements=infra/requirements.txt
pins=$(sha256sum "$requirements" | cut -c1-16)
stamp="$venv/.p1-infra-$pins"

if [ ! -f "$stamp" ]; then
  PYTHON=${PYTHON:-python3}
  echo "check_infra: installing $requirements into $venv" >&2
  if [ ! -x "$venv/bin/python" ]; then
    "$PYTHON" -m venv "$venv" || { echo "check_infra: FAILED: cannot create $venv" >&2; exit 1; }
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements" \
    || { echo "check_infra: FAILED: pip install -r $requirements" >&2; exit 1; }
  rm -f "$venv"/.p1-infra-*
  touch "$stamp"
fi
bin="$venv/bin"

# Nothing here may reach AWS: dummy credentials, no profile, no instance
# metadata (checkov's own platform stays off through --skip-download and no
# API key).
export AWS_EC2_METADATA_DISABLED=true AWS_ACCESS_KEY_ID=offline AWS_SECRET_ACCESS_KEY=offline
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1
unset AWS_PROFILE AWS_SESSION_TOKEN BC_API_KEY
# No __pycache__ beside scripts/expand_sam.py or the tests.
export PYTHONDONTWRITEBYTECODE=1

out=target/infra-check
rm -rf "$out"
mkdir -p "$out"
expanded="$out/template.expanded.json"
all_options="$out/template.all-options.json"
custom_rules=infra/cfn-lint-custom-rules.txt

failed=()
step() {
  local name=$1
  shift
  echo "== $name"
  if "$@"; then
    echo "   ok: $name"
  else
    echo "   FAILED: $name" >&2
    failed+=("$name")
  fi
}

step "expand the SAM template" \
  "$bin/python" scripts/expand_sam.py infra/template.yaml "$expanded"
step "expand with every option on" \
  "$bin/python" scripts/expand_sam.py --all-options infra/template.yaml "$all_options"

step "cfn-lint infra/template.yaml" \
  "$bin/cfn-lint" --custom-rules "$custom_rules" -- infra/template.yaml
if [ -f "$expanded" ]; then
  step "cfn-lint expanded template" \
    "$bin/cfn-lint" --custom-rules "$custom_rules" -- "$expanded"
else
  failed+=("cfn-lint expanded template (not expanded)")
fi

# --framework cloudformation covers SAM too (checkov's serverless framework is
# the Serverless Framework's serverless.yml, which this project does not use).
checkov_files=(-f infra/template.yaml)
[ -f "$expanded" ] && checkov_files+=(-f "$expanded")
[ -f "$all_options" ] && checkov_files+=(-f "$all_options")
step "checkov" \
  "$bin/checkov" --skip-download --framework cloudformation --compact --quiet "${checkov_files[@]}"

step "pytest infra/tests" \
  "$bin/python" -m pytest -q -p no:cacheprovider infra/tests

elapsed=$(( $(date +%s) - start ))
if [ ${#failed[@]} -eq 0 ]; then
  echo "check_infra: all passed (expand, cfn-lint x2, checkov x3, pytest) in ${elapsed}s"
  exit 0
fi
summary=$(printf '%s; ' "${failed[@]}")
echo "check_infra: FAILED: ${summary%; } (${elapsed}s)" >&2
exit 1

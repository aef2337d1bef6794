#!/usr/bin/env bash
# Runs every test: unit tests, integration tests against moto and the vendor
# stand-in, the real S3 -> EventBridge -> Step Functions path on LocalStack,
# the Lambda runtime path through cargo lambda watch/invoke, the whole stack
# deployed from infra/template.yaml on LocalStack's CloudFormation, and the
# offline checks of the SAM template in infra/.
# Installs and starts what it needs, and stops it again.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
trap 'scripts/services.sh stop; scripts/localstack.sh stop' EXIT
scripts/services.sh start
scripts/localstack.sh start
# shellcheck disable=SC1091
source .local/env
# shellcheck disable=SC1091
source .local/localstack.env
export PATH="$PWD/.venv/bin:$PATH"
cargo test --all-targets "$@"
# The LocalStack of the tests above is not needed any more: the deployed
# stack gets a fresh one of its own.
scripts/localstack.sh stop
# The whole stack, infra/template.yaml as shipped, on LocalStack's
# CloudFormation with the binaries cargo test just built (SPEC section 13).
scripts/localstack/run_tests.sh "$@"
# The vendor stand-in's own contract (what the tests above rely on).
.venv/bin/python scripts/test_vendor_standin.py
# The deployable template, offline: SAM expansion, cfn-lint, checkov, pytest.
scripts/check_infra.sh

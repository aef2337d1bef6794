#!/usr/bin/env bash
# Installs what the tests and local runs need into the clone itself:
# a Python virtualenv (.venv) with moto's server and cargo-lambda, pinned.
# Idempotent: a second run with the same pins does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

MOTO_VERSION=5.2.5
CARGO_LAMBDA_VERSION=1.9.2
stamp=".venv/.p1-setup-moto${MOTO_VERSION}-cl${CARGO_LAMBDA_VERSION}"

if [ -f "$stamp" ]; then
  exit 0
fi
PYTHON=${PYTHON:-python3}
echo "setup: creating .venv with moto[server]==$MOTO_VERSION and cargo-lambda==$CARGO_LAMBDA_VERSION" >&2
"$PYTHON" -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
# --no-deps: cargo-lambda's wheel carries its binary; its only dependency is
# the 400 MB zig toolchain, which only cross-compiling builds need.
.venv/bin/pip install --quiet --disable-pip-version-check --no-deps "cargo-lambda==$CARGO_LAMBDA_VERSION"
touch "$stamp"

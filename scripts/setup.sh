#!/usr/bin/env bash
# Installs what the tests and local runs need into the clone itself:
# a Python virtualenv (.venv) with moto's server and cargo-lambda, and AWS's
# Lambda Runtime Interface Emulator (.venv/bin/aws-lambda-rie), all pinned.
# Idempotent: a second run with the same pins does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

MOTO_VERSION=5.2.5
CARGO_LAMBDA_VERSION=1.9.2
# The Runtime Interface Emulator ships inside the aws-sam-cli wheel (SAM runs
# it in its containers); it runs a bootstrap directly, without a container,
# and honours AWS_LAMBDA_FUNCTION_TIMEOUT. The wheel is pinned by its hash.
SAM_CLI_VERSION=1.170.0
SAM_CLI_WHEEL_SHA256=24ebaf5ecba38dc1758089968cb89ab61e124b84e92a344fc7a2771a47f4d0bf
PYTHON=${PYTHON:-python3}

stamp=".venv/.p1-setup-moto${MOTO_VERSION}-cl${CARGO_LAMBDA_VERSION}"
if [ ! -f "$stamp" ]; then
  echo "setup: creating .venv with moto[server]==$MOTO_VERSION and cargo-lambda==$CARGO_LAMBDA_VERSION" >&2
  "$PYTHON" -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
  # --no-deps: cargo-lambda's wheel carries its binary; its only dependency is
  # the 400 MB zig toolchain, which only cross-compiling builds need.
  .venv/bin/pip install --quiet --disable-pip-version-check --no-deps "cargo-lambda==$CARGO_LAMBDA_VERSION"
  touch "$stamp"
fi

rie_stamp=".venv/.p1-setup-rie-sam${SAM_CLI_VERSION}"
if [ ! -f "$rie_stamp" ]; then
  case "$(uname -m)" in
    x86_64 | amd64) rie_arch=x86_64 ;;
    aarch64 | arm64) rie_arch=arm64 ;;
    *) echo "setup: no Runtime Interface Emulator for $(uname -m)" >&2; exit 1 ;;
  esac
  echo "setup: installing aws-lambda-rie ($rie_arch) from the aws-sam-cli==$SAM_CLI_VERSION wheel" >&2
  rie_tmp=$(mktemp -d .venv/.rie-download.XXXXXX)
  trap 'rm -rf "$rie_tmp"' EXIT
  echo "aws-sam-cli==$SAM_CLI_VERSION --hash=sha256:$SAM_CLI_WHEEL_SHA256" >"$rie_tmp/requirements.txt"
  # Only the wheel itself (8 MB), none of SAM's dependencies.
  .venv/bin/pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    --require-hashes -r "$rie_tmp/requirements.txt" -d "$rie_tmp"
  .venv/bin/python - "$rie_tmp" "samcli/local/rapid/aws-lambda-rie-$rie_arch" .venv/bin/aws-lambda-rie <<'PY'
import glob, os, shutil, sys, zipfile
tmp, member, dest = sys.argv[1:]
(wheel,) = glob.glob(os.path.join(tmp, "aws_sam_cli-*.whl"))
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest + ".part", "wb") as out:
    shutil.copyfileobj(src, out)
os.chmod(dest + ".part", 0o755)
os.replace(dest + ".part", dest)
PY
  rm -rf "$rie_tmp"
  trap - EXIT
  touch "$rie_stamp"
fi

#!/usr/bin/env python3
"""The whole stack, `infra/template.yaml` as shipped, deployed by LocalStack's
CloudFormation: what `sam package` and `sam deploy` do, offline.

Used by the deployed-stack test (`test_deployed_stack.py`) and by
`scripts/local-stack.sh`; needs LocalStack's venv (boto3, cfn-lint's YAML
reader) and a LocalStack started with `scripts/localstack.sh start stack`.

Packaging is `sam package`'s: each function's `CodeUri` becomes a zip in S3
holding `bootstrap` (the host build of its `BuildProperties.Binary`, stripped
of debug information: a debug build is over Lambda's 250 MB unzipped limit),
and each state machine's `DefinitionUri` file becomes an object in S3. The
template itself goes to S3 too (it is over CloudFormation's 51,200-byte
inline limit) and is deployed through a change set with the SAM transform,
as `sam deploy` does. Nothing in the template is changed.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import boto3
from botocore.config import Config
from cfnlint.decode import decode

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "template.yaml"
ARTIFACTS = "p1-stack-artifacts"
REGION = "us-east-1"
CAPABILITIES = ["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"]


def clients(endpoint: str) -> dict:
    """boto3 clients on LocalStack (dummy credentials: nothing leaves loopback)."""
    session = boto3.session.Session(
        aws_access_key_id="test", aws_secret_access_key="test", region_name=REGION)
    # No host prefixes (StartSyncExecution's "sync-"): everything is one host.
    cfg = Config(retries={"max_attempts": 2}, s3={"addressing_style": "path"},
                 inject_host_prefix=False)
    names = ["cloudformation", "s3", "secretsmanager", "lambda", "sqs", "stepfunctions",
             "events", "scheduler", "logs", "cloudwatch", "iam"]
    return {n: session.client(n, endpoint_url=endpoint, config=cfg) for n in names}


def load_template() -> dict:
    template, matches = decode(str(TEMPLATE))
    if matches or template is None:
        raise SystemExit(f"stack: cannot parse {TEMPLATE}: {matches}")
    return json.loads(json.dumps(template))


def strip_tool() -> list[str]:
    for tool in ("strip", "objcopy"):
        path = shutil.which(tool)
        if path:
            return [path, "--strip-debug"] if tool == "objcopy" else [path]
    raise SystemExit("stack: neither strip nor objcopy found (binutils, which a Rust linker brings)")


def bootstrap_zip(binary: Path) -> bytes:
    """A Lambda package: `bootstrap` (executable) at the root."""
    if not binary.is_file():
        raise SystemExit(f"stack: {binary} is missing: build it first (cargo build --bins)")
    with tempfile.TemporaryDirectory() as tmp:
        stripped = Path(tmp) / "bootstrap"
        subprocess.run([*strip_tool(), "-o", str(stripped), str(binary)], check=True)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
            info = zipfile.ZipInfo("bootstrap")
            info.external_attr = 0o755 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, stripped.read_bytes())
        return buf.getvalue()


def package(c: dict, endpoint: str, binaries: Path, prefix: str) -> str:
    """`sam package`: uploads the code and definitions, then the packaged
    template; returns the template's URL."""
    s3 = c["s3"]
    try:
        s3.create_bucket(Bucket=ARTIFACTS)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    template = load_template()
    uploaded = {}

    def upload(body: bytes, suffix: str) -> str:
        key = f"{prefix}/{hashlib.sha256(body).hexdigest()}{suffix}"
        if key not in uploaded:
            s3.put_object(Bucket=ARTIFACTS, Key=key, Body=body)
            uploaded[key] = True
        return f"s3://{ARTIFACTS}/{key}"

    for name, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        if resource["Type"] == "AWS::Serverless::Function" and "CodeUri" in props:
            binary = resource["Metadata"]["BuildProperties"]["Binary"]
            props["CodeUri"] = upload(bootstrap_zip(binaries / binary), ".zip")
        if resource["Type"] == "AWS::Serverless::StateMachine" and isinstance(props.get("DefinitionUri"), str):
            body = (TEMPLATE.parent / props["DefinitionUri"]).read_bytes()
            props["DefinitionUri"] = upload(body, ".json")
    body = json.dumps(template, indent=1).encode()
    key = upload(body, ".template.json").split("/", 3)[3]
    return f"{endpoint}/{ARTIFACTS}/{key}"


def failure_reasons(cfn, stack: str) -> str:
    """The stack's failed resources, each with LocalStack's reason."""
    lines = []
    try:
        for e in cfn.describe_stack_events(StackName=stack)["StackEvents"]:
            if e.get("ResourceStatus", "").endswith("FAILED"):
                lines.append(f"  {e['LogicalResourceId']} ({e.get('ResourceType')}): "
                             f"{e['ResourceStatus']}: {e.get('ResourceStatusReason')}")
    except Exception as err:  # the stack may be gone
        lines.append(f"  (no events: {err})")
    return "\n".join(lines) or "  (no failed resource named)"


def wait(cfn, stack: str, done: set[str], seconds: float = 600) -> str:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            status = cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"]
        except cfn.exceptions.ClientError as err:
            if "does not exist" in str(err) and "DELETE_COMPLETE" in done:
                return "DELETE_COMPLETE"
            raise
        if status in done:
            return status
        if status.endswith(("FAILED", "ROLLBACK_COMPLETE")) or status.endswith("ROLLBACK_IN_PROGRESS"):
            raise SystemExit(f"stack: {stack} is {status}:\n{failure_reasons(cfn, stack)}")
        time.sleep(0.5)
    raise SystemExit(f"stack: {stack} did not reach {sorted(done)} within {seconds:.0f} s")


def deploy(c: dict, template_url: str, stack: str, parameters: dict[str, str]) -> dict:
    """`sam deploy`: a change set (create or update), executed; the outputs."""
    cfn = c["cloudformation"]
    try:
        exists = cfn.describe_stacks(StackName=stack)["Stacks"][0]["StackStatus"] != "REVIEW_IN_PROGRESS"
    except cfn.exceptions.ClientError:
        exists = False
    name = f"p1-{int(time.time() * 1000)}"
    try:
        cfn.create_change_set(
            StackName=stack, ChangeSetName=name, ChangeSetType="UPDATE" if exists else "CREATE",
            TemplateURL=template_url, Capabilities=CAPABILITIES,
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()])
    except cfn.exceptions.ClientError as err:
        raise SystemExit(f"stack: CreateChangeSet refused the template: {err}")
    end = time.monotonic() + 120
    while True:
        cs = cfn.describe_change_set(StackName=stack, ChangeSetName=name)
        if cs["Status"] == "CREATE_COMPLETE":
            break
        if cs["Status"] == "FAILED":
            raise SystemExit(f"stack: change set failed: {cs.get('StatusReason')}")
        if time.monotonic() > end:
            raise SystemExit("stack: change set not ready within 120 s")
        time.sleep(0.3)
    cfn.execute_change_set(StackName=stack, ChangeSetName=name)
    wait(cfn, stack, {"UPDATE_COMPLETE"} if exists else {"CREATE_COMPLETE"})
    return outputs(c, stack)


def outputs(c: dict, stack: str) -> dict:
    desc = c["cloudformation"].describe_stacks(StackName=stack)["Stacks"][0]
    return {o["OutputKey"]: o.get("OutputValue") for o in desc.get("Outputs", [])}


def resources(c: dict, stack: str) -> list[dict]:
    pages = c["cloudformation"].get_paginator("list_stack_resources").paginate(StackName=stack)
    return [r for page in pages for r in page["StackResourceSummaries"]]


def delete(c: dict, stack: str) -> None:
    cfn = c["cloudformation"]
    cfn.delete_stack(StackName=stack)
    wait(cfn, stack, {"DELETE_COMPLETE"})


def ensure_secret_key(c: dict, name: str, value: str) -> None:
    """The secret-key secret, which the stack reads and never creates."""
    sm = c["secretsmanager"]
    try:
        sm.create_secret(Name=name, SecretString=value)
    except sm.exceptions.ResourceExistsException:
        pass


if __name__ == "__main__":
    sys.exit("stack.py is a library: scripts/local-stack.sh and test_deployed_stack.py use it")

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


# -- scripts/local-stack.sh ------------------------------------------------------
# The user's stack: the template's defaults, the stand-in as the vendor, the
# shortest poll interval so that a retraining ends within minutes.
LOCAL_STACK = "p1-key-broker"
LOCAL_SECRET_KEY_SECRET = "prediction-one/secret-key"


def local_parameters() -> dict[str, str]:
    return {"ApiBaseUrl": os.environ["P1_STACK_STANDIN_URL"], "RetrainPollIntervalSeconds": "60"}


def cli(argv: list[str]) -> int:
    endpoint = os.environ["P1_STACK_LOCALSTACK_URL"]
    c = clients(endpoint)
    command, args = argv[0], argv[1:]
    if command == "up":
        # A demo secret key: the stand-in accepts any key.
        ensure_secret_key(c, LOCAL_SECRET_KEY_SECRET, "local-demo-secret-key")
        url = package(c, endpoint, Path(os.environ["P1_STACK_BINARIES"]), "local")
        start = time.monotonic()
        out = deploy(c, url, LOCAL_STACK, local_parameters())
        print(f"local-stack: {LOCAL_STACK} deployed in {time.monotonic() - start:.1f} s; outputs:")
        for k in sorted(out):
            print(f"  {k:34} {out[k]}")
        return 0
    if command == "status":
        try:
            desc = c["cloudformation"].describe_stacks(StackName=LOCAL_STACK)["Stacks"][0]
        except c["cloudformation"].exceptions.ClientError:
            print(f"local-stack: no stack {LOCAL_STACK} (scripts/local-stack.sh up)")
            return 1
        print(f"local-stack: {LOCAL_STACK} is {desc['StackStatus']}")
        for o in sorted(desc.get("Outputs", []), key=lambda o: o["OutputKey"]):
            print(f"  {o['OutputKey']:34} {o.get('OutputValue')}")
        return 0
    if command == "down":
        try:
            c["cloudformation"].describe_stacks(StackName=LOCAL_STACK)
        except c["cloudformation"].exceptions.ClientError:
            return 0
        delete(c, LOCAL_STACK)
        print(f"local-stack: {LOCAL_STACK} deleted (the bucket and the key secrets are retained, as on AWS)")
        return 0
    out = outputs(c, LOCAL_STACK)
    if command == "sweep":
        schedule = c["scheduler"].get_schedule(Name=out["SweepScheduleName"])
        print(f"local-stack: sending the sweep schedule's input {schedule['Target']['Input']}")
        answer = c["lambda"].invoke(FunctionName=schedule["Target"]["Arn"],
                                    Payload=schedule["Target"]["Input"].encode())
        print(json.dumps(json.loads(answer["Payload"].read()), indent=1))
        return 1 if "FunctionError" in answer else 0
    if command == "request":
        model = args[0] if args else "42"
        request = {"credential_type": "retrain", "model_id": model}
        c["sqs"].send_message(QueueUrl=out["RetrainQueueUrl"], MessageBody=json.dumps(request))
        print(f"local-stack: sent {json.dumps(request)} to the request queue; waiting for the key")
        return show_record(c, f"prediction-one/api-key/retrain/{model}", 60)
    if command == "upload":
        data = Path(args[0]) if args else None
        model = args[1] if len(args) > 1 else "42"
        body = data.read_bytes() if data else b"id,value\n" + b"".join(b"%d,%d\n" % (i, i * i) for i in range(100))
        name = data.name if data else "demo.csv"
        bucket, key = out["RetrainDataBucketName"], f"retrain/{model}/{name}"
        c["s3"].put_object(Bucket=bucket, Key=key, Body=body)
        print(f"local-stack: uploaded s3://{bucket}/{key} ({len(body)} bytes); the workflow polls every 60 s")
        return follow_execution(c, out["RetrainRunnerWorkflowArn"], bucket, model)
    raise SystemExit(f"stack: unknown command {command}")


def show_record(c: dict, secret_id: str, seconds: float) -> int:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            value = c["secretsmanager"].get_secret_value(SecretId=secret_id)
            record = json.loads(value["SecretString"])
            record["api_key"] = "<redacted>"
            print(f"local-stack: {secret_id}, version {value['VersionId']}:")
            print(json.dumps(record, indent=1))
            return 0
        except c["secretsmanager"].exceptions.ResourceNotFoundException:
            time.sleep(0.5)
    print(f"local-stack: nothing stored in {secret_id} within {seconds:.0f} s")
    return 1


def follow_execution(c: dict, workflow: str, bucket: str, model: str) -> int:
    sfn = c["stepfunctions"]
    seen = {e["executionArn"] for e in sfn.list_executions(stateMachineArn=workflow)["executions"]}
    end = time.monotonic() + 30
    arn = None
    while arn is None and time.monotonic() < end:
        new = [e for e in sfn.list_executions(stateMachineArn=workflow)["executions"]
               if e["executionArn"] not in seen]
        arn = new[0]["executionArn"] if new else None
        time.sleep(0.5)
    if arn is None:
        # The same bytes again are the same object version only in an
        # unversioned bucket; the stack's bucket is versioned.
        print("local-stack: no new execution within 30 s")
        return 1
    print(f"local-stack: execution {arn.rsplit(':', 1)[1]}")
    shown = 0
    while True:
        desc = sfn.describe_execution(executionArn=arn)
        events = sfn.get_execution_history(executionArn=arn, maxResults=1000)["events"]
        for e in events[shown:]:
            kind = e["type"]
            if kind.endswith(("StateEntered", "Failed", "Succeeded", "TimedOut")):
                detail = e.get("stateEnteredEventDetails", {}).get("name", "")
                print(f"  {e['timestamp']:%H:%M:%S}  {kind} {detail}")
        shown = len(events)
        if desc["status"] != "RUNNING":
            break
        time.sleep(1)
    print(f"local-stack: {desc['status']}")
    results = c["s3"].list_objects_v2(Bucket=bucket, Prefix=f"retrain-results/{model}/")
    for o in results.get("Contents", []):
        print(f"  results: s3://{bucket}/{o['Key']} ({o['Size']} bytes)")
    return 0 if desc["status"] == "SUCCEEDED" else 1


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: stack.py up|status|down|sweep|request [MODEL]|upload [FILE [MODEL]]"
                 " (scripts/local-stack.sh runs it)")
    sys.exit(cli(sys.argv[1:]))

#!/usr/bin/env python3
"""The retraining workflow, run locally end to end (scripts/local-run.sh --retrain).

moto plays S3, EventBridge, SQS, Step Functions and Secrets Manager, the
vendor stand-in plays Prediction One, and the retrain runner runs under
`cargo lambda watch` (started by local-run.sh on PORT). This script:

  1. creates the bucket with EventBridge notifications on, a rule with the
     template's pattern that catches S3's `Object Created` events into a
     queue, the runner's queue, and the state machine from
     infra/retrain-runner.asl.json (poll every second, 60 s limit);
  2. uploads the data to s3://p1-retrain-data/retrain/42/<file> and takes
     the event S3 sent;
  3. starts an execution with that event as its input (what the template's
     rule does on AWS);
  4. plays Lambda's SQS event source mapping: every message the state
     machine puts on the runner's queue is handed to the runner with
     `cargo lambda invoke p1-retrain`, printing each step, until the
     execution ends;
  5. prints the execution's output, the results object and the stored key
     record (api_key redacted).

    python scripts/local_workflow.py PORT DATA_FILE [--switch-model]
    python scripts/local_workflow.py --sample PATH     (writes a sample CSV)

Needs the environment of .local/env (AWS_ENDPOINT_URL, P1_STANDIN_URL).
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

import boto3
from botocore.config import Config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUCKET = "p1-retrain-data"
MODEL = "42"


def say(text):
    print(text, flush=True)


def standin(path, body):
    request = urllib.request.Request(
        os.environ["P1_STANDIN_URL"] + path, data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as r:
        return json.load(r)


def definition(queue_url, poll_queue_url):
    text = open(os.path.join(ROOT, "infra", "retrain-runner.asl.json")).read()
    for name, value in {"Partition": "aws", "RunnerQueueUrl": queue_url,
                        "RunnerPollQueueUrl": poll_queue_url,
                        "PollIntervalSeconds": "1", "TimeLimitSeconds": "60",
                        "TaskTimeoutSeconds": "300", "TaskHeartbeatSeconds": "120",
                        "ResultsPrefix": "retrain-results/", "SwitchModel": "false"}.items():
        text = text.replace("${%s}" % name, value)
    return text


def invoke(port, event):
    """One `cargo lambda invoke p1-retrain`; its parsed answer."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(event, f)
    try:
        out = subprocess.run(
            ["cargo", "lambda", "invoke", "p1-retrain", "-A", "127.0.0.1", "-P", str(port),
             "--data-file", f.name],
            cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        os.unlink(f.name)
    if out.returncode != 0:
        sys.exit(f"local-run: cargo lambda invoke failed:\n{out.stderr}")
    return json.loads(out.stdout)


def sample(path):
    """A small made-up CSV of training data."""
    import random
    rng = random.Random(42)
    rows = ["age,income,visits,churned"]
    rows += [f"{rng.randint(18, 90)},{rng.randint(1, 200) * 1000},{rng.randint(0, 60)},"
             f"{rng.randint(0, 1)}" for _ in range(500)]
    with open(path, "w") as f:
        f.write("\n".join(rows) + "\n")


def main():
    if sys.argv[1:2] == ["--sample"]:
        sample(sys.argv[2])
        return 0
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("data")
    parser.add_argument("--switch-model", action="store_true")
    args = parser.parse_args()

    s3 = boto3.client("s3", config=Config(s3={"addressing_style": "path"}))
    sqs = boto3.client("sqs")
    events = boto3.client("events")
    sfn = boto3.client("stepfunctions")
    sm = boto3.client("secretsmanager")

    # The vendor: the job finishes after two polls.
    standin("/_standin/retrain", {"model_id": MODEL, "running_polls": 2, "results_size": 4096})

    s3.create_bucket(Bucket=BUCKET)
    s3.put_bucket_notification_configuration(
        Bucket=BUCKET, NotificationConfiguration={"EventBridgeConfiguration": {}})
    captured = sqs.create_queue(QueueName="p1-s3-events")["QueueUrl"]
    captured_arn = sqs.get_queue_attributes(
        QueueUrl=captured, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="p1-retrain-data", EventPattern=json.dumps({
        "source": ["aws.s3"], "detail-type": ["Object Created"],
        "detail": {"bucket": {"name": [BUCKET]}, "object": {"key": [{"prefix": "retrain/"}]}}}))
    events.put_targets(Rule="p1-retrain-data", Targets=[{"Id": "capture", "Arn": captured_arn}])
    runner_queue = sqs.create_queue(QueueName="p1-retrain-runner")["QueueUrl"]
    poll_queue = sqs.create_queue(QueueName="p1-retrain-polls")["QueueUrl"]
    machine = sfn.create_state_machine(
        name="p1-retraining", definition=definition(runner_queue, poll_queue),
        roleArn="arn:aws:iam::123456789012:role/p1-retraining")["stateMachineArn"]

    name = os.path.basename(args.data)
    key = f"retrain/{MODEL}/{name}"
    body = open(args.data, "rb").read()
    say(f"== aws s3 cp {args.data} s3://{BUCKET}/{key}   ({len(body)} bytes, "
        f"sha256 {hashlib.sha256(body).hexdigest()[:16]}...)")
    s3.put_object(Bucket=BUCKET, Key=key, Body=body)
    event = None
    for _ in range(50):
        for m in sqs.receive_message(QueueUrl=captured, MaxNumberOfMessages=10).get("Messages", []):
            candidate = json.loads(m["Body"])
            if candidate.get("detail", {}).get("object", {}).get("key") == key:
                event = candidate
        if event:
            break
        time.sleep(0.1)
    if event is None:
        sys.exit("local-run: S3 sent no Object Created event")
    say(f"== EventBridge: {event['detail-type']} s3://{event['detail']['bucket']['name']}/"
        f"{event['detail']['object']['key']} -> state machine p1-retraining")
    if args.switch_model:
        event["switch_model"] = True
    execution = sfn.start_execution(stateMachineArn=machine, input=json.dumps(event))["executionArn"]

    step = 0
    deadline = time.monotonic() + 180
    while True:
        described = sfn.describe_execution(executionArn=execution)
        if described["status"] != "RUNNING":
            break
        if time.monotonic() > deadline:
            sys.exit("local-run: the execution did not end within 180 s")
        messages = []
        for queue in (runner_queue, poll_queue):
            messages = [(queue, m) for m in sqs.receive_message(
                QueueUrl=queue, MaxNumberOfMessages=1).get("Messages", [])]
            if messages:
                break
        if not messages:
            time.sleep(0.3)
        for queue, m in messages:
            step += 1
            request = json.loads(m["Body"])
            shown = {k: v for k, v in request.items() if k != "task_token"}
            say(f"-- step {step}: the state machine asks p1-retrain: {json.dumps(shown)}")
            answer = invoke(args.port, {"Records": [{
                "messageId": m["MessageId"], "eventSource": "aws:sqs", "body": m["Body"]}]})
            if answer.get("batchItemFailures"):
                say(f"   the runner failed the record (SQS would deliver it again): {answer}")
                continue
            sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
            history = sfn.get_execution_history(executionArn=execution, maxResults=1000)["events"]
            reports = [e for e in history if e["type"] in ("TaskSucceeded", "TaskFailed")]
            reported = max(reports, key=lambda e: e["id"]) if reports else None
            if reported and reported["type"] == "TaskSucceeded":
                say(f"   reported to Step Functions: {reported['taskSucceededEventDetails']['output']}")
            elif reported:
                details = reported["taskFailedEventDetails"]
                say(f"   reported to Step Functions: failed {details.get('error')}: {details.get('cause')}")

    say(f"== execution {described['status']}")
    if described["status"] == "SUCCEEDED":
        output = json.loads(described["output"])
        say(json.dumps(output, indent=2))
        results = output["results"]
        head = s3.head_object(Bucket=results["bucket"], Key=results["key"])
        say(f"== results in S3: s3://{results['bucket']}/{results['key']} "
            f"({head['ContentLength']} bytes, {head.get('ContentType')})")
    else:
        say(f"{described.get('error')}: {described.get('cause')}")
    say("== stored in Secrets Manager (api_key redacted)")
    for page in sm.get_paginator("list_secrets").paginate():
        for s in sorted(page["SecretList"], key=lambda s: s["Name"]):
            if not s["Name"].startswith("prediction-one/api-key/"):
                continue
            v = sm.get_secret_value(SecretId=s["ARN"], VersionStage="AWSCURRENT")
            record = json.loads(v["SecretString"])
            record["api_key"] = "<redacted %d chars>" % len(record.get("api_key", ""))
            say(json.dumps({"secret": s["Name"], "version_id": v["VersionId"], "record": record},
                           indent=2))
    return 0 if described["status"] == "SUCCEEDED" else 1


if __name__ == "__main__":
    sys.exit(main())

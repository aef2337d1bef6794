#!/usr/bin/env python3
"""The whole stack, deployed and run as a whole (SPEC section 13): the
template as shipped, packaged as `sam package` does, created, run, updated
and deleted by LocalStack's CloudFormation, with the real `p1-key-broker`
and `p1-retrain` behind the deployed functions (the executor plugin beside
this file) and the vendor stand-in behind TLS, reached through the stack's
own `ApiBaseUrl`.

    test_deployed_stack.py          (run by scripts/localstack/run_tests.sh)

Environment: P1_STACK_LOCALSTACK_URL (a LocalStack started with
`scripts/localstack.sh start stack`), P1_STACK_STANDIN_URL (the TLS
stand-in), P1_STACK_CA (its CA), P1_STACK_BINARIES (the folder holding
both binaries), P1_STACK_FUNCTION_LOGS (the plugin's log folder).

Each step is asserted and timed; the first that fails stops the test (the
stack is still deleted). What LocalStack does not run (IAM, the dashboard,
schedules firing, lifecycle rules, log retention) is checked elsewhere:
docs/deploying.md, "On LocalStack".
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import ssl
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import stack as stk

STACK = "p1-key-broker"
MODEL = "42"
ENDPOINT = os.environ["P1_STACK_LOCALSTACK_URL"]
STANDIN = os.environ["P1_STACK_STANDIN_URL"]
CA = os.environ["P1_STACK_CA"]
BINARIES = Path(os.environ["P1_STACK_BINARIES"])
FUNCTION_LOGS = Path(os.environ["P1_STACK_FUNCTION_LOGS"])
SECRET_KEY_SECRET = "prediction-one/secret-key"
# A sentinel: no line of any function's output may ever hold it.
SECRET_KEY = "p1-stack-sentinel-" + secrets.token_hex(12)
PARAMETERS = {
    "ApiBaseUrl": STANDIN,
    # The shortest poll the template allows: the retraining step waits one.
    "RetrainPollIntervalSeconds": "60",
}


class Failed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failed(message)


def until(what, probe, seconds):
    """Polls `probe` until it returns something true; fails naming `what`."""
    end = time.monotonic() + seconds
    last = None
    while time.monotonic() < end:
        last = probe()
        if last:
            return last
        time.sleep(0.5)
    raise Failed(f"{what}: not within {seconds} s (last: {last!r})")


def standin(path, body=None):
    ctx = ssl.create_default_context(cafile=CA)
    req = urllib.request.Request(
        STANDIN + path, data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}, method="GET" if body is None else "POST")
    with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
        return json.loads(r.read())


class Deployed:
    def __init__(self):
        self.c = stk.clients(ENDPOINT)
        self.out = {}
        self.template_url = None
        self.resources = []
        self.event = None

    # -- helpers ----------------------------------------------------------------
    def record(self, secret_id):
        """The stored key record (its api_key checked, never printed)."""
        try:
            value = self.c["secretsmanager"].get_secret_value(SecretId=secret_id)
        except self.c["secretsmanager"].exceptions.ResourceNotFoundException:
            return None
        record = json.loads(value["SecretString"])
        return record if record.get("api_key") else None

    def queue_empty(self, url):
        attrs = self.c["sqs"].get_queue_attributes(
            QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                          "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return all(v == "0" for v in attrs.values())

    def executions(self):
        return self.c["stepfunctions"].list_executions(
            stateMachineArn=self.out["RetrainRunnerWorkflowArn"])["executions"]

    def jobs(self):
        return standin(f"/_standin/jobs?model_id={MODEL}")

    # -- the steps --------------------------------------------------------------
    def create(self):
        stk.ensure_secret_key(self.c, SECRET_KEY_SECRET, SECRET_KEY)
        self.template_url = stk.package(self.c, ENDPOINT, BINARIES, "test")
        self.out = stk.deploy(self.c, self.template_url, STACK, PARAMETERS)
        status = self.c["cloudformation"].describe_stacks(StackName=STACK)["Stacks"][0]["StackStatus"]
        check(status == "CREATE_COMPLETE", f"stack is {status}")

    def outputs_resolve(self):
        c, out = self.c, self.out
        expected = set(stk.load_template()["Outputs"])
        check(set(out) == expected, f"outputs {sorted(set(out) ^ expected)} missing or extra")
        empty = [k for k, v in out.items() if not v]
        check(not empty, f"outputs without a value: {empty}")
        # Each output names a resource that exists, of the kind it says.
        for key, value in out.items():
            if key == "DashboardName":
                # LocalStack fakes AWS::CloudWatch::Dashboard (its Ref is
                # "unknown"); the body is checked against CloudWatch's rules
                # in infra/tests (test_dashboard_*).
                continue
            if key.endswith("QueueUrl"):
                c["sqs"].get_queue_attributes(QueueUrl=value, AttributeNames=["QueueArn"])
            elif key.endswith("QueueArn"):
                name = value.rsplit(":", 1)[1]
                check(c["sqs"].get_queue_url(QueueName=name)["QueueUrl"], key)
            elif key.endswith(("FunctionArn", "FunctionName")):
                c["lambda"].get_function(FunctionName=value)
                state = c["lambda"].get_function_configuration(FunctionName=value)["State"]
                check(state == "Active", f"{key} {value} is {state}")
            elif key.endswith("RoleArn"):
                c["iam"].get_role(RoleName=value.rsplit("/", 1)[1])
            elif key.endswith("LogGroupName"):
                groups = c["logs"].describe_log_groups(logGroupNamePrefix=value)["logGroups"]
                check(any(g["logGroupName"] == value for g in groups), f"{key} {value} not found")
            elif key.endswith(("WorkflowArn", "RouterArn")):
                c["stepfunctions"].describe_state_machine(stateMachineArn=value)
            elif key == "RetrainDataBucketName":
                c["s3"].head_bucket(Bucket=value)
            elif key == "SweepScheduleName":
                c["scheduler"].get_schedule(Name=value)
            else:
                raise Failed(f"output {key} is not checked by this test: add it")
        self.resources = stk.resources(c, STACK)

    def sweep(self):
        # The schedule's own input, as the deployed schedule holds it
        # (LocalStack never fires schedules: send it as Scheduler would).
        schedule = self.c["scheduler"].get_schedule(Name=self.out["SweepScheduleName"])
        target = schedule["Target"]
        check(target["Arn"] == self.out["KeyBrokerFunctionArn"], f"schedule targets {target['Arn']}")
        check(self.record("prediction-one/api-key/train") is None, "a train key before the first sweep")
        answer = self.c["lambda"].invoke(FunctionName=target["Arn"], Payload=target["Input"].encode())
        report = json.loads(answer["Payload"].read())
        check("FunctionError" not in answer, f"the sweep failed: {report}")
        check(report.get("sweep") == "due" and report.get("due") == 1, f"sweep report {report}")
        # With the queue hand-off (the template's default) the deployed
        # queue's mapping renews it: the key arrives through the queue.
        record = until("the train key stored by the sweep",
                       lambda: self.record("prediction-one/api-key/train"), 60)
        check(record["credential_type"] == "train", f"stored {record['credential_type']}")
        until("the request queue drained", lambda: self.queue_empty(self.out["RetrainQueueUrl"]), 30)

    def request_through_queue(self):
        sqs = self.c["sqs"]
        sqs.send_message(QueueUrl=self.out["RetrainQueueUrl"],
                         MessageBody=json.dumps({"credential_type": "retrain", "model_id": MODEL}))
        record = until(f"the retrain key of model {MODEL}",
                       lambda: self.record(f"prediction-one/api-key/retrain/{MODEL}"), 60)
        check(record["credential_type"] == "retrain" and record["model_id"] == MODEL, f"stored {record}")
        until("the request queue drained", lambda: self.queue_empty(self.out["RetrainQueueUrl"]), 30)
        check(self.queue_empty(self.out["RetrainDeadLetterQueueUrl"]), "a request in the dead-letter queue")

    def upload_retrains_once(self):
        # The model's jobs finish at their first status call: one poll.
        standin("/_standin/retrain", {"model_id": MODEL, "running_polls": 0})
        data = b"id,value\n" + b"".join(b"%d,%d\n" % (i, i * i) for i in range(2000))
        bucket = self.out["RetrainDataBucketName"]
        key = f"retrain/{MODEL}/sales 2026+12.csv"
        self.c["s3"].put_object(Bucket=bucket, Key=key, Body=data)
        execution = until("an execution of the retraining workflow", self.executions, 30)[0]
        self.event = json.loads(self.c["stepfunctions"].describe_execution(
            executionArn=execution["executionArn"])["input"])
        done = until("the retraining execution to end", lambda: (
            lambda d: d if d["status"] != "RUNNING" else None)(
                self.c["stepfunctions"].describe_execution(executionArn=execution["executionArn"])), 150)
        check(done["status"] == "SUCCEEDED", f"execution {done['status']}: {done.get('error')} {done.get('cause')}")
        check(len(self.executions()) == 1, f"{len(self.executions())} executions for one upload")
        jobs = self.jobs()
        check(len(jobs) == 1, f"{len(jobs)} vendor jobs for one upload")
        upload = jobs[0]["upload"]
        check(upload and upload["bytes"] == len(data) and upload["sha256"] == hashlib.sha256(data).hexdigest(),
              f"the job's upload is not the file's bytes: {upload}")
        check(jobs[0]["filename"] == "sales 2026+12.csv", f"file name {jobs[0]['filename']!r}")
        output = json.loads(done["output"])
        results = self.c["s3"].list_objects_v2(Bucket=bucket, Prefix=f"retrain-results/{MODEL}/")
        check(results.get("KeyCount", 0) >= 1, f"no results saved (output {output})")

    def duplicate_event(self):
        detail = self.event["detail"]
        # Delivered again by EventBridge (the rule, the router) ...
        answer = self.c["events"].put_events(Entries=[{
            "Source": self.event["source"], "DetailType": self.event["detail-type"],
            "Resources": self.event.get("resources", []), "Detail": json.dumps(detail)}])
        check(answer["FailedEntryCount"] == 0, f"PutEvents: {answer}")
        # ... and straight to the router, whose answer says what it did.
        routed = self.c["stepfunctions"].start_sync_execution(
            stateMachineArn=self.out["RetrainRouterArn"], input=json.dumps(self.event))
        check(routed["status"] == "SUCCEEDED", f"router: {routed.get('error')} {routed.get('cause')}")
        check("duplicate" in json.loads(routed["output"]), f"router started again: {routed['output']}")
        time.sleep(5)  # time for the rule's delivery to start anything it would
        check(len(self.executions()) == 1, f"{len(self.executions())} executions after a duplicate")
        check(len(self.jobs()) == 1, f"{len(self.jobs())} vendor jobs after a duplicate")
        check(self.queue_empty(self.out["RetrainDataRuleDeadLetterQueueUrl"]), "the duplicate went to the DLQ")

    def update(self):
        # One parameter, three effects: the runner's timeout, its queue's
        # visibility and the workflow's task limits (RunnerTimings).
        before = self.out
        self.out = stk.deploy(self.c, self.template_url, STACK,
                              dict(PARAMETERS, RetrainRunnerTimeoutSeconds="300"))
        check(self.out == before, "an update changed the outputs")
        fn = self.c["lambda"].get_function_configuration(FunctionName=self.out["RetrainRunnerFunctionArn"])
        check(fn["Timeout"] == 300, f"runner timeout {fn['Timeout']}")
        for q in ("RetrainRunnerQueueUrl", "RetrainRunnerPollQueueUrl"):
            vis = self.c["sqs"].get_queue_attributes(
                QueueUrl=self.out[q], AttributeNames=["VisibilityTimeout"])["Attributes"]["VisibilityTimeout"]
            check(vis == "330", f"{q} visibility {vis}")
        definition = json.loads(self.c["stepfunctions"].describe_state_machine(
            stateMachineArn=self.out["RetrainRunnerWorkflowArn"])["definition"])
        limits = set(values_of(definition, "task_timeout_seconds.$"))
        check(limits == {"States.StringToJson('4650')"}, f"task time limits {limits}")
        # The updated function still runs.
        answer = self.c["lambda"].invoke(FunctionName=self.out["KeyBrokerFunctionArn"],
                                         Payload=b'{"sweep": "due", "dry_run": true}')
        report = json.loads(answer["Payload"].read())
        check("FunctionError" not in answer and report.get("due") == 0, f"after the update: {report}")

    def delete(self):
        c = self.c
        stk.delete(c, STACK)
        left = []
        for r in self.resources:
            kind, physical = r["ResourceType"], r.get("PhysicalResourceId")
            if exists(c, kind, physical, self.out):
                left.append(f"{r['LogicalResourceId']} ({kind})")
        # What the README ("Tear down") says is retained: the bucket.
        check(left == ["RetrainBucket (AWS::S3::Bucket)"], f"left after delete: {left}")

    def no_key_in_output(self):
        keys = [SECRET_KEY]
        for sid in ("prediction-one/api-key/train", f"prediction-one/api-key/retrain/{MODEL}"):
            record = self.record(sid)
            check(record, f"{sid} is gone")
            keys.append(record["api_key"])
        lines = 0
        for log in FUNCTION_LOGS.glob("*.log"):
            for n, line in enumerate(log.read_text(errors="replace").splitlines(), 1):
                lines += 1
                for k in keys:
                    check(k not in line, f"{log.name}:{n} holds a key")
        check(lines > 20, f"only {lines} lines of function output to search")


def values_of(tree, name):
    """Every value under key `name`, anywhere in a JSON tree."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            if k == name:
                yield v
            yield from values_of(v, name)
    elif isinstance(tree, list):
        for v in tree:
            yield from values_of(v, name)


def exists(c, kind, physical, out) -> bool:
    """Whether a resource the stack had is still there."""
    try:
        if kind == "AWS::Lambda::Function":
            c["lambda"].get_function(FunctionName=physical)
        elif kind == "AWS::SQS::Queue":
            c["sqs"].get_queue_attributes(QueueUrl=physical)
        elif kind == "AWS::StepFunctions::StateMachine":
            c["stepfunctions"].describe_state_machine(stateMachineArn=physical)
        elif kind == "AWS::IAM::Role":
            c["iam"].get_role(RoleName=physical)
        elif kind == "AWS::S3::Bucket":
            c["s3"].head_bucket(Bucket=physical)
        elif kind == "AWS::Logs::LogGroup":
            groups = c["logs"].describe_log_groups(logGroupNamePrefix=physical)["logGroups"]
            return any(g["logGroupName"] == physical for g in groups)
        elif kind == "AWS::Scheduler::Schedule":
            c["scheduler"].get_schedule(Name=physical)
        elif kind == "AWS::Events::Rule":
            c["events"].describe_rule(Name=physical.split("|")[-1])
        elif kind == "AWS::CloudWatch::Alarm":
            return bool(c["cloudwatch"].describe_alarms(AlarmNames=[physical])["MetricAlarms"])
        elif kind == "AWS::CloudWatch::CompositeAlarm":
            return bool(c["cloudwatch"].describe_alarms(
                AlarmNames=[physical], AlarmTypes=["CompositeAlarm"])["CompositeAlarms"])
        elif kind == "AWS::Lambda::EventSourceMapping":
            c["lambda"].get_event_source_mapping(UUID=physical)
        else:
            return False  # policies, permissions, configs: gone with their owners
        return True
    except Exception as err:  # noqa: BLE001 - any "not found" answer
        name = type(err).__name__
        if "NotFound" in name or "NoSuch" in name or "NonExistent" in name or "DoesNotExist" in name \
                or "404" in str(err) or "does not exist" in str(err).lower() or "not found" in str(err).lower():
            return False
        raise


def main() -> int:
    d = Deployed()
    steps = [
        ("create", d.create),
        ("every output resolves", d.outputs_resolve),
        ("the sweep schedule's input stores the train key", d.sweep),
        ("a request through the deployed queue is answered", d.request_through_queue),
        ("an upload gives one execution and one vendor job with its bytes", d.upload_retrains_once),
        ("the same S3 event again still gives one job", d.duplicate_event),
        ("a stack update of one parameter takes effect", d.update),
        ("delete leaves only the retained bucket", d.delete),
        ("no key in any function's output", d.no_key_in_output),
    ]
    passed = failed = 0
    total = time.monotonic()
    created = False
    for name, step in steps:
        start = time.monotonic()
        try:
            step()
            passed += 1
            created = created or step == d.create
            print(f"deployed stack: ok    {time.monotonic() - start:6.1f} s  {name}", flush=True)
        except (Failed, SystemExit, Exception) as err:  # noqa: BLE001 - report and stop
            failed += 1
            print(f"deployed stack: FAIL  {time.monotonic() - start:6.1f} s  {name}: "
                  f"{type(err).__name__}: {err}", flush=True)
            break
    if failed and created:
        try:
            stk.delete(d.c, STACK)
        except BaseException as err:  # noqa: BLE001
            print(f"deployed stack: could not delete after the failure: {err}", flush=True)
    print(f"deployed stack: {time.monotonic() - total:.1f} s in all")
    print(f"deployed stack: {passed} passed, {failed} failed, {len(steps) - passed - failed} not run")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

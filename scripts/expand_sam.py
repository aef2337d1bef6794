#!/usr/bin/env python3
"""Expands a SAM template to plain CloudFormation JSON, offline.

    expand_sam.py infra/template.yaml OUT.json [--region us-east-1]

cfn-lint validates `AWS::Serverless::*` resources against SAM's schema only,
and checkov sees them as written: neither looks at the CloudFormation that
CloudFormation actually deploys. This runs the same translator that the
`AWS::Serverless-2016-10-31` transform runs (aws-sam-translator), with no
AWS call:

- local artifacts are replaced the way `sam package` would replace them: a
  `CodeUri` path becomes a placeholder S3 object, and a state machine's
  `DefinitionUri` file is read and inlined as `Definition` (so that cfn-lint
  can validate the state machine definition too);
- the region comes from `--region` (pseudo parameters are resolved the way
  CloudFormation would in that region), never from a profile;
- managed policy names are resolved from the map bundled with the
  translator; a name missing from it is an error here instead of an IAM
  ListPolicies call.

Two changes after translation, neither of which changes what deploys:

- a state machine's `DefinitionString`, which the translator writes as an
  `Fn::Join` of plain lines, is parsed back into the equivalent `Definition`
  object, the form in which cfn-lint validates it against the States
  Language schema (it skips a joined string); and its
  `DefinitionSubstitutions` that are pseudo parameters known offline
  (`AWS::Partition`, `AWS::Region`) are substituted into it, as
  CloudFormation substitutes them in that region (cfn-lint checks a
  service-integration ARN such as `arn:${Partition}:states:::lambda:invoke`
  against its ARN pattern only once substituted);
- with `--all-options`, every `Fn::If` is replaced by its true branch: the
  stack with every optional feature on, so the widest permissions it can
  grant. checkov does not evaluate `Fn::If` inside policies and would
  otherwise leave the conditional statements unchecked.

Resource `Metadata` (checkov skips, build metadata) is passed through.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

import boto3
from cfnlint.decode import decode
from samtranslator.internal.managed_policies import get_bundled_managed_policy_map
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.parser.parser import Parser
from samtranslator.translator.arn_generator import ArnGenerator
from samtranslator.translator.translator import Translator

# What `sam package` would upload the function's build to.
PLACEHOLDER_CODE_URI = "s3://offline-check-artifacts/p1-key-broker/function.zip"


def load_template(path: Path) -> dict:
    template, matches = decode(str(path))
    if matches or template is None:
        for m in matches:
            print(f"{path}: {m}", file=sys.stderr)
        raise SystemExit(f"expand_sam: cannot parse {path}")
    # cfn-lint's nodes carry line marks; plain dicts and lists are enough here.
    return json.loads(json.dumps(template))


def package_locally(template: dict, base: Path) -> dict:
    """Does what `sam package` does to local artifacts, without uploading."""
    out = copy.deepcopy(template)
    for name, resource in out.get("Resources", {}).items():
        kind = resource.get("Type")
        props = resource.get("Properties", {})
        if kind == "AWS::Serverless::Function" and isinstance(props.get("CodeUri"), str):
            code = (base / props["CodeUri"]).resolve()
            if not code.exists():
                raise SystemExit(f"expand_sam: {name}.CodeUri {code} does not exist")
            props["CodeUri"] = PLACEHOLDER_CODE_URI
        if kind == "AWS::Serverless::StateMachine" and isinstance(props.get("DefinitionUri"), str):
            definition = base / props.pop("DefinitionUri")
            try:
                props["Definition"] = json.loads(definition.read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise SystemExit(f"expand_sam: {name}.DefinitionUri {definition}: {e}") from e
    return out


def expand(template: dict, region: str) -> dict:
    session = boto3.session.Session(
        region_name=region,
        # Never looked up: nothing here calls AWS. Set so that no profile or
        # instance metadata is consulted while the session is built.
        aws_access_key_id="offline",
        aws_secret_access_key="offline",
    )
    # The translator otherwise asks boto3 for the region of ARNs it builds.
    ArnGenerator.BOTO_SESSION_REGION_NAME = region
    partition = ArnGenerator.get_partition_name(region)
    bundled = get_bundled_managed_policy_map(partition) or {}

    def managed_policy_map() -> dict[str, str]:
        return bundled

    translator = Translator(managed_policy_map=None, sam_parser=Parser(), boto_session=session)
    return translator.translate(
        template,
        parameter_values={},
        passthrough_metadata=True,
        get_managed_policy_map=managed_policy_map,
    )


def inline_state_machine_definitions(template: dict) -> dict:
    """`DefinitionString: {Fn::Join: [sep, [str, ...]]}` -> `Definition: {...}`."""
    for resource in template.get("Resources", {}).values():
        if resource.get("Type") != "AWS::StepFunctions::StateMachine":
            continue
        props = resource.get("Properties", {})
        joined = props.get("DefinitionString")
        if not (isinstance(joined, dict) and list(joined) == ["Fn::Join"]):
            continue
        sep, parts = joined["Fn::Join"]
        if isinstance(sep, str) and all(isinstance(p, str) for p in parts):
            del props["DefinitionString"]
            props["Definition"] = json.loads(sep.join(parts))
    return template


def substitute_pseudo_parameters(template: dict, region: str) -> dict:
    """Substitutes a state machine's `DefinitionSubstitutions` whose value is
    `Ref: AWS::Partition` or `Ref: AWS::Region` into its `Definition`, as
    CloudFormation would in `region`, and drops them from the substitutions."""
    known = {"AWS::Partition": ArnGenerator.get_partition_name(region), "AWS::Region": region}

    def replace(node, old: str, new: str):
        if isinstance(node, str):
            return node.replace(old, new)
        if isinstance(node, list):
            return [replace(v, old, new) for v in node]
        if isinstance(node, dict):
            return {replace(k, old, new): replace(v, old, new) for k, v in node.items()}
        return node

    for resource in template.get("Resources", {}).values():
        if resource.get("Type") != "AWS::StepFunctions::StateMachine":
            continue
        props = resource.get("Properties", {})
        subs = props.get("DefinitionSubstitutions")
        if not isinstance(props.get("Definition"), dict) or not isinstance(subs, dict):
            continue
        for key, value in list(subs.items()):
            if isinstance(value, dict) and list(value) == ["Ref"] and value["Ref"] in known:
                props["Definition"] = replace(props["Definition"], "${" + key + "}", known[value["Ref"]])
                del subs[key]
        if not subs:
            del props["DefinitionSubstitutions"]
    return template


NO_VALUE = {"Ref": "AWS::NoValue"}


def enable_all_options(node):
    """Resolves every `Fn::If` to its true branch and drops `AWS::NoValue`."""
    if isinstance(node, dict):
        if list(node) == ["Fn::If"]:
            return enable_all_options(node["Fn::If"][1])
        out = {}
        for key, value in node.items():
            value = enable_all_options(value)
            if value != NO_VALUE:
                out[key] = value
        return out
    if isinstance(node, list):
        return [v for v in (enable_all_options(v) for v in node) if v != NO_VALUE]
    return node


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("template", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument(
        "--all-options",
        action="store_true",
        help="resolve every Fn::If to its true branch (every optional feature on)",
    )
    args = parser.parse_args()

    # No credentials, profiles or metadata endpoints: fail instead of calling out.
    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    template = package_locally(load_template(args.template), args.template.parent)
    try:
        expanded = expand(template, args.region)
    except InvalidDocumentException as e:
        for cause in e.causes:
            print(f"{args.template}: {cause.message}", file=sys.stderr)
        return 1
    expanded = substitute_pseudo_parameters(inline_state_machine_definitions(expanded), args.region)
    if args.all_options:
        expanded = enable_all_options(expanded)
    args.output.write_text(json.dumps(expanded, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    print(f"expand_sam: {args.template} -> {args.output} ({len(expanded.get('Resources', {}))} resources)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

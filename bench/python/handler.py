"""The Python baseline of the cold-start benchmark (scripts/bench.sh).

The same job as p1-key-broker's direct request, written the way a user
would without it: boto3 and requests under awslambdaric, clients made at
import (the usual Lambda advice), the secret key kept for 5 minutes like
the function's default cache. One request:

  1. unless "force": read the target secret's AWSCURRENT record and answer
     "fresh" when it is for the same credential and expires_at is later
     than now + P1_RENEW_BEFORE_SECONDS;
  2. else read the secret key (bare, or a JSON object's "secret_key"),
     GET {P1_API_BASE_URL}/v1/external/api-key?credential_type=... with the
     x-api-key header, and store the record of docs/triggers.md "What is stored"
     with PutSecretValue (CreateSecret when the target is missing).

Same environment as the function (P1_SECRET_KEY_SECRET_ID, P1_API_BASE_URL,
P1_TRAIN_SECRET_ID, P1_DEPLOY_SECRET_ID, P1_RETRAIN_SECRET_PREFIX,
P1_RENEW_BEFORE_SECONDS, P1_HTTP_TIMEOUT_MS). Run it as Lambda's Python
runtime would:

  cd bench/python && AWS_LAMBDA_RUNTIME_API=host:port python -m awslambdaric handler.handler
"""
import json
import os
import time
from datetime import datetime, timedelta, timezone

import boto3
import requests

secretsmanager = boto3.client("secretsmanager")
http = requests.Session()

API_BASE_URL = os.environ.get("P1_API_BASE_URL", "https://developer-api.predictionone.sony.biz").rstrip("/")
RENEW_BEFORE = timedelta(seconds=int(os.environ.get("P1_RENEW_BEFORE_SECONDS", "86400")))
HTTP_TIMEOUT = int(os.environ.get("P1_HTTP_TIMEOUT_MS", "10000")) / 1000
SECRET_KEY_TTL = 300

_secret_key = {"value": None, "read_at": 0.0}


def target_secret(credential_type, model_id):
    if credential_type == "train":
        return os.environ.get("P1_TRAIN_SECRET_ID", "prediction-one/api-key/train")
    if credential_type == "deploy":
        return os.environ.get("P1_DEPLOY_SECRET_ID", "prediction-one/api-key/deploy")
    return os.environ.get("P1_RETRAIN_SECRET_PREFIX", "prediction-one/api-key/retrain/") + model_id


def secret_key():
    if _secret_key["value"] is None or time.monotonic() - _secret_key["read_at"] > SECRET_KEY_TTL:
        value = secretsmanager.get_secret_value(SecretId=os.environ["P1_SECRET_KEY_SECRET_ID"])["SecretString"]
        if value.lstrip().startswith("{"):
            value = json.loads(value)["secret_key"]
        _secret_key.update(value=value.strip(), read_at=time.monotonic())
    return _secret_key["value"]


def expires_at(end_date):
    """The vendor's end_date as RFC 3339 UTC, or None."""
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y/%m/%d %H:%M:%S", "%Y-%m-%d"):
        try:
            return datetime.strptime(end_date, fmt).replace(tzinfo=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        except ValueError:
            pass
    try:
        when = datetime.fromisoformat(end_date.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def result(status, secret, record):
    return {"status": status, "credential_type": record["credential_type"], "model_id": record["model_id"],
            "secret_arn": secret["ARN"], "version_id": secret["VersionId"],
            "end_date": record["end_date"], "expires_at": record["expires_at"]}


def handler(event, context):
    credential_type = event.get("credential_type", "train")
    model_id = event.get("model_id")
    model_id = None if model_id is None else str(model_id)
    target = event.get("target_secret_id") or target_secret(credential_type, model_id)
    now = datetime.now(timezone.utc)

    if not event.get("force"):
        try:
            current = secretsmanager.get_secret_value(SecretId=target)
        except secretsmanager.exceptions.ResourceNotFoundException:
            current = None
        if current is not None:
            try:
                record = json.loads(current["SecretString"])
                expiry = datetime.fromisoformat(record["expires_at"].replace("Z", "+00:00"))
                if (record.get("credential_type") == credential_type and record.get("model_id") == model_id
                        and expiry > now + RENEW_BEFORE):
                    return result("fresh", current, record)
            except (KeyError, TypeError, AttributeError, ValueError):
                pass  # not a usable record: issue a new key

    params = {"credential_type": credential_type}
    if model_id is not None:
        params["model_id"] = model_id
    response = http.get(f"{API_BASE_URL}/v1/external/api-key", params=params,
                        headers={"x-api-key": secret_key()}, timeout=HTTP_TIMEOUT)
    response.raise_for_status()
    issued = response.json()
    record = {"api_key": issued["api_key"], "end_date": issued["end_date"],
              "expires_at": expires_at(issued["end_date"]), "credential_type": credential_type,
              "model_id": model_id, "issued_at": now.strftime("%Y-%m-%dT%H:%M:%SZ")}
    value = json.dumps(record)
    try:
        stored = secretsmanager.put_secret_value(SecretId=target, SecretString=value)
    except secretsmanager.exceptions.ResourceNotFoundException:
        stored = secretsmanager.create_secret(Name=target, SecretString=value)
    return result("issued", stored, record)

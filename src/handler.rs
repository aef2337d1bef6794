//! The Lambda entry point: recognise the trigger, call the broker, shape the
//! result, and hand it to Step Functions when a task token came with it.
//! Nothing here decides about keys; that is the broker's job.

use std::collections::HashMap;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse};
use serde_json::{Value, json};

use crate::broker::{Broker, Served};
use crate::error::Error;
use crate::handoff::Handoff;
use crate::metrics::{self, Unit};
use crate::request::{CredentialType, KeyRequest, Status};
use crate::secrets::SecretStore;
use crate::sensitive::TaskToken;
use crate::trigger::{self, SqsRecord, Trigger};
use crate::vendor::Vendor;
use crate::{expiry, rotation};

/// Serves one invocation, whatever triggered it.
pub async fn handle<V: Vendor, S: SecretStore, H: Handoff>(
    broker: &Broker<V, S, H>,
    payload: Value,
) -> Result<Value, Error> {
    let trigger = Trigger::from_payload(payload).inspect_err(|e| log_failure(None, e))?;
    match trigger {
        Trigger::Direct(request) | Trigger::EventBridge(request) => {
            serve_one(broker, &request).await
        }
        Trigger::Sqs(batch) => {
            Ok(serde_json::to_value(serve_batch(broker, batch).await).unwrap_or(Value::Null))
        }
        Trigger::Rotation(event) => rotation::rotate(broker, &event)
            .await
            .map(|()| Value::Null)
            .inspect_err(|e| log_failure(None, e)),
    }
}

async fn serve_one<V: Vendor, S: SecretStore, H: Handoff>(
    broker: &Broker<V, S, H>,
    request: &Value,
) -> Result<Value, Error> {
    match KeyRequest::from_value(request, &broker.config) {
        Ok(request) => {
            let credential_type = request.credential.credential_type;
            let outcome = broker.serve(&request).await;
            emit_metrics(credential_type, &outcome);
            let served = outcome.is_ok();
            complete(
                broker,
                request.task_token.as_ref(),
                request.include_key,
                outcome,
            )
            .await
            .inspect_err(|e| {
                if served {
                    count_handoff_failure(credential_type, e);
                }
            })
        }
        Err(e) => {
            log_failure(raw_credential_type(request), &e);
            complete(broker, raw_task_token(request).as_ref(), false, Err(e)).await
        }
    }
}

/// Reports the outcome to Step Functions when there is a task token. Once it
/// is reported, Step Functions owns it: the invocation succeeds, and only a
/// failed report is an error (`HandOffFailed`), so Lambda or SQS retries it.
async fn complete<V: Vendor, S: SecretStore, H: Handoff>(
    broker: &Broker<V, S, H>,
    token: Option<&TaskToken>,
    include_key: bool,
    outcome: Result<Served, Error>,
) -> Result<Value, Error> {
    let Some(token) = token else {
        return outcome.map(|served| to_json(&served.output(include_key)));
    };
    match outcome {
        Ok(served) => {
            let output = to_json(&served.output(include_key));
            match broker
                .handoff
                .task_success(token, &output.to_string())
                .await
            {
                Ok(()) => Ok(output),
                Err(e) => Err(Error::HandOffFailed(format!(
                    "the key is stored as version {} of {}, but reporting success to Step Functions failed ({e}); the same request retried will report it",
                    served.result.version_id, served.result.secret_arn
                ))),
            }
        }
        Err(error) => {
            let (error_type, message) = (error.error_type(), error.to_string());
            match broker
                .handoff
                .task_failure(token, error_type, &message)
                .await
            {
                Ok(()) => Ok(
                    json!({"status": "failed", "errorType": error_type, "errorMessage": message}),
                ),
                Err(e) => Err(Error::HandOffFailed(format!(
                    "the request failed with {error_type} ({message}), and reporting that to Step Functions failed too ({e})"
                ))),
            }
        }
    }
}

/// An SQS batch: records are independent, and only failed ones are listed.
/// Requests for the same target secret are served in order within their
/// group, so a batch asking for one key many times makes one vendor call.
async fn serve_batch<V: Vendor, S: SecretStore, H: Handoff>(
    broker: &Broker<V, S, H>,
    batch: Vec<SqsRecord>,
) -> SqsBatchResponse {
    let mut failed: Vec<String> = Vec::new();
    let mut groups: Vec<Vec<(String, KeyRequest)>> = Vec::new();
    let mut group_of: HashMap<String, usize> = HashMap::new();

    for record in batch {
        let id = record.message_id;
        let parsed = record
            .body
            .map_err(|problem| (Error::invalid(problem), None))
            .and_then(|body| parse_message(&body, &broker.config));
        match parsed {
            Ok(request) => {
                let next = groups.len();
                let index = *group_of
                    .entry(request.target_secret_id.clone())
                    .or_insert(next);
                if index == next {
                    groups.push(Vec::new());
                }
                groups[index].push((id, request));
            }
            Err((error, token)) => {
                log_failure(None, &error);
                if complete(broker, token.as_ref(), false, Err(error))
                    .await
                    .is_err()
                {
                    failed.push(id);
                }
            }
        }
    }

    let served =
        futures_util::future::join_all(groups.into_iter().map(|group| serve_group(broker, group)))
            .await;
    failed.extend(served.into_iter().flatten());

    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failed
        .into_iter()
        .map(|id| {
            let mut f = BatchItemFailure::default();
            f.item_identifier = id;
            f
        })
        .collect();
    response
}

/// Serves one target's requests in order; returns the ids that failed.
/// A key issued for an earlier record of the batch serves the later ones for
/// the same credential (as `fresh`, even under `force`: it was fetched just
/// now). Anything else goes to the broker, so a `force` after a `fresh`
/// result still renews.
async fn serve_group<V: Vendor, S: SecretStore, H: Handoff>(
    broker: &Broker<V, S, H>,
    group: Vec<(String, KeyRequest)>,
) -> Vec<String> {
    let mut failed = Vec::new();
    let mut issued: Option<Served> = None;
    for (id, request) in group {
        let outcome = match &issued {
            Some(prev)
                if prev.result.credential_type == request.credential.credential_type
                    && prev.result.model_id == request.credential.model_id =>
            {
                Ok(prev.reused())
            }
            _ => broker.serve(&request).await,
        };
        if let Ok(served) = &outcome
            && served.result.status == Status::Issued
        {
            issued = Some(served.clone());
        }
        emit_metrics(request.credential.credential_type, &outcome);
        let served = outcome.is_ok();
        if let Err(e) = complete(
            broker,
            request.task_token.as_ref(),
            request.include_key,
            outcome,
        )
        .await
        {
            if served {
                count_handoff_failure(request.credential.credential_type, &e);
            }
            tracing::warn!(message_id = %id, error_type = e.error_type(), "SQS record failed: {e}");
            failed.push(id);
        }
    }
    failed
}

/// A record's body is a request or an EventBridge envelope. On failure the
/// body's task token (if any) comes back so the failure can be reported.
fn parse_message(
    body: &str,
    config: &crate::config::Config,
) -> Result<KeyRequest, (Error, Option<TaskToken>)> {
    let value: Value = serde_json::from_str(body).map_err(|_| {
        (
            Error::invalid("the SQS message body is not a JSON request object"),
            None,
        )
    })?;
    let token = raw_task_token(&value);
    let request = match &value {
        Value::Object(fields) if fields.contains_key("detail-type") => {
            trigger::request_from_envelope(fields).map_err(|e| (e, token.clone()))?
        }
        _ => value,
    };
    KeyRequest::from_value(&request, config).map_err(|e| (e, token))
}

/// A hand-off that failed after the request itself succeeded is counted as
/// a failure too (the request's own failures are counted already).
fn count_handoff_failure(credential_type: CredentialType, error: &Error) {
    if matches!(error, Error::HandOffFailed(_)) {
        log_failure(Some(credential_type), error);
    }
}

/// The credential type of a request that failed validation, when it has a
/// valid one, for the metric's dimension.
fn raw_credential_type(request: &Value) -> Option<CredentialType> {
    raw_field(request, "credential_type").and_then(CredentialType::parse)
}

/// The task token of a request that failed validation, so that Step
/// Functions hears about the failure instead of waiting for its timeout.
fn raw_task_token(request: &Value) -> Option<TaskToken> {
    raw_field(request, "task_token")
        .filter(|t| !t.is_empty())
        .map(TaskToken::new)
}

/// A string field of an unvalidated request, or of an envelope's detail.
fn raw_field<'a>(request: &'a Value, name: &str) -> Option<&'a str> {
    request
        .get("detail")
        .unwrap_or(request)
        .get(name)
        .and_then(Value::as_str)
}

fn to_json(result: &crate::request::KeyResult) -> Value {
    serde_json::to_value(result).unwrap_or(Value::Null)
}

fn emit_metrics(credential_type: CredentialType, outcome: &Result<Served, Error>) {
    let dimension = credential_type.as_str();
    match outcome {
        Ok(served) => {
            let counter = match served.result.status {
                Status::Issued => "KeysIssued",
                Status::Fresh => "KeysFresh",
            };
            let mut values = vec![(counter, 1.0, Unit::Count)];
            if let Some(at) = served
                .result
                .expires_at
                .as_deref()
                .and_then(expiry::parse_end_date)
            {
                let left = (at - chrono::Utc::now()).num_seconds() as f64;
                values.push(("SecondsUntilExpiry", left, Unit::Seconds));
            }
            if let Some(ms) = served.vendor_latency_ms {
                values.push(("VendorLatencyMs", ms as f64, Unit::Milliseconds));
            }
            metrics::emit(dimension, &values);
        }
        Err(e) => log_failure(Some(credential_type), e),
    }
}

/// Logs a failure and counts it. Error texts never hold secrets.
pub fn log_failure(credential_type: Option<CredentialType>, error: &Error) {
    tracing::warn!(error_type = error.error_type(), "request failed: {error}");
    metrics::emit(
        credential_type.map_or("unknown", CredentialType::as_str),
        &[("Failures", 1.0, Unit::Count)],
    );
}

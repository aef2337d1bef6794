//! The retrain runner's entry point: any payload to actions and an answer.
//!
//! Payloads:
//! - a request object (`action`, ...): Lambda invoke, `cargo lambda invoke`;
//! - an EventBridge S3 `Object Created` event: `start` for its object (an
//!   EventBridge rule can target the runner directly);
//! - an SQS batch whose bodies are either of those: the workflow's
//!   transport (`sqs:sendMessage.waitForTaskToken`). Records are
//!   independent and run up to `P1_BATCH_CONCURRENCY` at once; a record
//!   that cannot start before the deadline is listed as failed without any
//!   call, and the partial-batch response lists only failed records.

use futures_util::StreamExt;
use serde_json::{Value, json};

use super::{RetrainRequest, Runner, RunnerPorts};
use crate::deadline::Deadline;
use crate::error::Error;
use crate::metrics;
use crate::request::{Rejected, json_kind};
use crate::trigger::{SqsMessage, sqs_records};

const EXPECTED: &str = "expected a retrain request (action, ...), an S3 \"Object Created\" EventBridge event, or an SQS batch (Records) of those";

/// Serves one invocation of the retrain runner by `deadline`.
pub async fn handle<P: RunnerPorts>(
    runner: &Runner<P>,
    payload: Value,
    deadline: &Deadline,
) -> Result<Value, Error> {
    if let Some(records) = payload.get("Records") {
        let messages = sqs_records(records, request_of_body)
            .inspect_err(|e| metrics::retrain_failed(None, e))?;
        return Ok(serve_batch(runner, messages, deadline).await);
    }
    let request = request_of(payload).inspect_err(|e| metrics::retrain_failed(None, e))?;
    serve_one(runner, &request, deadline).await
}

async fn serve_one<P: RunnerPorts>(
    runner: &Runner<P>,
    request: &Value,
    deadline: &Deadline,
) -> Result<Value, Error> {
    match RetrainRequest::parse(request, runner.config()) {
        Ok(request) => runner.answer(&request, deadline).await,
        Err(rejected) => runner.answer_rejected(rejected, deadline).await,
    }
}

async fn serve_batch<P: RunnerPorts>(
    runner: &Runner<P>,
    messages: Vec<SqsMessage>,
    deadline: &Deadline,
) -> Value {
    let concurrency = runner.config().batch_concurrency;
    let failed: Vec<String> = futures_util::stream::iter(messages)
        .map(|message| async move {
            let outcome = if !deadline.can_start() {
                tracing::warn!(message_id = %message.message_id, "no time left to start this SQS record");
                Err(())
            } else {
                let answered = match message.request {
                    Ok(request) => serve_one(runner, &request, deadline).await,
                    Err(rejected) => runner.answer_rejected(rejected, deadline).await,
                };
                answered.map(|_| ()).map_err(|e| {
                    tracing::warn!(message_id = %message.message_id, error_type = e.error_type(), "SQS record failed");
                })
            };
            outcome.err().map(|()| message.message_id)
        })
        .buffer_unordered(concurrency)
        .filter_map(|failed| async move { failed })
        .collect()
        .await;
    crate::batch::response(&failed)
}

/// An SQS body: a request, or an S3 event.
fn request_of_body(body: &str) -> Result<Value, Rejected> {
    let value: Value = serde_json::from_str(body).map_err(|_| {
        Rejected::bare(Error::invalid(
            "the SQS message body is not a JSON retrain request",
        ))
    })?;
    request_of(value.clone()).map_err(|e| Rejected::of(e, &value))
}

/// A direct payload's request: itself, or `start` for an S3 event's object.
fn request_of(payload: Value) -> Result<Value, Error> {
    let Value::Object(fields) = &payload else {
        return Err(Error::invalid(format!(
            "unrecognised payload ({}); {EXPECTED}",
            json_kind(&payload)
        )));
    };
    if fields.contains_key("detail-type") {
        return start_of_s3_event(&payload);
    }
    if fields.contains_key("action") {
        return Ok(payload);
    }
    let names: Vec<&str> = fields.keys().take(5).map(String::as_str).collect();
    Err(Error::invalid(format!(
        "unrecognised payload with fields {names:?}; {EXPECTED}"
    )))
}

/// The `start` request for an S3 `Object Created` event (as S3 sends it to
/// EventBridge: `detail.bucket.name`, `detail.object.key`, and
/// `detail.object.version-id` in a versioned bucket).
fn start_of_s3_event(event: &Value) -> Result<Value, Error> {
    let source = event.get("source").and_then(Value::as_str);
    let detail_type = event.get("detail-type").and_then(Value::as_str);
    if source != Some("aws.s3") || detail_type != Some("Object Created") {
        return Err(Error::invalid(format!(
            "the retrain runner takes S3 \"Object Created\" events; got source {source:?}, detail-type {detail_type:?}"
        )));
    }
    let detail = event.get("detail");
    let text = |path: [&str; 2]| {
        detail
            .and_then(|d| d.get(path[0]))
            .and_then(|o| o.get(path[1]))
            .and_then(Value::as_str)
    };
    match (text(["bucket", "name"]), text(["object", "key"])) {
        (Some(bucket), Some(key)) => Ok(json!({
            "action": "start",
            "bucket": bucket,
            "key": key,
            // The version that started it (absent in an unversioned bucket).
            "version_id": text(["object", "version-id"]),
        })),
        _ => Err(Error::invalid(
            "the S3 event has no detail.bucket.name and detail.object.key",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_event_is_a_start() {
        let event: Value =
            serde_json::from_str(include_str!("../../events/s3-object-created.json")).unwrap();
        let request = request_of(event).unwrap();
        assert_eq!(request["action"], "start");
        assert_eq!(request["key"], "retrain/42/new-data.csv");
        assert_eq!(request["version_id"], Value::Null, "an unversioned bucket");
        let other = json!({"detail-type": "Object Deleted", "source": "aws.s3", "detail": {}});
        assert!(
            request_of(other)
                .unwrap_err()
                .report()
                .contains("Object Created")
        );
        assert!(request_of(json!({"credential_type": "retrain"})).is_err());
        assert!(request_of(json!([1])).is_err());
    }

    #[test]
    fn a_bad_body_keeps_its_task_token() {
        let rejected =
            request_of_body(r#"{"detail-type": "x", "source": "y", "task_token": "tt"}"#)
                .unwrap_err();
        assert!(rejected.task_token.is_some());
        assert!(
            request_of_body("not json")
                .unwrap_err()
                .task_token
                .is_none()
        );
    }
}

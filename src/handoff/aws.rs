//! Step Functions and EventBridge through the AWS SDK. SDK errors become
//! typed [`HandoffError`]s here: a token Step Functions no longer knows is
//! told apart from a failure worth retrying.

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

use super::{EVENT_DETAIL_TYPE, EVENT_SOURCE, Handoff, HandoffError};
use crate::aws::{describe_sdk_error, error_code};
use crate::sensitive::TaskToken;

pub struct AwsHandoff {
    sfn: aws_sdk_sfn::Client,
    events: aws_sdk_eventbridge::Client,
    sqs: aws_sdk_sqs::Client,
}

impl AwsHandoff {
    pub fn new(
        sfn: aws_sdk_sfn::Client,
        events: aws_sdk_eventbridge::Client,
        sqs: aws_sdk_sqs::Client,
    ) -> Self {
        AwsHandoff { sfn, events, sqs }
    }
}

/// Each call's attempts sized to the time it has (`crate::aws`).
fn sized_sfn() -> aws_sdk_sfn::config::Builder {
    crate::aws::sized_override!(aws_sdk_sfn::config::Builder)
}

fn sized_sqs() -> aws_sdk_sqs::config::Builder {
    crate::aws::sized_override!(aws_sdk_sqs::config::Builder)
}

fn sized_events() -> aws_sdk_eventbridge::config::Builder {
    crate::aws::sized_override!(aws_sdk_eventbridge::config::Builder)
}

/// SendTaskFailure's limits on `error` and `cause`.
const MAX_ERROR: usize = 256;
const MAX_CAUSE: usize = 32_768;

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// The error codes with which Step Functions refuses a report on a task
/// that no longer waits for one.
const TASK_GONE: &[&str] = &["TaskTimedOut", "TaskDoesNotExist", "InvalidToken"];

fn handoff_error<E, R>(operation: &'static str, err: SdkError<E, R>) -> HandoffError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let detail = describe_sdk_error(&err);
    match error_code(&err) {
        Some(code) if TASK_GONE.contains(&code) => HandoffError::TaskGone {
            operation,
            code: code.to_string(),
            detail,
        },
        _ => HandoffError::Failed { operation, detail },
    }
}

impl Handoff for AwsHandoff {
    async fn task_success(&self, token: &TaskToken, output: &str) -> Result<(), HandoffError> {
        self.sfn
            .send_task_success()
            .task_token(token.expose())
            .output(output)
            .customize()
            .config_override(sized_sfn())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| handoff_error("SendTaskSuccess", e))
    }

    async fn task_failure(
        &self,
        token: &TaskToken,
        error: &str,
        cause: &str,
    ) -> Result<(), HandoffError> {
        self.sfn
            .send_task_failure()
            .task_token(token.expose())
            .error(truncate(error, MAX_ERROR))
            .cause(truncate(cause, MAX_CAUSE))
            .customize()
            .config_override(sized_sfn())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| handoff_error("SendTaskFailure", e))
    }

    async fn task_heartbeat(&self, token: &TaskToken) -> Result<(), HandoffError> {
        self.sfn
            .send_task_heartbeat()
            .task_token(token.expose())
            .customize()
            .config_override(sized_sfn())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| handoff_error("SendTaskHeartbeat", e))
    }

    async fn announce(&self, bus: &str, detail: &str) -> Result<(), HandoffError> {
        let entry = PutEventsRequestEntry::builder()
            .event_bus_name(bus)
            .source(EVENT_SOURCE)
            .detail_type(EVENT_DETAIL_TYPE)
            .detail(detail)
            .build();
        let out = self
            .events
            .put_events()
            .entries(entry)
            .customize()
            .config_override(sized_events())
            .send()
            .await
            .map_err(|e| handoff_error("PutEvents", e))?;
        // PutEvents reports per-entry failures in a 200 response.
        if out.failed_entry_count() > 0 {
            let reason = out
                .entries()
                .iter()
                .find_map(|e| {
                    e.error_code()
                        .map(|c| format!("{c}: {}", e.error_message().unwrap_or_default()))
                })
                .unwrap_or_else(|| "entry rejected".into());
            return Err(HandoffError::Failed {
                operation: "PutEvents",
                detail: format!("the event was rejected: {reason}"),
            });
        }
        Ok(())
    }

    async fn send_requests(
        &self,
        queue_url: &str,
        bodies: &[String],
    ) -> Result<Vec<usize>, HandoffError> {
        let entries = bodies
            .iter()
            .enumerate()
            .map(|(i, body)| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .build()
                    .map_err(|e| HandoffError::Failed {
                        operation: "SendMessageBatch",
                        detail: format!("cannot build the batch: {e}"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let out = self
            .sqs
            .send_message_batch()
            .queue_url(queue_url)
            .set_entries(Some(entries))
            .customize()
            .config_override(sized_sqs())
            .send()
            .await
            .map_err(|e| handoff_error("SendMessageBatch", e))?;
        // SendMessageBatch answers 200 with the entries it refused.
        Ok(out
            .failed()
            .iter()
            .filter_map(|f| f.id().parse().ok())
            .collect())
    }
}

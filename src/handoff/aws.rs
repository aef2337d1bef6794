//! Step Functions and EventBridge through the AWS SDK.

use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use super::{EVENT_DETAIL_TYPE, EVENT_SOURCE, Handoff};
use crate::error::describe_sdk_error;
use crate::sensitive::TaskToken;

pub struct AwsHandoff {
    sfn: aws_sdk_sfn::Client,
    events: aws_sdk_eventbridge::Client,
}

impl AwsHandoff {
    pub fn new(sfn: aws_sdk_sfn::Client, events: aws_sdk_eventbridge::Client) -> Self {
        AwsHandoff { sfn, events }
    }
}

/// SendTaskFailure's limits on `error` and `cause`.
const MAX_ERROR: usize = 256;
const MAX_CAUSE: usize = 32_768;

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

impl Handoff for AwsHandoff {
    async fn task_success(&self, token: &TaskToken, output: &str) -> Result<(), String> {
        self.sfn
            .send_task_success()
            .task_token(token.expose())
            .output(output)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("SendTaskSuccess failed: {}", describe_sdk_error(&e)))
    }

    async fn task_failure(
        &self,
        token: &TaskToken,
        error: &str,
        cause: &str,
    ) -> Result<(), String> {
        self.sfn
            .send_task_failure()
            .task_token(token.expose())
            .error(truncate(error, MAX_ERROR))
            .cause(truncate(cause, MAX_CAUSE))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| format!("SendTaskFailure failed: {}", describe_sdk_error(&e)))
    }

    async fn announce(&self, bus: &str, detail: &str) -> Result<(), String> {
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
            .send()
            .await
            .map_err(|e| format!("PutEvents failed: {}", describe_sdk_error(&e)))?;
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
            return Err(format!("PutEvents rejected the event: {reason}"));
        }
        Ok(())
    }
}

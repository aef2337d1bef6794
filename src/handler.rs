//! The Lambda entry point: recognise the trigger and turn it into calls of
//! the use case ([`Broker`]); SQS batches go to [`crate::batch`]. Nothing
//! here decides about keys.

use serde_json::Value;

use crate::batch;
use crate::broker::sweep::SweepRequest;
use crate::broker::{Broker, Ports};
use crate::deadline::Deadline;
use crate::error::Error;
use crate::metrics;
use crate::request::KeyRequest;
use crate::trigger::Trigger;

/// Serves one invocation, whatever triggered it, by `deadline` (built from
/// the runtime's deadline and `P1_DEADLINE_MARGIN_MS`).
pub async fn handle<P: Ports>(
    broker: &Broker<P>,
    payload: Value,
    deadline: &Deadline,
) -> Result<Value, Error> {
    let trigger = Trigger::from_payload(payload).inspect_err(|e| metrics::failed(None, e))?;
    match trigger {
        Trigger::Direct(request) | Trigger::EventBridge(request) => {
            match KeyRequest::parse(&request, broker.config()) {
                Ok(request) => {
                    let outcome = broker.serve(&request, deadline).await;
                    broker.answer(&request, outcome, deadline).await
                }
                Err(rejected) => broker.answer_rejected(rejected, deadline).await,
            }
        }
        Trigger::Sqs(messages) => Ok(batch::serve(broker, messages, deadline).await),
        Trigger::Rotation(event) => broker
            .rotate(&event, deadline)
            .await
            .map(|()| Value::Null)
            .inspect_err(|e| metrics::failed(None, e)),
        Trigger::Sweep(payload) => {
            let request =
                SweepRequest::parse(&payload).inspect_err(|e| metrics::failed(None, e))?;
            broker
                .sweep(&request, deadline)
                .await
                .map(|report| report.to_json())
                .inspect_err(|e| metrics::failed(None, e))
        }
    }
}

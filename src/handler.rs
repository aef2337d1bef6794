//! The Lambda entry point: recognise the trigger and turn it into calls of
//! the use case ([`Broker`]); SQS batches go to [`crate::batch`]. Nothing
//! here decides about keys.

use serde_json::Value;

use crate::batch;
use crate::broker::{Broker, Ports};
use crate::error::Error;
use crate::metrics;
use crate::request::KeyRequest;
use crate::trigger::Trigger;

/// Serves one invocation, whatever triggered it.
pub async fn handle<P: Ports>(broker: &Broker<P>, payload: Value) -> Result<Value, Error> {
    let trigger = Trigger::from_payload(payload).inspect_err(|e| metrics::failed(None, e))?;
    match trigger {
        Trigger::Direct(request) | Trigger::EventBridge(request) => {
            match KeyRequest::parse(&request, broker.config()) {
                Ok(request) => {
                    let outcome = broker.serve(&request).await;
                    broker.answer(&request, outcome).await
                }
                Err(rejected) => broker.answer_rejected(rejected).await,
            }
        }
        Trigger::Sqs(messages) => Ok(batch::serve(broker, messages).await),
        Trigger::Rotation(event) => broker
            .rotate(&event)
            .await
            .map(|()| Value::Null)
            .inspect_err(|e| metrics::failed(None, e)),
    }
}

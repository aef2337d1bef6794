//! SQS batches (SPEC section 3): records are independent, and only failed
//! ones are listed in `batchItemFailures`.
//!
//! Records are grouped by target secret. A group is served in order, so a
//! batch asking for one key many times makes one vendor call; groups are
//! served concurrently. A key issued for an earlier record serves the later
//! ones for the same credential (as `fresh`, even under `force`: it was
//! fetched just now); anything else goes to the broker, so a `force` after
//! a `fresh` result still renews.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::broker::{Broker, Ports};
use crate::request::{KeyRequest, Served, Status};
use crate::trigger::SqsMessage;

/// Serves a batch; the answer is the partial-batch response.
pub async fn serve<P: Ports>(broker: &Broker<P>, messages: Vec<SqsMessage>) -> Value {
    let mut failed: Vec<String> = Vec::new();
    let mut groups: Vec<Vec<(String, KeyRequest)>> = Vec::new();
    let mut group_of: HashMap<String, usize> = HashMap::new();

    for message in messages {
        let id = message.message_id;
        let parsed = message
            .request
            .and_then(|request| KeyRequest::parse(&request, broker.config()));
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
            Err(rejected) => {
                if broker.answer_rejected(rejected).await.is_err() {
                    failed.push(id);
                }
            }
        }
    }

    let served =
        futures_util::future::join_all(groups.into_iter().map(|group| serve_group(broker, group)))
            .await;
    failed.extend(served.into_iter().flatten());
    response(&failed)
}

/// Serves one target's requests in order; returns the ids that failed.
async fn serve_group<P: Ports>(
    broker: &Broker<P>,
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
                Ok(prev.as_fresh())
            }
            _ => broker.serve(&request).await,
        };
        if let Ok(served) = &outcome
            && served.result.status == Status::Issued
        {
            issued = Some(served.clone());
        }
        if let Err(e) = broker.answer(&request, outcome).await {
            tracing::warn!(message_id = %id, error_type = e.error_type(), "SQS record failed: {}", e.report());
            failed.push(id);
        }
    }
    failed
}

/// The partial-batch response. Built as a JSON value directly: it cannot
/// fail to encode, so there is no fallback that SQS could read as "all
/// succeeded".
fn response(failed: &[String]) -> Value {
    let failures: Vec<Value> = failed
        .iter()
        .map(|id| json!({"itemIdentifier": id}))
        .collect();
    json!({"batchItemFailures": failures})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_lists_only_failed_ids() {
        assert_eq!(response(&[]), json!({"batchItemFailures": []}));
        assert_eq!(
            response(&["a".into(), "b".into()]),
            json!({"batchItemFailures": [{"itemIdentifier": "a"}, {"itemIdentifier": "b"}]})
        );
    }
}

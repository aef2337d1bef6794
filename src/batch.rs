//! SQS batches (SPEC sections 3 and 10): records are independent, and only
//! failed ones are listed in `batchItemFailures`.
//!
//! Records are grouped by target secret (by its name, so that a secret named
//! by name and by ARN is one group). A group is served in order, so a
//! batch asking for one key many times makes one vendor call; up to
//! `P1_BATCH_CONCURRENCY` groups are served at once, so a batch for many
//! models does not become a self-made throttling storm. A key issued for an
//! earlier record serves the later ones for the same credential (as
//! `fresh`, even under `force`: it was fetched just now); anything else goes
//! to the broker, so a `force` after a `fresh` result still renews.
//!
//! Time: a record that cannot start before the deadline's work point is
//! listed as failed without any call (SQS delivers it again), and once a
//! vendor call for a credential has failed with a retryable error, later
//! records for that credential fail at once with the same error. Every
//! call is bounded by the deadline, so the response goes out before it.

use std::collections::HashMap;
use std::sync::Mutex;

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::broker::{Broker, Ports};
use crate::credential::{Credential, Status};
use crate::deadline::Deadline;
use crate::error::Error;
use crate::prediction_one::PredictionOneError;
use crate::request::{KeyRequest, Served};
use crate::secret_id;
use crate::trigger::SqsMessage;

/// What the groups of one batch share: the credentials whose vendor call
/// failed with a retryable error.
#[derive(Default)]
struct Shared {
    failed: Mutex<HashMap<Credential, PredictionOneError>>,
}

impl Shared {
    fn failure_of(&self, credential: &Credential) -> Option<PredictionOneError> {
        self.failed
            .lock()
            .ok()
            .and_then(|f| f.get(credential).cloned())
    }

    fn remember(&self, credential: &Credential, outcome: &Result<Served, Error>) {
        if let Err(Error::PredictionOne(e)) = outcome
            && e.is_retryable()
            && let Ok(mut failed) = self.failed.lock()
        {
            failed.insert(credential.clone(), e.clone());
        }
    }
}

/// Serves a batch; the answer is the partial-batch response.
pub async fn serve<P: Ports>(
    broker: &Broker<P>,
    messages: Vec<SqsMessage>,
    deadline: &Deadline,
) -> Value {
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
                // By the secret, not the string: a name and its ARN are one
                // target, served in one group.
                let next = groups.len();
                let index = *group_of
                    .entry(secret_id::name_of(&request.target_secret_id).to_string())
                    .or_insert(next);
                if index == next {
                    groups.push(Vec::new());
                }
                groups[index].push((id, request));
            }
            Err(rejected) => {
                // Without time to report it, SQS delivers it again.
                if !deadline.can_start()
                    || broker.answer_rejected(rejected, deadline).await.is_err()
                {
                    failed.push(id);
                }
            }
        }
    }

    let shared = Shared::default();
    let served: Vec<Vec<String>> = futures_util::stream::iter(groups)
        .map(|group| serve_group(broker, group, deadline, &shared))
        .buffer_unordered(broker.config().batch_concurrency)
        .collect()
        .await;
    failed.extend(served.into_iter().flatten());
    response(&failed)
}

/// Serves one target's requests in order; returns the ids that failed.
async fn serve_group<P: Ports>(
    broker: &Broker<P>,
    group: Vec<(String, KeyRequest)>,
    deadline: &Deadline,
    shared: &Shared,
) -> Vec<String> {
    let mut failed = Vec::new();
    let mut issued: Option<Served> = None;
    for (id, request) in group {
        if !deadline.can_start() {
            tracing::warn!(message_id = %id, "no time left to start this SQS record; SQS will deliver it again");
            failed.push(id);
            continue;
        }
        let credential = &request.credential;
        let outcome = match &issued {
            Some(prev)
                if prev.result.credential_type == credential.credential_type
                    && prev.result.model_id == credential.model_id
                    && secret_id::same_secret(
                        &request.target_secret_id,
                        &prev.result.secret_arn,
                    ) =>
            {
                Ok(prev.as_fresh())
            }
            _ => match shared.failure_of(credential) {
                Some(e) => Err(Error::PredictionOne(e)),
                None => {
                    let outcome = broker.serve(&request, deadline).await;
                    shared.remember(credential, &outcome);
                    outcome
                }
            },
        };
        if let Ok(served) = &outcome
            && served.result.status == Status::Issued
        {
            issued = Some(served.clone());
        }
        if let Err(e) = broker.answer(&request, outcome, deadline).await {
            tracing::warn!(message_id = %id, error_type = e.error_type(), "SQS record failed: {}", e.report());
            failed.push(id);
        }
    }
    failed
}

/// The partial-batch response. Built as a JSON value directly: it cannot
/// fail to encode, so there is no fallback that SQS could read as "all
/// succeeded".
pub fn response(failed: &[String]) -> Value {
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

//! The renewal sweep (SPEC section 12): one schedule keeps every managed key
//! fresh, however many models there are.
//!
//! A sweep lists the managed secrets (the train and deploy targets, every
//! secret under the retrain prefix, every secret tagged
//! `managed-by=p1-key-broker`, but for those whose `p1:secret_key_secret`
//! tag names another secret key: another stack's), reads their current
//! records 20 at a time
//! (BatchGetSecretValue), and finds the due ones: a record of unknown
//! expiry or expiring within `P1_RENEW_BEFORE_SECONDS` (and not issued in
//! the last 10 minutes: the same rule as a request's `fresh`), and the
//! targets of `P1_SWEEP_ENSURE` that do not exist yet. Soonest expiry first
//! (unknown and missing first of all), at most `P1_SWEEP_MAX_RENEWALS`:
//! renewed here, `P1_BATCH_CONCURRENCY` at a time through the same use case
//! as a request (`serve`), or, with `P1_RENEW_QUEUE_URL`, handed to that
//! queue as requests (SendMessageBatch, 10 a call), so that the queue's
//! consumers spread a fleet's renewals over many invocations and under
//! Secrets Manager's write rate. A value that is not a key record is
//! counted as skipped and never written; what the cap or the deadline
//! leaves is `left`, for the next sweep.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};

use super::{Broker, MANAGED_TAG, OWNER_TAG, Ports};
use crate::credential::{Credential, CredentialType, Status};
use crate::deadline::Deadline;
use crate::error::{Context, Error};
use crate::handoff::Handoff;
use crate::metrics;
use crate::request::{KeyRequest, json_flag, json_kind};
use crate::secret_id;
use crate::secrets::{KeyRecord, ListFilter, ListedSecret, SecretStore, StoreError};

/// BatchGetSecretValue's most ids per call.
const READ_BATCH: usize = 20;
/// SendMessageBatch's most entries per call.
const SEND_BATCH: usize = 10;

/// A validated `{"sweep": "due"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepRequest {
    /// Report what is due and change nothing.
    pub dry_run: bool,
}

impl SweepRequest {
    pub fn parse(value: &Value) -> Result<Self, Error> {
        let Value::Object(fields) = value else {
            return Err(Error::invalid("a sweep is {\"sweep\": \"due\"}"));
        };
        if let Some(unknown) = fields
            .keys()
            .find(|k| !matches!(k.as_str(), "sweep" | "dry_run"))
        {
            return Err(Error::invalid(format!(
                "unknown field `{unknown}`; a sweep has only sweep and dry_run"
            )));
        }
        match fields.get("sweep") {
            Some(Value::String(s)) if s == "due" => {}
            Some(other) => {
                return Err(Error::invalid(format!(
                    "sweep must be \"due\"; got {}",
                    describe(other)
                )));
            }
            None => return Err(Error::invalid("a sweep is {\"sweep\": \"due\"}")),
        }
        Ok(SweepRequest {
            dry_run: json_flag(fields, "dry_run")?,
        })
    }
}

fn describe(value: &Value) -> String {
    match value {
        Value::String(s) => format!("{s:?}"),
        other => json_kind(other).to_string(),
    }
}

/// What a sweep did (SPEC section 12).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub managed: usize,
    pub due: usize,
    pub renewed: usize,
    pub queued: usize,
    pub fresh: usize,
    pub skipped: usize,
    pub left: usize,
    /// (secret, errorType) of each renewal or read that failed.
    pub failed: Vec<(String, String)>,
}

impl SweepReport {
    pub fn to_json(&self) -> Value {
        let failed: Vec<Value> = self
            .failed
            .iter()
            .map(|(secret, error_type)| json!({"secret": secret, "errorType": error_type}))
            .collect();
        json!({
            "sweep": "due",
            "managed": self.managed,
            "due": self.due,
            "renewed": self.renewed,
            "queued": self.queued,
            "fresh": self.fresh,
            "skipped": self.skipped,
            "left": self.left,
            "failed": failed,
        })
    }
}

/// A managed secret as found: how to name it, and what it is called.
#[derive(Debug, Clone)]
struct Managed {
    /// Its ARN when listed, else the configured id.
    id: String,
    name: String,
}

/// A due key.
#[derive(Debug, Clone)]
struct Due {
    target: String,
    name: String,
    credential: Credential,
    /// `None`: unknown, or no key yet (renewed first).
    expires: Option<DateTime<Utc>>,
}

impl<P: Ports> Broker<P> {
    /// One sweep, by `deadline`. Fails (`StoreFailed`) only when the managed
    /// secrets cannot be listed or read; a renewal that fails is listed and
    /// the others go on.
    pub async fn sweep(
        &self,
        request: &SweepRequest,
        deadline: &Deadline,
    ) -> Result<SweepReport, Error> {
        let (managed, rotated) = self.managed_secrets(deadline).await?;
        let mut report = SweepReport {
            managed: managed.len(),
            ..SweepReport::default()
        };
        let (mut due, mut existing) = self.due_among(&managed, &mut report, deadline).await?;
        // A rotated target exists: its rotation renews it, not the sweep.
        existing.extend(rotated);
        self.missing_ensured(&existing, &mut due);
        due.sort_by_key(|d| d.expires);
        report.due = due.len();
        let cap = self.config.sweep_max_renewals;
        let capped: Vec<Due> = due.into_iter().take(cap).collect();
        report.left = report.due - capped.len();
        tracing::info!(
            managed = report.managed,
            due = report.due,
            fresh = report.fresh,
            skipped = report.skipped,
            dry_run = request.dry_run,
            "sweep: due keys found"
        );
        for d in &capped {
            tracing::info!(secret = %d.name, expires = ?d.expires, "due");
        }
        if request.dry_run {
            report.left = report.due;
        } else if let Some(queue) = &self.config.renew_queue_url {
            self.hand_off(queue, capped, &mut report, deadline).await;
        } else {
            self.renew_all(capped, &mut report, deadline).await;
        }
        metrics::swept(
            report.due,
            report.renewed,
            report.queued,
            report.left,
            report.failed.len(),
        );
        Ok(report)
    }

    /// Every managed secret once: the configured targets, what the retrain
    /// prefix lists, and what carries the tag. Apart: the ids of those that
    /// Secrets Manager rotates (never swept, never created as missing).
    async fn managed_secrets(
        &self,
        deadline: &Deadline,
    ) -> Result<(Vec<Managed>, Vec<String>), Error> {
        let prefix = self.config.retrain_secret_prefix.clone();
        let mut listed: Vec<ListedSecret> = Vec::new();
        for filter in [
            ListFilter {
                name_prefix: Some(prefix.clone()),
                tag: None,
            },
            ListFilter {
                name_prefix: None,
                tag: Some((MANAGED_TAG.0.into(), MANAGED_TAG.1.into())),
            },
        ] {
            let mut next: Option<String> = None;
            loop {
                let page = deadline
                    .work(self.store.list(&filter, next.as_deref()))
                    .await
                    .map_err(|e| cannot("list the managed secrets", e))?;
                // ListSecrets matches name prefixes and tags loosely (case,
                // prefixes of tags): keep what is exactly ours.
                // A tagged secret of another secret key (another stack in
                // the account) is not this sweep's.
                let owner = self.config.owner_tag_value();
                listed.extend(page.secrets.into_iter().filter(|s| match &filter.tag {
                    Some((k, v)) => {
                        s.tags.get(k) == Some(v)
                            && s.tags.get(OWNER_TAG).is_none_or(|o| *o == owner)
                    }
                    None => s.name.starts_with(&prefix),
                }));
                next = page.next_token;
                if next.is_none() {
                    break;
                }
            }
        }
        let mut seen = HashSet::new();
        let mut out: Vec<Managed> = Vec::new();
        let mut rotated: Vec<String> = Vec::new();
        for s in listed {
            if !seen.insert(s.arn.clone()) {
                continue;
            }
            // Secrets Manager's own rotation renews it: one renewer each.
            if s.rotation_enabled {
                rotated.push(s.arn);
                continue;
            }
            out.push(Managed {
                id: s.arn,
                name: s.name,
            });
        }
        for target in [&self.config.train_secret_id, &self.config.deploy_secret_id] {
            if out.iter().any(|m| secret_id::same_secret(target, &m.id)) {
                continue;
            }
            // Not listed (created by someone else, untagged): its rotation
            // is only known from DescribeSecret.
            match deadline.work(self.store.describe(target)).await {
                Ok(d) if d.rotation_enabled => rotated.push(d.arn),
                Ok(d) if seen.contains(&d.arn) => {}
                Ok(_) => out.push(Managed {
                    id: target.clone(),
                    name: secret_id::name_of(target).to_string(),
                }),
                Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(cannot("describe a configured target", e)),
            }
        }
        if !rotated.is_empty() {
            tracing::info!(
                rotated = rotated.len(),
                "sweep: secrets that Secrets Manager rotates are left to their rotation"
            );
        }
        // Never the secret key, whatever else lists it.
        out.retain(|m| !self.config.is_secret_key_secret(&m.id));
        Ok((out, rotated))
    }

    /// Reads the managed secrets' records 20 at a time and sorts them into
    /// due, fresh and skipped (into `report`); configured targets that do
    /// not exist are dropped here (`missing_ensured` decides on them). Also
    /// the ids of the secrets that exist (that have a current value, or that
    /// could not be read).
    async fn due_among(
        &self,
        managed: &[Managed],
        report: &mut SweepReport,
        deadline: &Deadline,
    ) -> Result<(Vec<Due>, Vec<String>), Error> {
        let now = Utc::now();
        let mut due = Vec::new();
        let mut existing = Vec::new();
        let mut absent = 0;
        // The soonest expiry per credential type, for the expiry alarms.
        let mut soonest: Vec<(CredentialType, DateTime<Utc>)> = Vec::new();
        for chunk in managed.chunks(READ_BATCH) {
            let ids: Vec<String> = chunk.iter().map(|m| m.id.clone()).collect();
            let read = deadline
                .work(self.store.batch_get(&ids))
                .await
                .map_err(|e| cannot("read the managed secrets", e))?;
            for (id, code) in &read.errors {
                let Some(m) = chunk.iter().find(|m| secret_id::same_secret(id, &m.id)) else {
                    continue;
                };
                if code == "ResourceNotFoundException" {
                    // A configured target not created yet, or one with no
                    // current value.
                    absent += 1;
                } else {
                    tracing::warn!(secret = %m.name, code, "sweep: cannot read a managed secret");
                    report.failed.push((m.name.clone(), "StoreFailed".into()));
                    existing.push(m.id.clone());
                }
            }
            for value in read.values {
                let Some(m) = chunk
                    .iter()
                    .find(|m| secret_id::same_secret(&value.arn, &m.id))
                else {
                    continue;
                };
                existing.push(value.arn.clone());
                let record = value.secret_string.as_ref().and_then(KeyRecord::parse);
                let Some(record) = record else {
                    report.skipped += 1;
                    continue;
                };
                let credential = record.credential.clone();
                if let Some(at) = record.expiry() {
                    match soonest
                        .iter_mut()
                        .find(|(t, _)| *t == credential.credential_type)
                    {
                        Some((_, s)) if at < *s => *s = at,
                        Some(_) => {}
                        None => soonest.push((credential.credential_type, at)),
                    }
                }
                if let Some(whose) = self.config.crossed_target(
                    credential.credential_type,
                    credential.model_id.as_ref(),
                    &m.id,
                ) {
                    // A record that does not belong where it is: not renewed
                    // there (a request for it would be refused too).
                    tracing::warn!(secret = %m.name, "sweep: the record's credential does not belong in {whose}");
                    report
                        .failed
                        .push((m.name.clone(), "InvalidRequest".into()));
                    continue;
                }
                if record.is_fresh_for(&credential, now, self.config.renew_before) {
                    report.fresh += 1;
                    continue;
                }
                due.push(Due {
                    target: value.arn.clone(),
                    name: m.name.clone(),
                    expires: record.expiry(),
                    credential,
                });
            }
        }
        report.managed -= absent;
        for (credential_type, at) in soonest {
            metrics::seconds_until_expiry(credential_type, at);
        }
        Ok((due, existing))
    }

    /// The `P1_SWEEP_ENSURE` credentials whose target does not exist (or
    /// holds no current value): due, first of all.
    fn missing_ensured(&self, existing: &[String], due: &mut Vec<Due>) {
        for credential in &self.config.sweep_ensure {
            let target = self
                .config
                .default_target(credential.credential_type, credential.model_id.as_ref());
            if existing
                .iter()
                .any(|id| secret_id::same_secret(&target, id))
            {
                continue;
            }
            due.push(Due {
                name: secret_id::name_of(&target).to_string(),
                target,
                credential: credential.clone(),
                expires: None,
            });
        }
    }

    /// Renews the due keys here, `P1_BATCH_CONCURRENCY` at a time, starting
    /// none without the time for it.
    async fn renew_all(&self, due: Vec<Due>, report: &mut SweepReport, deadline: &Deadline) {
        let outcomes: Vec<(Due, Option<Result<Status, Error>>)> = futures_util::stream::iter(due)
            .map(|d| async move {
                if !deadline.can_start() {
                    return (d, None);
                }
                let request = KeyRequest {
                    credential: d.credential.clone(),
                    target_secret_id: d.target.clone(),
                    force: false,
                    task_token: None,
                    include_key: false,
                };
                let outcome = self.serve(&request, deadline).await.map(|served| {
                    served.count();
                    served.result.status
                });
                (d, Some(outcome))
            })
            .buffer_unordered(self.config.batch_concurrency)
            .collect()
            .await;
        for (d, outcome) in outcomes {
            match outcome {
                None => report.left += 1,
                Some(Ok(Status::Issued)) => report.renewed += 1,
                // Renewed meanwhile by someone else.
                Some(Ok(Status::Fresh)) => report.fresh += 1,
                Some(Err(e)) => {
                    metrics::failed(Some(d.credential.credential_type), &e);
                    report.failed.push((d.name, e.error_type().to_string()));
                }
            }
        }
    }

    /// Hands the due keys to the request queue, 10 to a SendMessageBatch;
    /// what SQS does not take, or no time is left for, is `left`.
    async fn hand_off(
        &self,
        queue: &str,
        due: Vec<Due>,
        report: &mut SweepReport,
        deadline: &Deadline,
    ) {
        for chunk in due.chunks(SEND_BATCH) {
            if !deadline.can_start() {
                report.left += chunk.len();
                continue;
            }
            let bodies: Vec<String> = chunk.iter().map(request_body).collect();
            match deadline
                .work(self.handoff.send_requests(queue, &bodies))
                .await
            {
                Ok(refused) => {
                    for i in &refused {
                        if let Some(d) = chunk.get(*i) {
                            tracing::warn!(secret = %d.name, "sweep: SQS did not take the renewal request; the next sweep will");
                        }
                    }
                    report.queued += chunk.len() - refused.len();
                    report.left += refused.len();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "sweep: cannot hand renewal requests to the queue; the next sweep will");
                    report.left += chunk.len();
                }
            }
        }
    }
}

/// The request a due key becomes on the queue: its credential and target,
/// as a `retrain` request for the model names it (never a key).
fn request_body(d: &Due) -> String {
    let mut body = Map::new();
    body.insert(
        "credential_type".into(),
        json!(d.credential.credential_type.as_str()),
    );
    if let (CredentialType::Retrain, Some(id)) =
        (d.credential.credential_type, &d.credential.model_id)
    {
        body.insert("model_id".into(), json!(id.as_str()));
    }
    body.insert("target_secret_id".into(), json!(d.target));
    Value::Object(body).to_string()
}

fn cannot(what: &str, e: StoreError) -> Error {
    Error::StoreFailed(Context::new(format!("the sweep cannot {what}"), e))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::fakes::{FakeIssuer, FakeStore, broker};
    use crate::secrets::AWSCURRENT;

    const PREFIX: &str = "prediction-one/api-key/retrain/";

    /// A record of `credential` ("train", "deploy" or a retrain model id)
    /// expiring at `expires` (RFC 3339, or None), issued an hour ago.
    fn record(credential: &str, expires: Option<&str>) -> String {
        let issued = crate::expiry::format_instant(Utc::now() - chrono::Duration::hours(1));
        let (ctype, model) = match credential {
            "train" | "deploy" => (credential, None),
            id => ("retrain", Some(id)),
        };
        json!({"api_key": "old", "end_date": expires.unwrap_or("whenever"),
               "expires_at": expires, "credential_type": ctype, "model_id": model,
               "issued_at": issued})
        .to_string()
    }

    fn put(store: &FakeStore, name: &str, value: &str) {
        store.values.lock().unwrap().insert(
            name.into(),
            vec![("v0".into(), value.into(), vec![AWSCURRENT.into()])],
        );
    }

    fn in_days(days: i64) -> String {
        crate::expiry::format_instant(Utc::now() + chrono::Duration::days(days))
    }

    fn deadline() -> Deadline {
        Deadline::after(Duration::from_secs(60), Duration::from_secs(2))
    }

    /// Managed secrets of every kind: due (expired, expiring inside the
    /// window, unknown expiry), fresh, not a key record, and the ensured
    /// train target missing.
    fn fleet() -> FakeStore {
        let store = FakeStore::with_secret_key("sk-1");
        put(
            &store,
            "prediction-one/api-key/deploy",
            &record("deploy", Some(&in_days(30))),
        );
        put(
            &store,
            &format!("{PREFIX}1"),
            &record("1", Some("2020-01-01T00:00:00Z")),
        );
        put(
            &store,
            &format!("{PREFIX}2"),
            &record("2", Some(&in_days(3))),
        );
        put(&store, &format!("{PREFIX}3"), &record("3", None));
        put(
            &store,
            &format!("{PREFIX}4"),
            &record("4", Some(&in_days(9))),
        );
        put(&store, &format!("{PREFIX}5"), "a database password");
        store
    }

    #[tokio::test]
    async fn exactly_the_due_keys_are_renewed_soonest_first() {
        let b = broker(
            fleet(),
            FakeIssuer::default(),
            &[("P1_RENEW_BEFORE_SECONDS", "432000")],
        );
        let report = b
            .sweep(&SweepRequest { dry_run: false }, &deadline())
            .await
            .unwrap();
        // Managed: deploy, 1..5 (train is missing: ensured, not counted).
        assert_eq!(
            (
                report.managed,
                report.due,
                report.renewed,
                report.fresh,
                report.skipped,
                report.left
            ),
            (6, 4, 4, 2, 1, 0),
            "{report:?}"
        );
        assert!(report.failed.is_empty(), "{report:?}");
        let values = b.store.values.lock().unwrap();
        for renewed in [
            "prediction-one/api-key/train",
            &format!("{PREFIX}1"),
            &format!("{PREFIX}2"),
            &format!("{PREFIX}3"),
        ] {
            let current = values[renewed]
                .iter()
                .find(|v| v.2.iter().any(|s| s == AWSCURRENT))
                .unwrap();
            assert!(
                current.1.contains("\"api_key\":\"ak\""),
                "{renewed} renewed"
            );
        }
        for untouched in [
            "prediction-one/api-key/deploy",
            &format!("{PREFIX}4"),
            &format!("{PREFIX}5"),
        ] {
            assert_eq!(values[untouched].len(), 1, "{untouched} untouched");
        }
    }

    #[tokio::test]
    async fn the_cap_leaves_the_latest_and_the_queue_gets_requests() {
        let b = broker(
            fleet(),
            FakeIssuer::default(),
            &[
                ("P1_RENEW_BEFORE_SECONDS", "432000"),
                ("P1_SWEEP_MAX_RENEWALS", "3"),
                (
                    "P1_RENEW_QUEUE_URL",
                    "https://sqs.us-east-1.amazonaws.com/1/requests",
                ),
            ],
        );
        let report = b
            .sweep(&SweepRequest { dry_run: false }, &deadline())
            .await
            .unwrap();
        assert_eq!(
            (report.due, report.queued, report.renewed, report.left),
            (4, 3, 0, 1)
        );
        assert!(b.issuer.used.lock().unwrap().is_empty(), "no vendor call");
        let sent: Vec<Value> = b
            .handoff
            .sent
            .lock()
            .unwrap()
            .iter()
            .map(|s| serde_json::from_str(s).unwrap())
            .collect();
        // Unknown and missing first, then the soonest expiry; model 2
        // (in 3 days) is left for the next sweep.
        let targets: Vec<&str> = sent
            .iter()
            .map(|r| r["target_secret_id"].as_str().unwrap())
            .collect();
        assert_eq!(targets.len(), 3);
        assert!(
            targets.contains(&"prediction-one/api-key/train"),
            "{targets:?}"
        );
        let arn = crate::fakes::fake_arn;
        assert!(
            targets.contains(&arn(&format!("{PREFIX}3")).as_str()),
            "{targets:?}"
        );
        assert_eq!(targets[2], arn(&format!("{PREFIX}1")), "{targets:?}");
        assert_eq!(
            sent[2],
            json!({"credential_type": "retrain", "model_id": "1", "target_secret_id": arn(&format!("{PREFIX}1"))})
        );
        // Each is a request the broker accepts.
        for r in &sent {
            KeyRequest::parse(r, b.config())
                .map_err(|r| r.error)
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_rotated_target_is_left_to_its_rotation_even_when_ensured() {
        let store = fleet();
        put(
            &store,
            "prediction-one/api-key/train",
            &record("train", Some("2020-01-01T00:00:00Z")),
        );
        put(
            &store,
            &format!("{PREFIX}9"),
            &record("9", Some("2020-01-01T00:00:00Z")),
        );
        store
            .rotated
            .lock()
            .unwrap()
            .extend(["prediction-one/api-key/train".into(), format!("{PREFIX}9")]);
        let b = broker(
            store,
            FakeIssuer::default(),
            &[("P1_RENEW_BEFORE_SECONDS", "432000")],
        );
        let report = b
            .sweep(&SweepRequest { dry_run: false }, &deadline())
            .await
            .unwrap();
        // Expired, ensured (train) and listed (9), but rotated: neither is
        // due, neither written; 1, 2 and 3 are.
        assert_eq!((report.due, report.renewed), (3, 3), "{report:?}");
        let values = b.store.values.lock().unwrap();
        assert_eq!(values["prediction-one/api-key/train"].len(), 1);
        assert_eq!(values[&format!("{PREFIX}9")].len(), 1);
    }

    #[tokio::test]
    async fn a_dry_run_changes_nothing() {
        let b = broker(
            fleet(),
            FakeIssuer::default(),
            &[("P1_RENEW_BEFORE_SECONDS", "432000")],
        );
        let report = b
            .sweep(&SweepRequest { dry_run: true }, &deadline())
            .await
            .unwrap();
        assert_eq!(
            (report.due, report.renewed, report.queued, report.left),
            (4, 0, 0, 4)
        );
        assert!(b.issuer.used.lock().unwrap().is_empty());
        let calls = b.store.calls.lock().unwrap().clone();
        assert!(
            calls
                .iter()
                .all(|c| matches!(*c, "list" | "describe" | "batch_get")),
            "{calls:?}"
        );
    }

    #[tokio::test]
    async fn a_sweep_without_time_leaves_its_renewals_and_writes_nothing_half() {
        let b = broker(
            fleet(),
            FakeIssuer::default(),
            &[("P1_RENEW_BEFORE_SECONDS", "432000")],
        );
        // Reads fit, no renewal may start: all of them are left.
        let d = Deadline::after(Duration::from_millis(2_030), Duration::from_secs(2));
        let report = b.sweep(&SweepRequest { dry_run: false }, &d).await;
        match report {
            Ok(r) => assert_eq!((r.renewed, r.left), (0, r.due), "{r:?}"),
            Err(e) => assert_eq!(e.error_type(), "StoreFailed"),
        }
        assert!(b.issuer.used.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_read_that_fails_fails_the_sweep() {
        let store = fleet();
        store.fail_once("batch_get", StoreError::Throttled("slow down".into()));
        let b = broker(store, FakeIssuer::default(), &[]);
        let e = b
            .sweep(&SweepRequest { dry_run: false }, &deadline())
            .await
            .unwrap_err();
        assert_eq!(e.error_type(), "StoreFailed");
        assert!(e.report().contains("cannot read"), "{}", e.report());
    }

    #[test]
    fn sweep_requests() {
        assert_eq!(
            SweepRequest::parse(&json!({"sweep": "due"})).unwrap(),
            SweepRequest { dry_run: false }
        );
        assert!(
            SweepRequest::parse(&json!({"sweep": "due", "dry_run": true}))
                .unwrap()
                .dry_run
        );
        for (bad, says) in [
            (json!({"sweep": "all"}), "\"all\""),
            (json!({"sweep": 1}), "a number"),
            (json!({"sweep": "due", "dry_run": "yes"}), "dry_run"),
            (json!({"sweep": "due", "force": true}), "`force`"),
        ] {
            let e = SweepRequest::parse(&bad).unwrap_err();
            assert_eq!(e.error_type(), "InvalidRequest");
            assert!(e.report().contains(says), "{bad}: {}", e.report());
        }
    }

    #[test]
    fn the_report_has_the_contract_shape() {
        let r = SweepReport {
            managed: 5,
            due: 3,
            renewed: 1,
            queued: 0,
            fresh: 1,
            skipped: 1,
            left: 1,
            failed: vec![(
                "prediction-one/api-key/retrain/7".into(),
                "PredictionOne.Unavailable".into(),
            )],
        };
        assert_eq!(
            r.to_json(),
            json!({"sweep": "due", "managed": 5, "due": 3, "renewed": 1, "queued": 0, "fresh": 1,
                   "skipped": 1, "left": 1,
                   "failed": [{"secret": "prediction-one/api-key/retrain/7", "errorType": "PredictionOne.Unavailable"}]})
        );
    }
}

//! The renewal sweep (SPEC section 12): one schedule keeps every managed key
//! fresh, however many models there are, and never touches another
//! stack's.
//!
//! A sweep lists the managed secrets and their owners (`listing`), reads
//! their current records 20 at a time with up to
//! `P1_SWEEP_READ_CONCURRENCY` reads in flight while the listing goes on,
//! finds the due ones and puts them in order (`due`), and renews up to
//! `P1_SWEEP_MAX_RENEWALS` of them: here, `P1_BATCH_CONCURRENCY` at a time
//! through the same use case as a request (`serve`, whose derived
//! ClientRequestToken makes one renewal win when two meet), or, with
//! `P1_RENEW_QUEUE_URL`, handed to that queue as requests (SendMessageBatch,
//! 10 a call), so that the queue's consumers spread a fleet's renewals over
//! many invocations and under Secrets Manager's write rate.
//!
//! Time: the listing and the reads stop a quarter of the work time before
//! the deadline, so that what was read is still renewed; a slow or
//! throttled page ends them early instead of failing the sweep, and what was
//! not read is `left` for the next one. The report (`report`) says what was
//! done and names what was not.

mod due;
mod listing;
mod report;

use std::collections::HashSet;
use std::time::Instant;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde_json::{Map, Value, json};

use super::{Broker, Ports};
use crate::credential::{CredentialType, Status};
use crate::deadline::Deadline;
use crate::error::{Context, Error};
use crate::handoff::Handoff;
use crate::metrics;
use crate::request::{KeyRequest, json_flag, json_kind};
use crate::secret_id;
use crate::secrets::{BatchValues, KeyRecord, SecretStore, StoreError};
use due::{Due, Order};
use listing::{Managed, transient};
pub use report::{NAMED, Names, SweepReport};

/// SendMessageBatch's most entries per call.
const SEND_BATCH: usize = 10;

/// A validated `{"sweep": "due"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepRequest {
    /// Report what is due and change nothing (and emit no metric).
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

/// What the reads found.
#[derive(Debug, Default)]
struct Read {
    due: Vec<Due>,
    fresh: usize,
    skipped: Names,
    failed: Vec<(String, String)>,
    /// Handed on but not read (out of time, a throttled page): `left`.
    unread: Names,
    /// Ids of every secret that exists, read or not.
    existing: Vec<String>,
    /// Configured targets with no current value.
    absent: usize,
    /// The soonest expiry per credential type, for the expiry alarms.
    soonest: Vec<(CredentialType, DateTime<Utc>)>,
    /// A read refused outright (no permission): the sweep fails.
    refused: Option<Error>,
}

impl<P: Ports> Broker<P> {
    /// One sweep, by `deadline`. Fails (`StoreFailed`) only when listing or
    /// reading is refused outright; time running out or a throttled page
    /// leaves the rest for the next sweep, and a renewal that fails is
    /// listed while the others go on.
    pub async fn sweep(
        &self,
        request: &SweepRequest,
        deadline: &Deadline,
    ) -> Result<SweepReport, Error> {
        let started = Instant::now();
        // Reads stop a quarter of the work time early: what was read is
        // renewed (or handed off) in the rest.
        let phase = deadline.keeping(deadline.work_left() / 4);
        let (reads, batches) =
            tokio::sync::mpsc::channel::<Vec<Managed>>(self.config.sweep_read_concurrency * 2);
        let (listing, read) = tokio::join!(
            self.list_managed(reads, &phase),
            self.read_managed(batches, &phase)
        );
        let listing = listing?;
        let mut read = read;
        if let Some(refused) = read.refused.take() {
            return Err(refused);
        }
        // Nothing listed, or nothing of what was listed read: not a sweep.
        // Failing lets Lambda retry it and the missing-sweep alarm see it.
        if !listing.complete && listing.pages == 0 {
            return Err(Error::StoreFailed(Context::new(
                "the sweep cannot list the managed secrets: the listing was throttled or ran out of time before its first page",
                None,
            )));
        }
        if listing.handed_on > 0 && read.unread.count == listing.handed_on {
            return Err(Error::StoreFailed(Context::new(
                format!(
                    "the sweep cannot read the managed secrets: none of the {} listed could be read (throttled, or out of time)",
                    listing.handed_on
                ),
                None,
            )));
        }
        let mut report = SweepReport {
            managed: listing.handed_on - read.absent + listing.stopped.len(),
            fresh: read.fresh,
            skipped: read.skipped,
            failed: read.failed,
            left: read.unread,
            ..SweepReport::default()
        };
        for (name, mark) in &listing.stopped {
            report.stopped.add(name);
            tracing::debug!(secret = %name, mark = %mark, "sweep: renewal stopped");
        }
        for name in &listing.foreign {
            report.foreign.add(name);
        }
        let mut due = read.due;
        // What exists, whether read or not: an ensured target among it is
        // not missing. A listing cut short may not have seen it: then it
        // waits for the next sweep rather than be created twice.
        let mut existing = read.existing;
        existing.extend(listing.rotated.iter().cloned());
        existing.extend(listing.stopped.iter().map(|(n, _)| n.clone()));
        existing.extend(listing.foreign.iter().cloned());
        if listing.complete {
            self.missing_ensured(&existing, &mut due);
        }
        due.sort_by(|a, b| a.order.cmp(&b.order));
        report.due = due.len();
        let cap = self.config.sweep_max_renewals;
        let past_cap = if due.len() > cap {
            due.split_off(cap)
        } else {
            Vec::new()
        };
        for d in &past_cap {
            report.left.add(&d.name);
        }
        tracing::info!(
            managed = report.managed,
            due = report.due,
            fresh = report.fresh,
            skipped = report.skipped.count,
            stopped = report.stopped.count,
            foreign = report.foreign.count,
            unread = report.left.count - past_cap.len(),
            listed_all = listing.complete,
            dry_run = request.dry_run,
            "sweep: due keys found"
        );
        for d in due.iter().take(NAMED) {
            tracing::info!(secret = %d.name, order = ?d.order, "due");
        }
        if request.dry_run {
            for d in &due {
                report.left.add(&d.name);
            }
            report.log_names();
            return Ok(report);
        }
        if let Some(queue) = &self.config.renew_queue_url {
            self.hand_off(queue, due, &mut report, deadline).await;
        } else {
            self.renew_all(due, &mut report, deadline).await;
        }
        report.log_names();
        for (credential_type, at) in read.soonest {
            metrics::seconds_until_expiry(credential_type, at);
        }
        metrics::swept(&metrics::Swept {
            due: report.due,
            renewed: report.renewed,
            queued: report.queued,
            left: report.left.count,
            stopped: report.stopped.count,
            failed: report
                .failed
                .iter()
                .filter(|(_, t)| !crate::error::stops_renewal(t))
                .count(),
            duration_ms: started.elapsed().as_millis() as u64,
        });
        Ok(report)
    }

    /// Reads what the listing hands on, up to `P1_SWEEP_READ_CONCURRENCY`
    /// batches at a time, within `phase`, and sorts the records into due,
    /// fresh and skipped. Runs until the listing is done.
    async fn read_managed(
        &self,
        batches: tokio::sync::mpsc::Receiver<Vec<Managed>>,
        phase: &Deadline,
    ) -> Read {
        let now = Utc::now();
        let mut read = Read::default();
        let batches = futures_util::stream::unfold(batches, |mut rx| async move {
            rx.recv().await.map(|batch| (batch, rx))
        });
        let outcomes = batches
            .map(|batch| async move {
                if !phase.can_start() {
                    return (batch, None);
                }
                let ids: Vec<String> = batch.iter().map(|m| m.id.clone()).collect();
                let outcome = phase.work(self.store.batch_get(&ids)).await;
                (batch, Some(outcome))
            })
            .buffer_unordered(self.config.sweep_read_concurrency);
        let mut outcomes = std::pin::pin!(outcomes);
        while let Some((batch, outcome)) = outcomes.next().await {
            match outcome {
                Some(Ok(values)) => self.sort_read(&batch, values, now, &mut read),
                Some(Err(e)) if transient(&e) || read.refused.is_some() => {
                    tracing::warn!(error = %e, secrets = batch.len(), "sweep: a read failed; those secrets wait for the next sweep");
                    self.unread(&batch, &mut read);
                }
                Some(Err(e)) => {
                    read.refused = Some(cannot("read the managed secrets", e));
                    self.unread(&batch, &mut read);
                }
                None => self.unread(&batch, &mut read),
            }
        }
        read
    }

    fn unread(&self, batch: &[Managed], read: &mut Read) {
        for m in batch {
            read.unread.add(&m.name);
            read.existing.push(m.id.clone());
        }
    }

    /// One batch's records: due (with their order), fresh or skipped.
    fn sort_read(
        &self,
        batch: &[Managed],
        values: BatchValues,
        now: DateTime<Utc>,
        read: &mut Read,
    ) {
        for (id, code) in &values.errors {
            let Some(m) = batch.iter().find(|m| secret_id::same_secret(id, &m.id)) else {
                continue;
            };
            if code == "ResourceNotFoundException" {
                // A configured target not created yet, or one with no
                // current value.
                read.absent += 1;
            } else {
                tracing::warn!(secret = %m.name, code, "sweep: cannot read a managed secret");
                read.failed.push((m.name.clone(), "StoreFailed".into()));
                read.existing.push(m.id.clone());
            }
        }
        for value in values.values {
            let Some(m) = batch
                .iter()
                .find(|m| secret_id::same_secret(&value.arn, &m.id))
            else {
                continue;
            };
            read.existing.push(value.arn.clone());
            let Some(record) = value.secret_string.as_ref().and_then(KeyRecord::parse) else {
                read.skipped.add(&m.name);
                continue;
            };
            let credential = record.credential.clone();
            if let Some(at) = record.expiry() {
                match read
                    .soonest
                    .iter_mut()
                    .find(|(t, _)| *t == credential.credential_type)
                {
                    Some((_, s)) if at < *s => *s = at,
                    Some(_) => {}
                    None => read.soonest.push((credential.credential_type, at)),
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
                read.failed.push((m.name.clone(), "InvalidRequest".into()));
                continue;
            }
            if record.is_fresh_for(&credential, now, self.renew_window(&value.arn)) {
                read.fresh += 1;
                continue;
            }
            read.due.push(Due {
                target: value.arn.clone(),
                name: m.name.clone(),
                order: Order::of(&record, now),
                credential,
            });
        }
    }

    /// The `P1_SWEEP_ENSURE` credentials whose target does not exist (or
    /// holds no current value): due, first of all.
    fn missing_ensured(&self, existing: &[String], due: &mut Vec<Due>) {
        let existing: HashSet<&str> = existing.iter().map(|id| secret_id::name_of(id)).collect();
        for credential in &self.config.sweep_ensure {
            let target = self
                .config
                .default_target(credential.credential_type, credential.model_id.as_ref());
            if existing.contains(secret_id::name_of(&target))
                || due
                    .iter()
                    .any(|d| secret_id::same_secret(&target, &d.target))
            {
                continue;
            }
            due.push(Due {
                name: secret_id::name_of(&target).to_string(),
                target,
                credential: credential.clone(),
                order: Order::Missing,
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
                None => report.left.add(&d.name),
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

    /// Hands the due keys to the request queue, 10 to a SendMessageBatch,
    /// up to `P1_SWEEP_READ_CONCURRENCY` calls at a time; what SQS does not
    /// take, or no time is left for, is `left`.
    async fn hand_off(
        &self,
        queue: &str,
        due: Vec<Due>,
        report: &mut SweepReport,
        deadline: &Deadline,
    ) {
        let chunks: Vec<Vec<Due>> = due.chunks(SEND_BATCH).map(<[Due]>::to_vec).collect();
        let outcomes: Vec<(Vec<Due>, Option<Vec<usize>>)> = futures_util::stream::iter(chunks)
            .map(|chunk| async move {
                if !deadline.can_start() {
                    return (chunk, None);
                }
                let bodies: Vec<String> = chunk.iter().map(request_body).collect();
                match deadline
                    .work(self.handoff.send_requests(queue, &bodies))
                    .await
                {
                    Ok(refused) => (chunk, Some(refused)),
                    Err(e) => {
                        tracing::warn!(error = %e, "sweep: cannot hand renewal requests to the queue; the next sweep will");
                        (chunk, None)
                    }
                }
            })
            .buffer_unordered(self.config.sweep_read_concurrency)
            .collect()
            .await;
        for (chunk, refused) in outcomes {
            let Some(refused) = refused else {
                for d in &chunk {
                    report.left.add(&d.name);
                }
                continue;
            };
            for (i, d) in chunk.iter().enumerate() {
                if refused.contains(&i) {
                    tracing::warn!(secret = %d.name, "sweep: SQS did not take the renewal request; the next sweep will");
                    report.left.add(&d.name);
                } else {
                    report.queued += 1;
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

    /// A retrain record of `model` under the prefix, carrying one tag.
    fn put_tagged(store: &FakeStore, model: &str, expires: Option<&str>, tag: (&str, &str)) {
        let name = format!("{PREFIX}{model}");
        put(store, &name, &record(model, expires));
        store
            .tags
            .lock()
            .unwrap()
            .insert(name, [(tag.0.to_string(), tag.1.to_string())].into());
    }

    fn in_days(days: i64) -> String {
        crate::expiry::format_instant(Utc::now() + chrono::Duration::days(days))
    }

    /// One sweep of `store` with a 5-day renewal window (the fleet's keys
    /// of 3 days are due, those of 9 and 30 fresh).
    async fn swept(store: FakeStore) -> (Broker<crate::fakes::Fakes>, SweepReport) {
        let b = broker(
            store,
            FakeIssuer::default(),
            &[("P1_RENEW_BEFORE_SECONDS", "432000")],
        );
        let report = b
            .sweep(&SweepRequest { dry_run: false }, &deadline())
            .await
            .unwrap();
        (b, report)
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
        let (b, report) = swept(fleet()).await;
        // Managed: deploy, 1..5 (train is missing: ensured, not counted).
        assert_eq!(
            (
                report.managed,
                report.due,
                report.renewed,
                report.fresh,
                report.skipped.count,
                report.left.count
            ),
            (6, 4, 4, 2, 1, 0),
            "{report:?}"
        );
        assert!(report.failed.is_empty(), "{report:?}");
        assert_eq!(report.skipped.names, [format!("{PREFIX}5")]);
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
            assert!(current.1.contains("\"api_key\":\"ak-"), "{renewed} renewed");
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
            (report.due, report.queued, report.renewed, report.left.count),
            (4, 3, 0, 1)
        );
        assert!(b.issuer.used.lock().unwrap().is_empty(), "no vendor call");
        // The missing train key, then the live key that expires first, then
        // the one of unknown expiry; the key that expired in 2020 (a model
        // most likely gone) is left, and named.
        assert_eq!(report.left.names, [format!("{PREFIX}1")]);
        let sent: Vec<Value> = b
            .handoff
            .sent
            .lock()
            .unwrap()
            .iter()
            .map(|s| serde_json::from_str(s).unwrap())
            .collect();
        let mut targets: Vec<&str> = sent
            .iter()
            .map(|r| r["target_secret_id"].as_str().unwrap())
            .collect();
        targets.sort();
        let arn = crate::fakes::fake_arn;
        let (two, three) = (arn(&format!("{PREFIX}2")), arn(&format!("{PREFIX}3")));
        assert_eq!(
            targets,
            [two.as_str(), three.as_str(), "prediction-one/api-key/train"]
        );
        let two_sent = sent.iter().find(|r| r["model_id"] == "2").unwrap();
        assert_eq!(
            two_sent,
            &json!({"credential_type": "retrain", "model_id": "2", "target_secret_id": two})
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
        let (b, report) = swept(store).await;
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
        let before = crate::metrics::emitted_on_this_thread();
        let report = b
            .sweep(&SweepRequest { dry_run: true }, &deadline())
            .await
            .unwrap();
        assert_eq!(
            (report.due, report.renewed, report.queued, report.left.count),
            (4, 0, 0, 4)
        );
        assert!(b.issuer.used.lock().unwrap().is_empty());
        // Not one metric line: a dry run must not feed SweepLeft or the
        // expiry alarms (SPEC section 12).
        assert_eq!(crate::metrics::emitted_on_this_thread(), before);
        let dry_calls = b.store.calls.lock().unwrap().clone();
        // A real sweep on the same thread does emit (the count works).
        b.sweep(&SweepRequest { dry_run: false }, &deadline())
            .await
            .unwrap();
        assert!(crate::metrics::emitted_on_this_thread() > before);
        let calls = dry_calls;
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
            Ok(r) => assert_eq!((r.renewed, r.left.count), (0, r.due), "{r:?}"),
            Err(e) => assert_eq!(e.error_type(), "StoreFailed"),
        }
        assert!(b.issuer.used.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_throttled_read_among_many_leaves_its_secrets_and_the_rest_is_renewed() {
        let store = fleet();
        for i in 10..40 {
            put(
                &store,
                &format!("{PREFIX}{i}"),
                &record(&i.to_string(), Some(&in_days(30))),
            );
        }
        // 36 managed secrets, two batches: one throttled read leaves its
        // twenty, the other is read and swept.
        store.fail_once("batch_get", StoreError::Throttled("slow down".into()));
        let b = broker(
            store,
            FakeIssuer::default(),
            &[
                ("P1_RENEW_BEFORE_SECONDS", "432000"),
                ("P1_SWEEP_READ_CONCURRENCY", "1"),
            ],
        );
        let report = b
            .sweep(&SweepRequest { dry_run: false }, &deadline())
            .await
            .unwrap();
        assert_eq!(report.left.count, 20, "{report:?}");
        assert_eq!(report.left.names.len(), 20);
        assert!(report.renewed + report.fresh > 0, "{report:?}");
        // Nothing read at all is no sweep: StoreFailed.
        let store = fleet();
        store.fail_once("batch_get", StoreError::Throttled("slow down".into()));
        let b = broker(store, FakeIssuer::default(), &[]);
        let e = b
            .sweep(&SweepRequest { dry_run: false }, &deadline())
            .await
            .unwrap_err();
        assert!(
            e.report().contains("none of the 6 listed"),
            "{}",
            e.report()
        );
        assert!(b.issuer.used.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_read_refused_outright_fails_the_sweep() {
        let store = fleet();
        store.fail_once("batch_get", StoreError::AccessDenied("no".into()));
        let b = broker(store, FakeIssuer::default(), &[]);
        let e = b
            .sweep(&SweepRequest { dry_run: false }, &deadline())
            .await
            .unwrap_err();
        assert_eq!(e.error_type(), "StoreFailed");
        assert!(e.report().contains("cannot read"), "{}", e.report());
        assert!(b.issuer.used.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn another_stacks_secrets_are_counted_and_never_read() {
        let store = fleet();
        let expired = Some("2020-01-01T00:00:00Z");
        put_tagged(
            &store,
            "theirs",
            expired,
            (crate::broker::OWNER_TAG, "their-secret-key"),
        );
        put_tagged(
            &store,
            "dead",
            expired,
            (
                crate::broker::STOPPED_TAG,
                "PredictionOne.ModelDeleted 2026-12-01",
            ),
        );
        let (b, report) = swept(store).await;
        assert_eq!(report.foreign.names, [format!("{PREFIX}theirs")]);
        assert_eq!(report.stopped.names, [format!("{PREFIX}dead")]);
        let values = b.store.values.lock().unwrap();
        assert_eq!(values[&format!("{PREFIX}theirs")].len(), 1, "never written");
        assert_eq!(values[&format!("{PREFIX}dead")].len(), 1, "skipped");
        assert_eq!(report.renewed, 4, "{report:?}");
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
}

//! Exactly one retraining per uploaded object (SPEC section 11): the start
//! record.
//!
//! S3 sends an event twice now and then, SQS delivers a message again, and
//! Step Functions retries tasks: the same object can reach `start` twice,
//! at once or hours apart. So before a vendor job is created, `start`
//! *claims* the object with a small record, written only if none exists
//! (S3's conditional write, atomic); the claim holds a lease until the
//! claiming invocation's deadline. Once its upload has succeeded, the first
//! start's record says `started`, with the job id and the bytes sent, and
//! every later start of the same object answers that job, with no vendor
//! call and no second upload. A start that finds the object claimed waits
//! for the record while the lease runs; one that finds the lease passed
//! (its owner died mid-upload) takes the claim over, again conditionally;
//! a start that fails releases its claim, so that a retry may try again.
//!
//! Where: in the data object's own bucket, at
//! `P1_RETRAIN_RESULTS_PREFIX` + `.starts/` + the SHA-256 of the object's
//! identity and the model, so it works on a bucket the stack did not
//! create (the runner's role needs `s3:GetObject` and `s3:PutObject` there,
//! and `s3:ListBucket` so that a missing record is a 404). A record holds
//! ids, S3 locations and times, never a key or a URL.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::credential::ModelId;
use crate::deadline::Deadline;
use crate::objects::{ObjectError, ObjectStore, ObjectVersion, WriteIf};

/// Where the records live under the results prefix. Not a model id (a
/// model id has no '.'), so never a results folder.
const FOLDER: &str = ".starts/";
/// How often a start that waits for another one reads the record again.
const POLL: Duration = Duration::from_secs(2);
/// Past its deadline, a lease still holds this long (clocks differ).
const LEASE_SLACK_MS: i64 = 60_000;

/// What a claim found.
pub enum Found {
    /// An earlier start recorded this job for the object.
    Started { retrain_job_id: String, bytes: u64 },
    /// The object is this start's to start.
    Claimed(Box<Claim>),
}

/// A claim held: the record as written and its ETag.
pub struct Claim {
    key: String,
    etag: String,
    record: Record,
}

/// Why no claim was had.
#[derive(Debug)]
pub enum Unclaimed {
    /// Another start holds the object and did not finish in this
    /// invocation's time (its job, when it has one yet).
    Busy(Option<String>),
    /// The record could not be read or written.
    Store(ObjectError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// `uploading`, `started` or `released`.
    state: String,
    /// The claiming start (a random id per start).
    owner: String,
    /// Epoch milliseconds until which the claim holds.
    lease_until_ms: i64,
    model_id: String,
    bucket: String,
    key: String,
    version_id: Option<String>,
    etag: Option<String>,
    last_modified: Option<String>,
    retrain_job_id: Option<String>,
    bytes: Option<u64>,
    updated_at: String,
}

const UPLOADING: &str = "uploading";
const STARTED: &str = "started";
const RELEASED: &str = "released";

/// The start records of one results prefix.
pub struct Starts<'a, O: ObjectStore> {
    objects: &'a O,
    prefix: &'a str,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl<'a, O: ObjectStore> Starts<'a, O> {
    pub fn new(objects: &'a O, results_prefix: &'a str) -> Self {
        Starts {
            objects,
            prefix: results_prefix,
        }
    }

    /// The record's key for an object version and a model.
    pub fn key_of(&self, object: &ObjectVersion, model_id: &ModelId) -> String {
        record_key(self.prefix, object, model_id)
    }

    /// Claims `object` for a start by `deadline`, or finds the job an
    /// earlier start recorded. While another start's lease runs, waits for
    /// its record, calling `waiting` (the task heartbeat) at each look.
    pub async fn claim<F, Fut>(
        &self,
        object: &ObjectVersion,
        model_id: &ModelId,
        deadline: &Deadline,
        mut waiting: F,
    ) -> Result<Found, Unclaimed>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let key = self.key_of(object, model_id);
        let bucket = object.bucket.as_str();
        let owner = crate::secrets::new_version_id();
        let mut busy_job = None;
        loop {
            if !deadline.can_start() {
                return Err(Unclaimed::Busy(busy_job));
            }
            let lease_until_ms =
                now_ms() + deadline.finish_left().as_millis() as i64 + LEASE_SLACK_MS;
            let mine = Record {
                state: UPLOADING.into(),
                owner: owner.clone(),
                lease_until_ms,
                model_id: model_id.as_str().into(),
                bucket: bucket.into(),
                key: object.key.clone(),
                version_id: object.version_id.clone(),
                etag: object.etag.clone(),
                last_modified: object.last_modified.clone(),
                retrain_job_id: None,
                bytes: None,
                updated_at: crate::expiry::format_instant(chrono::Utc::now()),
            };
            let found = deadline
                .work(self.objects.read_small(bucket, &key))
                .await
                .map_err(Unclaimed::Store)?;
            let condition_etag;
            let condition = match &found {
                None => WriteIf::Absent,
                Some((bytes, etag)) => {
                    let record: Option<Record> = serde_json::from_slice(bytes).ok();
                    match record {
                        // Our own claim, written by an attempt whose answer
                        // was lost.
                        Some(r) if r.owner == owner => {
                            return Ok(Found::Claimed(Box::new(Claim {
                                key,
                                etag: etag.clone(),
                                record: r,
                            })));
                        }
                        Some(r) if r.state == STARTED => {
                            if let Some(job) = r.retrain_job_id {
                                return Ok(Found::Started {
                                    retrain_job_id: job,
                                    bytes: r.bytes.unwrap_or_default(),
                                });
                            }
                        }
                        Some(r) if r.state == UPLOADING && r.lease_until_ms > now_ms() => {
                            busy_job = r.retrain_job_id.clone();
                            tracing::info!(
                                retrain_job_id =
                                    r.retrain_job_id.as_deref().unwrap_or("(none yet)"),
                                "another start of this object is uploading; waiting for its record"
                            );
                            if deadline.work_left() < POLL * 2 {
                                return Err(Unclaimed::Busy(busy_job));
                            }
                            waiting().await;
                            tokio::time::sleep(POLL).await;
                            continue;
                        }
                        Some(r) if r.state == UPLOADING => {
                            tracing::warn!(
                                abandoned_retrain_job_id =
                                    r.retrain_job_id.as_deref().unwrap_or("(none)"),
                                "an earlier start of this object died before its upload was recorded; starting it again"
                            );
                        }
                        _ => {}
                    }
                    condition_etag = etag.clone();
                    WriteIf::Unchanged(&condition_etag)
                }
            };
            let body = encode(&mine).map_err(Unclaimed::Store)?;
            match deadline
                .work(self.objects.write_small(bucket, &key, body, condition))
                .await
            {
                Ok(etag) => {
                    return Ok(Found::Claimed(Box::new(Claim {
                        key,
                        etag,
                        record: mine,
                    })));
                }
                // Someone else wrote it meanwhile (or our own write landed
                // without an answer): look again.
                Err(ObjectError::Conflict(_)) => continue,
                Err(e) => return Err(Unclaimed::Store(e)),
            }
        }
    }

    /// Notes the vendor job on the claim while its upload runs, so that an
    /// abandoned claim names the job it left behind. Best effort.
    pub async fn job_created(&self, claim: &mut Claim, retrain_job_id: &str, deadline: &Deadline) {
        let mut record = claim.record.clone();
        record.retrain_job_id = Some(retrain_job_id.into());
        if let Ok(etag) = self.write(claim, record.clone(), deadline).await {
            claim.etag = etag;
            claim.record = record;
        }
    }

    /// Records the started job: from now on every start of the object
    /// answers it. Written before the start reports success.
    pub async fn started(
        &self,
        claim: Box<Claim>,
        retrain_job_id: &str,
        bytes: u64,
        deadline: &Deadline,
    ) -> Result<(), ObjectError> {
        let mut record = claim.record.clone();
        record.state = STARTED.into();
        record.retrain_job_id = Some(retrain_job_id.into());
        record.bytes = Some(bytes);
        self.write(&claim, record, deadline).await.map(|_| ())
    }

    /// Gives the object up after a failed start, so that a retry may claim
    /// it at once. Best effort: a claim left behind expires with its lease.
    pub async fn release(&self, claim: Box<Claim>, deadline: &Deadline) {
        let mut record = claim.record.clone();
        record.state = RELEASED.into();
        if let Err(e) = self.write(&claim, record, deadline).await {
            tracing::warn!(error = %e, "could not release the start record; it expires with its lease");
        }
    }

    async fn write(
        &self,
        claim: &Claim,
        mut record: Record,
        deadline: &Deadline,
    ) -> Result<String, ObjectError> {
        record.updated_at = crate::expiry::format_instant(chrono::Utc::now());
        let body = encode(&record)?;
        deadline
            .finish(self.objects.write_small(
                &record.bucket,
                &claim.key,
                body,
                WriteIf::Unchanged(&claim.etag),
            ))
            .await
    }
}

fn encode(record: &Record) -> Result<Vec<u8>, ObjectError> {
    serde_json::to_vec(record)
        .map_err(|e| ObjectError::Other(format!("cannot encode the start record: {e}")))
}

/// Where the start record of `object` for `model_id` lives: under the
/// results prefix, `.starts/` and the hex SHA-256 of the object's identity
/// and the model (docs/retraining.md shows how to compute it by hand, to
/// retrain the same bytes on purpose).
fn record_key(prefix: &str, object: &ObjectVersion, model_id: &ModelId) -> String {
    let digest = Sha256::digest(format!(
        "{}\nmodel {}",
        object.identity(),
        model_id.as_str()
    ));
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("{prefix}{FOLDER}{hex}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of docs/retraining.md ("Retraining the same bytes on
    /// purpose"): the name a user computes with sha256sum is the runner's.
    #[test]
    fn a_start_records_name_is_the_documented_hash() {
        let object = ObjectVersion {
            bucket: "my-data".into(),
            key: "retrain/42/sales 2026.csv".into(),
            version_id: Some("3HL4kqtJlcpXroDTDmJ".into()),
            etag: Some("\"e1\"".into()),
            last_modified: None,
            length: None,
        };
        let model = ModelId::parse("42").unwrap();
        assert_eq!(
            record_key("retrain-results/", &object, &model),
            "retrain-results/.starts/fa69ef97120ffd3c173642a3791b8f481571314204602ce053b9212e5d4e5e9b.json"
        );
    }
}

//! The retrain runner (SPEC section 11): the four steps of a Prediction One
//! retraining, each one invocation, driven by the Step Functions workflow in
//! `infra/`.
//!
//! - [`request`]: the runner's requests and their validation.
//! - [`handler`]: any payload (a request, an S3 `Object Created` event, an
//!   SQS batch of requests) to actions and an answer.
//!
//! [`Runner`] holds the key broker ([`Broker`]) and uses it the way a
//! `retrain` request does: a model's retrain key is the stored one when
//! fresh, else a new one, stored first. So the key lives only in Secrets
//! Manager and in this process, never in the workflow's state, results or
//! logs. When a retraining call refuses a stored key, a new one is issued
//! once (`force`) and that call is tried once more.
//!
//! The data and the results are streamed (`crate::transfer`) between S3
//! and the vendor's pre-signed URLs, whatever their size.

pub mod handler;
mod keepalive;
pub mod request;
pub mod starts;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::{Value, json};

use crate::broker::{Broker, Ports};
use crate::config::Config;
use crate::credential::{Credential, CredentialType, ModelId, Status};
use crate::deadline::Deadline;
use crate::error::{Context, Error};
use crate::handoff::{Handoff, HandoffError};
use crate::metrics::{self, Unit};
use crate::objects::{self, ObjectError, ObjectStore, ObjectVersion};
use crate::prediction_one::backoff;
use crate::prediction_one::retrain::TransferError;
use crate::prediction_one::{JobStatus, PredictionOneError, RetrainApi, UploadTicket};
use crate::request::{KeyRequest, Rejected, Served};
use crate::secrets::StoreError;
use crate::sensitive::{ApiKey, TaskToken};
use crate::transfer::{Payload, Progress};
use starts::{Found, Starts, Unclaimed};

pub use request::{Action, RetrainRequest};

/// The broker's adapters, a vendor client that also speaks the retraining
/// API, and an object store.
pub trait RunnerPorts: Ports<Issuer: RetrainApi> {
    type Objects: ObjectStore;
}

/// How long a task that Step Functions calls unknown (`InvalidToken`,
/// `TaskDoesNotExist`) is asked about again before it counts as gone.
const NOT_KNOWN_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// What the first check of a task found.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TaskCheck {
    /// Step Functions waits for it (or could not say: the work goes on).
    Waited,
    /// Gone for good, and why.
    Gone(String),
    /// Still unknown when the time left could not cover another question:
    /// the message goes back to the queue.
    NotKnownYet(String),
}

pub struct Runner<P: RunnerPorts> {
    broker: Broker<P>,
    objects: P::Objects,
}

/// A retry of the upload needs at least this long to be worth starting.
const MIN_UPLOAD: Duration = Duration::from_millis(100);
use keepalive::Stalled;
pub use keepalive::{HEARTBEAT_EVERY, STALL_AFTER};

/// What a job's raw status means (SPEC section 11): only `job_finished` is
/// documented; a status that mentions failure or error is taken as final.
pub fn state_of(status: &str) -> &'static str {
    let lower = status.trim().to_ascii_lowercase();
    if lower == "job_finished" {
        "finished"
    } else if lower.contains("fail") || lower.contains("error") {
        "failed"
    } else {
        "running"
    }
}

impl<P: RunnerPorts> Runner<P> {
    pub fn new(broker: Broker<P>, objects: P::Objects) -> Self {
        Runner { broker, objects }
    }

    pub fn config(&self) -> &Config {
        self.broker.config()
    }

    fn api(&self) -> &P::Issuer {
        self.broker.issuer()
    }

    /// Runs one action: its result object, or why it failed. `token`, when
    /// the request came with one, is heartbeated while transfers run.
    pub async fn run(
        &self,
        action: &Action,
        token: Option<&TaskToken>,
        deadline: &Deadline,
    ) -> Result<Value, Error> {
        if !deadline.can_start() {
            return Err(PredictionOneError::Timeout { attempts: 0 }.into());
        }
        // The transfers' futures are large (start records, the keep-alive,
        // the S3 and HTTP streams): on the heap, so that what awaits them
        // moves a pointer. Unoptimised builds (`cargo lambda watch`, the
        // tests) give every move of a future its own stack slot, and the
        // copies of a transfer through its wrappers overflowed a 2 MiB
        // thread stack.
        match action {
            Action::Start {
                bucket,
                key,
                version_id,
                model_id,
            } => {
                Box::pin(self.start(
                    bucket,
                    key,
                    version_id.as_deref(),
                    model_id,
                    token,
                    deadline,
                ))
                .await
            }
            Action::Status {
                model_id,
                retrain_job_id,
            } => self.status(model_id, retrain_job_id, deadline).await,
            Action::SaveResults {
                model_id,
                retrain_job_id,
                bucket,
                key,
            } => {
                Box::pin(self.save_results(model_id, retrain_job_id, bucket, key, token, deadline))
                    .await
            }
            Action::SwitchModel {
                model_id,
                retrain_job_id,
            } => self.switch_model(model_id, retrain_job_id, deadline).await,
        }
    }

    /// Runs a request and answers it: counted, and reported to Step
    /// Functions when it came with a task token.
    pub async fn answer(
        &self,
        request: &RetrainRequest,
        deadline: &Deadline,
    ) -> Result<Value, Error> {
        let model_id = request.action.model_id().as_str();
        let action = request.action.name();
        // A transfer asks first whether its task is still waited for (a
        // message SQS delivered again after its task timed out would make a
        // job, or move a file, for nobody). A quick action does not: its work
        // is a read or an idempotent switch, and its task has no heartbeat
        // limit to send a heartbeat to (LocalStack refuses one then).
        if let Some(token) = &request.task_token
            && request.action.is_transfer()
        {
            match check_task(self.broker.handoff(), token, deadline).await {
                TaskCheck::Waited => {}
                TaskCheck::Gone(reason) => {
                    tracing::warn!(action, subject = %request.action.subject(), reason = %reason, "dropped: Step Functions no longer waits for this task");
                    return Ok(json!({"action": action, "skipped": true, "reason": reason}));
                }
                TaskCheck::NotKnownYet(code) => {
                    tracing::warn!(action, subject = %request.action.subject(), code = %code, "the task is not known to Step Functions yet; the message goes back to the queue");
                    return Err(Error::HandOffFailed(Context::new(
                        format!(
                            "Step Functions does not know this {action} task yet ({code}), and there was no time to ask again for {} s: the message goes back to the queue",
                            NOT_KNOWN_FOR.as_secs()
                        ),
                        None,
                    )));
                }
            }
        }
        let outcome = self
            .run(&request.action, request.task_token.as_ref(), deadline)
            .await
            .inspect_err(|e| metrics::retrain_failed(Some(model_id), e));
        let Some(token) = &request.task_token else {
            return outcome;
        };
        crate::report::to_step_functions(
            self.broker.handoff(),
            token,
            outcome,
            || format!("the {action} action for model {model_id} succeeded"),
            |code| metrics::task_gone(Some(CredentialType::Retrain), code),
            deadline,
        )
        .await
    }

    /// The answer to a request that failed validation: reported to Step
    /// Functions when its task token could be read.
    pub async fn answer_rejected(
        &self,
        rejected: Rejected,
        deadline: &Deadline,
    ) -> Result<Value, Error> {
        metrics::retrain_failed(None, &rejected.error);
        let Some(token) = &rejected.task_token else {
            return Err(rejected.error);
        };
        crate::report::to_step_functions(
            self.broker.handoff(),
            token,
            Err(rejected.error),
            String::new,
            |code| metrics::task_gone(Some(CredentialType::Retrain), code),
            deadline,
        )
        .await
    }

    /// `start`, once per object (SPEC section 11, `starts`): the object
    /// found as written, its start claimed, the recorded job answered when
    /// an earlier start has one; else a new job, the upload, and the record.
    async fn start(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        model_id: &ModelId,
        token: Option<&TaskToken>,
        deadline: &Deadline,
    ) -> Result<Value, Error> {
        // Know before you create: the data must be found, be a data file
        // and not be empty before a job exists for it.
        let object = self.find_data(bucket, key, version_id, deadline).await?;
        let starts = Starts::new(&self.objects, &self.config().retrain_results_prefix);
        let claimed = starts
            // Waiting for another start's record: a heartbeat now and then.
            .claim(&object, model_id, deadline, || async {
                keepalive::heartbeat(self.broker.handoff(), token, deadline).await;
            })
            .await;
        let mut claim = match claimed {
            Ok(Found::Started {
                retrain_job_id,
                bytes,
            }) => {
                tracing::info!(model_id = model_id.as_str(), retrain_job_id = %retrain_job_id, "this object's retraining was started already; answering its job");
                return Ok(start_result(model_id, &retrain_job_id, bytes));
            }
            Ok(Found::Claimed(claim)) => claim,
            Err(Unclaimed::Busy(job)) => {
                return Err(PredictionOneError::UploadFailed {
                    attempts: 0,
                    detail: format!(
                        "another start of s3://{bucket}/{} is still uploading (retrain job {}); not started twice, try again later",
                        object.key,
                        job.as_deref().unwrap_or("not created yet")
                    ),
                }
                .into());
            }
            Err(Unclaimed::Store(e)) => {
                return Err(Error::StoreFailed(Context::new(
                    format!(
                        "cannot read or write the start record of s3://{bucket}/{} (under P1_RETRAIN_RESULTS_PREFIX {:?}: the role needs s3:GetObject, s3:PutObject and s3:ListBucket there); nothing was started",
                        object.key,
                        self.config().retrain_results_prefix
                    ),
                    StoreError::Other(e.to_string()),
                )));
            }
        };
        let started = self
            .start_claimed(&object, model_id, &starts, &mut claim, token, deadline)
            .await;
        match started {
            Ok((job, bytes)) => {
                if let Err(e) = starts.started(claim, &job, bytes, deadline).await {
                    // The job is started and uploaded; failing now would
                    // only make a retry start a second one.
                    tracing::error!(retrain_job_id = %job, error = %e, "the upload succeeded but its start record could not be written; a duplicate start of this object could start a second job");
                }
                Ok(start_result(model_id, &job, bytes))
            }
            Err(e) => {
                starts.release(claim, deadline).await;
                Err(e)
            }
        }
    }

    /// The claimed start's work: a new job, the data uploaded to it.
    async fn start_claimed(
        &self,
        object: &ObjectVersion,
        model_id: &ModelId,
        starts: &Starts<'_, P::Objects>,
        claim: &mut starts::Claim,
        token: Option<&TaskToken>,
        deadline: &Deadline,
    ) -> Result<(String, u64), Error> {
        let data = self.open_data(object, deadline).await?;
        // The vendor gets the file's own name, decoded, any Unicode
        // included (the client encodes it in the query).
        let filename = request::file_name(&object.key);
        let ticket: UploadTicket = self
            .with_key(model_id, deadline, |api_key| async move {
                self.api().upload_url(&api_key, filename, deadline).await
            })
            .await?;
        let retrain_job_id = ticket.retrain_job_id.clone();
        tracing::info!(model_id = model_id.as_str(), retrain_job_id = %retrain_job_id, "retrain job created; uploading the data");
        starts.job_created(claim, &retrain_job_id, deadline).await;
        let bytes = self.upload(object, data, &ticket, token, deadline).await?;
        tracing::info!(model_id = model_id.as_str(), retrain_job_id = %retrain_job_id, bytes, "data uploaded; retraining starts");
        metrics::retrain(
            model_id.as_str(),
            &[
                ("RetrainJobsStarted", 1.0, Unit::Count),
                ("UploadBytes", bytes as f64, Unit::Bytes),
            ],
        );
        Ok((retrain_job_id, bytes))
    }

    /// The data object a `start` names: found as S3 writes keys in its
    /// events (`objects::find_as_written`), of the version given, a data
    /// file, not empty.
    async fn find_data(
        &self,
        bucket: &str,
        key: &str,
        version_id: Option<&str>,
        deadline: &Deadline,
    ) -> Result<ObjectVersion, Error> {
        let version = version_id
            .map(|v| format!(" (version {v})"))
            .unwrap_or_default();
        let object = deadline
            .work(objects::find_as_written(
                &self.objects,
                bucket,
                key,
                version_id,
            ))
            .await
            .map_err(|e| {
                Error::DataUnavailable(Context::new(
                    format!("s3://{bucket}/{key}{version} cannot be read"),
                    e,
                ))
            })?;
        if !request::is_data_file(&object.key) {
            return Err(request::not_data(bucket, &object.key));
        }
        match object.length {
            Some(0) => Err(Error::DataUnavailable(Context::new(
                format!("s3://{bucket}/{}{version} is empty", object.key),
                None,
            ))),
            _ => Ok(object),
        }
    }

    /// That very version of the data object, opened: readable, of known
    /// length, not empty.
    async fn open_data(
        &self,
        object: &ObjectVersion,
        deadline: &Deadline,
    ) -> Result<Payload, Error> {
        let unavailable = |problem: &str, e: Option<ObjectError>| {
            Error::DataUnavailable(Context::new(
                format!("s3://{}/{} {problem}", object.bucket, object.key),
                e,
            ))
        };
        let data = deadline
            .work(self.objects.open(object))
            .await
            .map_err(|e| match e {
                ObjectError::Conflict(_) => unavailable("was replaced while being read", Some(e)),
                e => unavailable("cannot be read", Some(e)),
            })?;
        match data.length {
            Some(0) => Err(unavailable("is empty", None)),
            None => Err(unavailable("has no known length", None)),
            Some(_) => Ok(data),
        }
    }

    /// PUTs the data to the job's upload URL, heartbeating the task and
    /// watching for a stall. 5xx, broken or stalled connections are retried
    /// (the object is read again from S3 for each attempt) while attempts
    /// and time are left; a 4xx refusal is `UploadRefused`, never retried.
    async fn upload(
        &self,
        object: &ObjectVersion,
        first: Payload,
        ticket: &UploadTicket,
        token: Option<&TaskToken>,
        deadline: &Deadline,
    ) -> Result<u64, Error> {
        let max_attempts = self.config().max_attempts;
        let mut next = Some(first);
        let mut attempts = 0;
        let mut last = String::new();
        loop {
            let data = match next.take() {
                Some(data) => data,
                // The upload's failure is the news, not the re-read's.
                None => self.open_data(object, deadline).await.map_err(|e| {
                    PredictionOneError::UploadFailed {
                        attempts,
                        detail: format!("{last}; reading the data again failed: {}", e.report()),
                    }
                })?,
            };
            let length = data.length.unwrap_or_default();
            attempts += 1;
            let progress = Progress::default();
            let sent = keepalive::keep_alive(
                self.broker.handoff(),
                token,
                &progress,
                Some(length),
                deadline,
                // Boxed: moved by pointer through the keep-alive (see run).
                Box::pin(
                    self.api()
                        .upload(&ticket.upload_url, data.watched(&progress), deadline),
                ),
            )
            .await;
            let failure = match sent {
                Ok(Ok(())) => return Ok(length),
                Ok(Err(failure)) => failure,
                Err(Stalled) => TransferError::Retryable(format!(
                    "the upload stalled: no byte moved for {} s ({} of {length} bytes sent)",
                    STALL_AFTER.as_secs(),
                    progress.bytes()
                )),
            };
            let failed = |detail: &str| {
                Error::from(PredictionOneError::UploadFailed {
                    attempts,
                    detail: detail.to_string(),
                })
            };
            let detail = match &failure {
                // An unsafe URL from the vendor: nothing was sent, and a new
                // job would get another one like it.
                TransferError::Unusable(d) => {
                    return Err(PredictionOneError::MalformedResponse(d.clone()).into());
                }
                TransferError::Refused(d) => {
                    return Err(PredictionOneError::UploadRefused { detail: d.clone() }.into());
                }
                TransferError::Permanent(d) => return Err(failed(d)),
                TransferError::Retryable(d) => d,
            };
            last = detail.clone();
            tracing::warn!(attempt = attempts, retrain_job_id = %ticket.retrain_job_id, "upload failed transiently: {detail}");
            let wait = backoff::jittered(attempts + 1);
            if attempts >= max_attempts || wait + MIN_UPLOAD > deadline.work_left() {
                return Err(failed(detail));
            }
            tokio::time::sleep(wait).await;
        }
    }

    async fn status(
        &self,
        model_id: &ModelId,
        job: &str,
        deadline: &Deadline,
    ) -> Result<Value, Error> {
        let status = self.job_status(model_id, job, deadline).await?;
        let state = state_of(&status.status);
        match state {
            "finished" => metrics::retrain(
                model_id.as_str(),
                &[("RetrainJobsFinished", 1.0, Unit::Count)],
            ),
            "failed" => metrics::retrain(
                model_id.as_str(),
                &[("RetrainJobsFailed", 1.0, Unit::Count)],
            ),
            _ => {}
        }
        tracing::info!(model_id = model_id.as_str(), retrain_job_id = job, state, status = %status.status, "retrain job status");
        Ok(json!({
            "action": "status",
            "model_id": model_id.as_str(),
            "retrain_job_id": job,
            "state": state,
            "status": status.status,
            "message": status.message,
        }))
    }

    async fn save_results(
        &self,
        model_id: &ModelId,
        job: &str,
        bucket: &str,
        key: &str,
        token: Option<&TaskToken>,
        deadline: &Deadline,
    ) -> Result<Value, Error> {
        let status = self.job_status(model_id, job, deadline).await?;
        if state_of(&status.status) != "finished" {
            tracing::info!(status = %status.status, "the job is not finished; no results yet");
            return Err(PredictionOneError::RetrainNotFinished.into());
        }
        let Some(url) = &status.download_url else {
            return Err(Error::ResultsUnavailable(format!(
                "retrain job {job} is finished but Prediction One gave no download_url"
            )));
        };
        let mut results = self.api().download(url, deadline).await.map_err(|e| {
            Error::ResultsUnavailable(format!(
                "fetching the results of retrain job {job} failed: {}",
                e.detail()
            ))
        })?;
        // Whether the download broke while S3 was reading it: S3's error
        // then is only the symptom.
        let broken = Arc::new(AtomicBool::new(false));
        let noticed = broken.clone();
        results.body = results
            .body
            .map_err(move |e| {
                noticed.store(true, Ordering::Relaxed);
                e
            })
            .boxed();
        // The download ends by the work point (its own timeout); saving what
        // it gave, or aborting a multipart upload it broke, may use the
        // margin after it. Heartbeats meanwhile, and a stall ends it.
        let progress = Progress::default();
        let expected = results.length;
        let saved = keepalive::keep_alive(
                self.broker.handoff(),
                token,
                &progress,
                expected,
                deadline,
                // Boxed: moved by pointer through the keep-alive (see run).
                Box::pin(deadline.finish(self.objects.save(
                    bucket,
                    key,
                    results.watched(&progress),
                ))),
            )
            .await
            .map_err(|Stalled| {
                Error::ResultsUnavailable(format!(
                    "saving the results of retrain job {job} to s3://{bucket}/{key} stalled: no byte moved for {} s ({} bytes moved)",
                    STALL_AFTER.as_secs(),
                    progress.bytes()
                ))
            })?;
        let bytes = saved.map_err(|e| match e {
                _ if broken.load(Ordering::Relaxed) => Error::ResultsUnavailable(format!(
                    "the results of retrain job {job} were cut short while being saved to s3://{bucket}/{key}"
                )),
                ObjectError::Source(_) | ObjectError::TimedOut => Error::ResultsUnavailable(format!(
                    "fetching the results of retrain job {job} into s3://{bucket}/{key} failed: {e}"
                )),
                ObjectError::AccessDenied(d) => Error::StoreFailed(Context::new(
                    format!("cannot write the results to s3://{bucket}/{key}"),
                    StoreError::AccessDenied(d),
                )),
                other => Error::StoreFailed(Context::new(
                    format!("cannot write the results to s3://{bucket}/{key}"),
                    StoreError::Other(other.to_string()),
                )),
            })?;
        tracing::info!(
            model_id = model_id.as_str(),
            retrain_job_id = job,
            bytes,
            "results saved"
        );
        Ok(json!({"action": "save_results", "bucket": bucket, "key": key, "bytes": bytes}))
    }

    async fn switch_model(
        &self,
        model_id: &ModelId,
        job: &str,
        deadline: &Deadline,
    ) -> Result<Value, Error> {
        self.with_key(model_id, deadline, |api_key| async move {
            self.api().update_model(&api_key, job, deadline).await
        })
        .await?;
        tracing::info!(
            model_id = model_id.as_str(),
            retrain_job_id = job,
            "model API switched to the retrained model"
        );
        metrics::retrain(model_id.as_str(), &[("ModelsSwitched", 1.0, Unit::Count)]);
        Ok(json!({
            "action": "switch_model",
            "model_id": model_id.as_str(),
            "retrain_job_id": job,
            "switched": true,
        }))
    }

    /// One status call for a job.
    async fn job_status(
        &self,
        model_id: &ModelId,
        job: &str,
        deadline: &Deadline,
    ) -> Result<JobStatus, Error> {
        self.with_key(model_id, deadline, |api_key| async move {
            self.api().job_status(&api_key, job, deadline).await
        })
        .await
    }

    /// Makes a retraining `call` with the model's retrain key. A stored
    /// key that the call refuses as a credential is replaced once (a new
    /// key, stored first) and the call tried once more with it; a key just
    /// issued is not replaced again.
    async fn with_key<T, F, Fut>(
        &self,
        model_id: &ModelId,
        deadline: &Deadline,
        call: F,
    ) -> Result<T, Error>
    where
        F: Fn(ApiKey) -> Fut,
        Fut: Future<Output = Result<T, PredictionOneError>>,
    {
        let served = self.retrain_key(model_id, false, deadline).await?;
        match call(served.api_key.clone()).await {
            Err(e) if e.is_credential_error() && served.result.status == Status::Fresh => {
                tracing::info!(
                    model_id = model_id.as_str(),
                    error_type = e.error_type(),
                    "the stored retrain key was refused; issuing a new one and retrying once"
                );
                let renewed = self.retrain_key(model_id, true, deadline).await?;
                call(renewed.api_key.clone()).await.map_err(Error::from)
            }
            other => other.map_err(Error::from),
        }
    }

    /// The model's retrain key through the broker's use case, as a
    /// `retrain` request for the model's default target would get it.
    async fn retrain_key(
        &self,
        model_id: &ModelId,
        force: bool,
        deadline: &Deadline,
    ) -> Result<Served, Error> {
        let request = KeyRequest {
            credential: Credential::new(CredentialType::Retrain, Some(model_id.clone())),
            target_secret_id: self
                .config()
                .default_target(CredentialType::Retrain, Some(model_id)),
            force,
            task_token: None,
            include_key: false,
        };
        let served = self.broker.serve(&request, deadline).await?;
        served.count();
        Ok(served)
    }
}

/// `start`'s result object.
fn start_result(model_id: &ModelId, retrain_job_id: &str, bytes: u64) -> Value {
    json!({
        "action": "start",
        "model_id": model_id.as_str(),
        "retrain_job_id": retrain_job_id,
        "bytes": bytes,
    })
}

/// Whether Step Functions still waits for this task: a message SQS
/// delivered again after its task timed out would make a job, or move a
/// file, for nobody. Asked with a heartbeat (SPEC section 10, "a token
/// not known yet is not a task gone"): `TaskTimedOut` proves at once
/// that the task is gone; `InvalidToken` or `TaskDoesNotExist` may only
/// mean that the task behind a message just sent is not registered yet
/// (LocalStack answers so for seconds), so they are asked again, with
/// backoff, for [`NOT_KNOWN_FOR`] before the task counts as gone; when
/// the time left cannot cover that, the message goes back to the queue.
/// A heartbeat that fails otherwise (throttling, 5xx) does not stop the
/// work.
async fn check_task(handoff: &impl Handoff, token: &TaskToken, deadline: &Deadline) -> TaskCheck {
    let first = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(250);
    loop {
        match deadline.work(handoff.task_heartbeat(token)).await {
            Ok(()) => return TaskCheck::Waited,
            Err(HandoffError::TaskGone { code, .. })
                if code == "TaskTimedOut" || first.elapsed() >= NOT_KNOWN_FOR =>
            {
                metrics::task_gone(Some(CredentialType::Retrain), &code);
                return TaskCheck::Gone(format!(
                    "Step Functions no longer waits for this task ({code}); nothing was done"
                ));
            }
            Err(HandoffError::TaskGone { code, .. }) => {
                let wait = pause.min(NOT_KNOWN_FOR.saturating_sub(first.elapsed()));
                if deadline.work_left() < wait + crate::deadline::MIN_START {
                    return TaskCheck::NotKnownYet(code);
                }
                tracing::info!(code = %code, wait_ms = wait.as_millis() as u64, "the task is not known yet; asking again");
                tokio::time::sleep(wait).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(2));
            }
            Err(e) => {
                tracing::warn!(error = %e, "the heartbeat failed; working anyway");
                return TaskCheck::Waited;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gone(code: &str) -> HandoffError {
        HandoffError::TaskGone {
            operation: "SendTaskHeartbeat",
            code: code.into(),
            detail: String::new(),
        }
    }

    /// A Step Functions stand-in whose next heartbeats answer `codes`.
    fn answering<'a>(codes: impl IntoIterator<Item = &'a str>) -> crate::fakes::FakeHandoff {
        let h = crate::fakes::FakeHandoff::default();
        h.heartbeat_answers
            .lock()
            .unwrap()
            .extend(codes.into_iter().map(gone));
        h
    }

    #[tokio::test]
    async fn a_task_not_known_yet_is_asked_again_and_a_timed_out_one_is_gone_at_once() {
        let token = TaskToken::new("TT");
        let long = Deadline::after(
            std::time::Duration::from_secs(60),
            std::time::Duration::from_secs(2),
        );
        // Unknown twice, then known: the work goes on (three heartbeats).
        let h = answering(["InvalidToken", "TaskDoesNotExist"]);
        assert_eq!(check_task(&h, &token, &long).await, TaskCheck::Waited);
        assert_eq!(*h.heartbeats.lock().unwrap(), 3);
        // Timed out: gone at the first answer.
        let h = answering(["TaskTimedOut", "TaskTimedOut"]);
        assert!(
            matches!(check_task(&h, &token, &long).await, TaskCheck::Gone(r) if r.contains("TaskTimedOut"))
        );
        assert_eq!(*h.heartbeats.lock().unwrap(), 1);
        // Unknown with too little time to ask again: back to the queue.
        let h = answering(["InvalidToken"]);
        let short = Deadline::after(
            std::time::Duration::from_millis(2_200),
            std::time::Duration::from_secs(2),
        );
        assert_eq!(
            check_task(&h, &token, &short).await,
            TaskCheck::NotKnownYet("InvalidToken".into())
        );
    }

    /// Real time (about 10 s): the rule's own figure.
    #[tokio::test]
    async fn a_task_still_unknown_after_ten_seconds_is_gone() {
        let token = TaskToken::new("TT");
        let long = Deadline::after(
            std::time::Duration::from_secs(60),
            std::time::Duration::from_secs(2),
        );
        let h = answering(["InvalidToken"; 100]);
        let started = tokio::time::Instant::now();
        assert!(
            matches!(check_task(&h, &token, &long).await, TaskCheck::Gone(r) if r.contains("InvalidToken"))
        );
        assert!(
            started.elapsed() >= NOT_KNOWN_FOR,
            "{:?}",
            started.elapsed()
        );
        assert!(*h.heartbeats.lock().unwrap() >= 5);
    }

    #[test]
    fn job_states_follow_the_contract() {
        for (status, state) in [
            ("job_finished", "finished"),
            ("JOB_FINISHED", "finished"),
            ("job_failed", "failed"),
            ("Error occurred", "failed"),
            ("FAILURE", "failed"),
            ("running", "running"),
            ("waiting_upload", "running"),
            ("", "running"),
        ] {
            assert_eq!(state_of(status), state, "{status}");
        }
    }
}

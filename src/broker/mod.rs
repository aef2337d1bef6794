//! The use case: serve a request with the stored key when it is fresh, or
//! issue, store and announce a new one; answer (and report to Step
//! Functions); run Secrets Manager's rotation steps on the same rules.
//!
//! [`Broker`] is closed: its ports and configuration are private, and the
//! entry points (`handler`, `batch`) call only its methods:
//! [`Broker::serve`], [`Broker::answer`] / [`Broker::answer_rejected`]
//! (`answer.rs`), [`Broker::rotate`] (`rotation.rs`) and [`Broker::sweep`]
//! (`sweep.rs`). The ports are
//! traits, bundled in [`Ports`] so that code generic over the adapters
//! names one bound; `App` is the broker on its AWS and HTTP adapters.

mod answer;
mod rotation;
pub mod sweep;

use std::time::Instant;

use chrono::Utc;

use crate::config::Config;
use crate::credential::{Credential, Status};
use crate::deadline::Deadline;
use crate::error::{Context, Error};
use crate::handoff::Handoff;
use crate::prediction_one::{IssuedKey, KeyIssuer, PredictionOneError};
use crate::request::{KeyRequest, KeyResult, Served};
use crate::secret_id;
use crate::secret_key::SecretKeySource;
use crate::secrets::{
    AWSCURRENT, KeyRecord, NewSecret, NewVersion, P1ANNOUNCED, SecretStore, SecretValue,
    StoreError, VersionRef, new_version_id, renewal_token,
};

/// The adapters a broker runs on: one type names all three.
pub trait Ports: 'static {
    type Issuer: KeyIssuer;
    type Store: SecretStore;
    type Handoff: Handoff;
}

pub struct Broker<P: Ports> {
    config: Config,
    issuer: P::Issuer,
    store: P::Store,
    handoff: P::Handoff,
    secret_key: SecretKeySource,
}

impl<P: Ports> Broker<P> {
    pub fn new(config: Config, issuer: P::Issuer, store: P::Store, handoff: P::Handoff) -> Self {
        let secret_key = SecretKeySource::new(
            config.secret_key_secret_id.clone(),
            config.secret_key_field.clone(),
            config.secret_key_cache_ttl,
        );
        Broker {
            config,
            issuer,
            store,
            handoff,
            secret_key,
        }
    }

    /// The configuration the broker runs with (requests are validated
    /// against it).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The vendor client (the retrain runner makes its retraining calls
    /// with the same one).
    pub(crate) fn issuer(&self) -> &P::Issuer {
        &self.issuer
    }

    /// The Step Functions adapter (the retrain runner reports with it).
    pub(crate) fn handoff(&self) -> &P::Handoff {
        &self.handoff
    }

    /// One request: `fresh` when the target's current key outlives the
    /// renewal margin (and `force` is off), else a new key, stored and
    /// announced. Ends by the deadline: its reads and the vendor call by the
    /// work point, storing and announcing a fetched key by the finish point.
    pub async fn serve(&self, request: &KeyRequest, deadline: &Deadline) -> Result<Served, Error> {
        // Out of time before it has a key: the contract's answer, and no
        // call that could only be cut short (SPEC section 10).
        if !deadline.can_start() {
            return Err(PredictionOneError::Timeout { attempts: 0 }.into());
        }
        let target = &request.target_secret_id;
        let current = self.read_target(target, deadline).await?;
        if !request.force
            && let Some(current) = current.as_ref()
            && let Some(served) = self.fresh(request, current, deadline).await?
        {
            tracing::info!(target_secret = %target, version_id = %served.result.version_id, "stored key is fresh");
            return Ok(served);
        }
        // Whatever name or ARN the request used, never write over the
        // account's secret key.
        if let Some(current) = &current
            && self.is_secret_key_secret(&current.arn, deadline).await?
        {
            return Err(Error::invalid(
                "target_secret_id must not be the secret that holds the Prediction One secret key",
            ));
        }
        // Know before you fetch: a key is never issued to be thrown away.
        let exists = match &current {
            Some(_) => true,
            None => self.target_exists(target, deadline).await?,
        };
        if !exists {
            self.check_creatable(target)?;
        }

        let (issued, vendor_latency_ms) = match self.issue_key(&request.credential, deadline).await
        {
            Ok(issued) => issued,
            Err(e) => {
                if exists && e.stops_renewal() {
                    let on = current.as_ref().map_or(target.as_str(), |c| c.arn.as_str());
                    self.mark_stopped(on, &e, deadline).await;
                }
                return Err(e);
            }
        };
        let record = KeyRecord::issued(
            issued.api_key,
            issued.end_date,
            request.credential.clone(),
            Utc::now(),
        );
        let stored = match self
            .store_new_key(target, &record, exists, current.as_ref(), deadline)
            .await?
        {
            Stored::Ours(stored) => stored,
            Stored::Theirs(winner) => {
                return self.lost_to(target, winner, vendor_latency_ms);
            }
        };
        tracing::info!(target_secret = %target, version_id = %stored.version_id, "issued and stored a new key");
        if request.force {
            // A forced key that was stored: the model is back (SPEC 12).
            self.clear_stopped(&stored.arn, deadline).await;
        }

        let served = Served {
            result: result_of(Status::Issued, &record, stored),
            api_key: record.api_key,
            vendor_latency_ms: Some(vendor_latency_ms),
        };
        self.announce(target, &served.result, deadline).await?;
        Ok(served)
    }

    /// How long before its expiry a target's key is renewed:
    /// `P1_RENEW_BEFORE_SECONDS` plus the secret's share of the sweep's
    /// jitter window, the same for every renewer (SPEC section 12).
    fn renew_window(&self, arn: &str) -> std::time::Duration {
        self.config.renew_before + crate::expiry::spread(arn, self.config.sweep_jitter)
    }

    /// Another renewal of the target stored its key under the same token
    /// first (SPEC section 12, "one renewal wins"): this one answers
    /// `fresh` with the winner's version; its own key is discarded, and the
    /// answer says so.
    fn lost_to(
        &self,
        target: &str,
        winner: SecretValue,
        vendor_latency_ms: u64,
    ) -> Result<Served, Error> {
        let Some(record) = winner.secret_string.as_ref().and_then(KeyRecord::parse) else {
            return Err(Error::StoreFailed(Context::new(
                format!(
                    "a new key was issued, but another renewal of {target:?} stored first and its value is not a key record; this key was discarded"
                ),
                None,
            )));
        };
        tracing::info!(target_secret = %target, version_id = %winner.version_id, "another renewal of the target stored first; this one's key was discarded");
        let mut result = result_of(
            Status::Fresh,
            &record,
            VersionRef {
                arn: winner.arn,
                version_id: winner.version_id,
            },
        );
        result.discarded = true;
        Ok(Served {
            result,
            api_key: record.api_key,
            vendor_latency_ms: Some(vendor_latency_ms),
        })
    }

    /// Marks a target whose renewal failed for good (the model or user is
    /// gone), so that later sweeps skip it until a forced request succeeds.
    /// Best effort: a mark that cannot be written is logged.
    async fn mark_stopped(&self, target: &str, e: &Error, deadline: &Deadline) {
        let value = format!("{} {}", e.error_type(), Utc::now().format("%Y-%m-%d"));
        match deadline
            .finish(self.store.tag(target, STOPPED_TAG, &value))
            .await
        {
            Ok(()) => {
                crate::metrics::renewal_stopped();
                tracing::warn!(target_secret = %target, mark = %value, "renewal stopped: sweeps skip this secret until a request with force succeeds");
            }
            Err(err) => {
                tracing::warn!(target_secret = %target, error = %err, "cannot mark the secret's renewal as stopped")
            }
        }
    }

    async fn clear_stopped(&self, target: &str, deadline: &Deadline) {
        if let Err(err) = deadline.finish(self.store.untag(target, STOPPED_TAG)).await {
            tracing::warn!(target_secret = %target, error = %err, "cannot remove a stopped-renewal mark");
        }
    }

    /// The target's AWSCURRENT version, or `None` when it has none.
    async fn read_target(
        &self,
        target: &str,
        deadline: &Deadline,
    ) -> Result<Option<SecretValue>, Error> {
        match deadline
            .work(self.store.get_value(target, AWSCURRENT, None))
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(Error::StoreFailed(Context::new(
                format!("cannot read the target secret {target:?}"),
                e,
            ))),
        }
    }

    /// Whether a target without a current value exists at all (it may have
    /// been created without one).
    async fn target_exists(&self, target: &str, deadline: &Deadline) -> Result<bool, Error> {
        match deadline.work(self.store.describe(target)).await {
            Ok(_) => Ok(true),
            Err(StoreError::NotFound(_)) => Ok(false),
            Err(e) => Err(Error::StoreFailed(Context::new(
                format!("cannot read the target secret {target:?}"),
                e,
            ))),
        }
    }

    /// A missing target can be created: allowed, and named by a name.
    fn check_creatable(&self, target: &str) -> Result<(), Error> {
        let problem = if !self.config.create_missing_secret {
            "does not exist and P1_CREATE_MISSING_SECRET is false"
        } else if target.starts_with("arn:") {
            "does not exist; a secret can be created from a name, not an ARN"
        } else {
            return Ok(());
        };
        Err(Error::StoreFailed(Context::new(
            format!("the target secret {target:?} {problem}; no key was issued"),
            None,
        )))
    }

    /// Asks the vendor for a key. A refused secret key is re-read once: if
    /// the secret now holds a different one, the call is tried with it.
    /// Also returns the time spent in vendor calls (`VendorLatencyMs`).
    async fn issue_key(
        &self,
        credential: &Credential,
        deadline: &Deadline,
    ) -> Result<(IssuedKey, u64), Error> {
        let (secret_key, _) = self.secret_key.current(&self.store, deadline).await?;
        let started = Instant::now();
        let first = self
            .issuer
            .get_api_key(&secret_key, credential, deadline)
            .await;
        let mut vendor_ms = started.elapsed().as_millis() as u64;
        let issued = match first {
            Err(e) if e.is_credential_error() => {
                match self
                    .secret_key
                    .refresh_after_refusal(&self.store, &secret_key, deadline)
                    .await?
                {
                    Some(newer) => {
                        tracing::info!(
                            "secret key was refused; retrying once with the newly read one"
                        );
                        let started = Instant::now();
                        let retried = self.issuer.get_api_key(&newer, credential, deadline).await;
                        vendor_ms += started.elapsed().as_millis() as u64;
                        retried
                    }
                    None => Err(e),
                }
            }
            other => other,
        }?;
        Ok((issued, vendor_ms))
    }

    /// Whether `arn` is the secret that holds the Prediction One secret key
    /// (compared with the ARN the key was read from, whatever name or ARN
    /// the configuration or a request used).
    async fn is_secret_key_secret(&self, arn: &str, deadline: &Deadline) -> Result<bool, Error> {
        let (_, key_arn) = self.secret_key.current(&self.store, deadline).await?;
        Ok(secret_id::same_secret(arn, &key_arn))
    }

    /// The target's current record, when it is fresh for this request.
    async fn fresh(
        &self,
        request: &KeyRequest,
        current: &SecretValue,
        deadline: &Deadline,
    ) -> Result<Option<Served>, Error> {
        let target = &request.target_secret_id;
        let Some(record) = current.secret_string.as_ref().and_then(KeyRecord::parse) else {
            return Ok(None);
        };
        if !record.is_fresh_for(
            &request.credential,
            Utc::now(),
            self.renew_window(&current.arn),
        ) {
            return Ok(None);
        }
        let announced = current.stages.iter().any(|s| s == P1ANNOUNCED);
        let version = VersionRef {
            arn: current.arn.clone(),
            version_id: current.version_id.clone(),
        };
        let served = Served {
            result: result_of(Status::Fresh, &record, version),
            api_key: record.api_key,
            vendor_latency_ms: None,
        };
        if !announced {
            // An earlier announcement of this version failed: complete it now.
            self.announce(target, &served.result, deadline).await?;
        }
        Ok(Some(served))
    }

    /// Stores a fetched key as the target's new AWSCURRENT version, within
    /// the margin kept for it, and says honestly what became of it: a write
    /// whose answer was lost (a timeout, a broken connection, a 5xx) may
    /// have landed, so the target is read back for the version before the
    /// key is called discarded (SPEC section 10).
    async fn store_new_key(
        &self,
        target: &str,
        record: &KeyRecord,
        exists: bool,
        based_on: Option<&SecretValue>,
        deadline: &Deadline,
    ) -> Result<Stored, Error> {
        // One renewal wins: the token is the same for every renewal that
        // read the same current version (SPEC section 12).
        let version_id = match based_on {
            Some(current) => renewal_token(&current.arn, Some(&current.version_id)),
            None => renewal_token(secret_id::name_of(target), None),
        };
        // A quarter of the margin (at most READ_BACK) stays for the read-back.
        let reserve = (deadline.finish_left() / 4).min(READ_BACK);
        let written = self
            .store_record(target, record, exists, &version_id, reserve, deadline)
            .await;
        let failure = match written {
            Ok(stored) => return Ok(Stored::Ours(stored)),
            Err(e) => e,
        };
        let issued = "a new key was issued but";
        if matches!(failure, StoreError::Exists(_)) {
            // The token holds another value: another renewal's, stored first.
            let winner = match deadline
                .finish(self.store.get_value(target, AWSCURRENT, None))
                .await
            {
                Ok(winner) => winner,
                Err(e) => {
                    return Err(Error::StoreFailed(Context::new(
                        format!(
                            "{issued} another renewal of {target:?} stored first, and the secret could not be read back; this key was discarded"
                        ),
                        e,
                    )));
                }
            };
            // Unless the version read is still current: then the token's
            // version is an old renewal that someone rolled back (the
            // AWSCURRENT label moved back by hand), not a winner, and the
            // key is written under a token of its own.
            if based_on.is_some_and(|b| b.version_id == winner.version_id) {
                tracing::warn!(target_secret = %target, "the renewal's token names a version that is no longer current (rolled back?); writing under a new one");
                let fresh_id = new_version_id();
                return self
                    .store_record(target, record, true, &fresh_id, reserve, deadline)
                    .await
                    .map(Stored::Ours)
                    .map_err(|e| {
                        Error::StoreFailed(Context::new(
                            format!(
                                "{issued} could not be stored in {target:?}, so it was discarded"
                            ),
                            e,
                        ))
                    });
            }
            return Ok(Stored::Theirs(winner));
        }
        if !failure.outcome_unknown() {
            return Err(Error::StoreFailed(Context::new(
                format!(
                    "{issued} could not be stored in {target:?}, so it was discarded (the same request retried issues another)"
                ),
                failure,
            )));
        }
        // The version the token names may be ours, or a concurrent
        // renewal's (the same token): its value tells.
        match deadline
            .finish(self.store.get_value(target, AWSCURRENT, Some(&version_id)))
            .await
        {
            Ok(found) => {
                let ours = found
                    .secret_string
                    .as_ref()
                    .and_then(KeyRecord::parse)
                    .is_some_and(|r| r.api_key.expose() == record.api_key.expose());
                if !ours {
                    return Ok(Stored::Theirs(found));
                }
                tracing::warn!(target_secret = %target, version_id = %version_id, error = %failure, "the write's answer was lost, but the target holds the new version");
                Ok(Stored::Ours(VersionRef {
                    arn: found.arn,
                    version_id,
                }))
            }
            Err(StoreError::NotFound(_)) => Err(Error::StoreFailed(Context::new(
                format!(
                    "{issued} storing it in {target:?} failed, and reading the secret back shows no version {version_id}, so it was discarded (the same request retried issues another)"
                ),
                failure,
            ))),
            Err(_) => Err(Error::StoreFailed(Context::new(
                format!(
                    "{issued} storing it in {target:?} failed without an answer, and there was no time to read the secret back: whether it is stored is unknown (it would be version {version_id}; the same request retried finds it fresh if it is)"
                ),
                failure,
            ))),
        }
    }

    /// Writes a record as the target's new AWSCURRENT version `version_id`,
    /// creating the secret when it was found missing (creatable: checked
    /// before the key was fetched). Runs in the margin kept for a fetched
    /// key, keeping `reserve` of it.
    async fn store_record(
        &self,
        target: &str,
        record: &KeyRecord,
        exists: bool,
        version_id: &str,
        reserve: std::time::Duration,
        deadline: &Deadline,
    ) -> Result<VersionRef, StoreError> {
        let value = record.to_secret_string()?;
        let version = NewVersion::current(&value, version_id);
        let put = || deadline.finish_keeping(reserve, self.store.put_value(target, &version));
        if exists {
            match put().await {
                // Deleted since it was read: create it again if allowed.
                Err(StoreError::NotFound(_)) if self.check_creatable(target).is_ok() => {}
                other => return other,
            }
        }
        let mut tags = vec![
            (
                "p1:credential_type".to_string(),
                record.credential.credential_type.as_str().to_string(),
            ),
            (MANAGED_TAG.0.to_string(), MANAGED_TAG.1.to_string()),
            // Whose: the sweep renews tagged secrets of this secret key only
            // (two stacks in one account must not renew each other's).
            (OWNER_TAG.to_string(), self.config.owner_tag_value()),
        ];
        if let Some(model_id) = &record.credential.model_id {
            tags.push(("p1:model_id".to_string(), model_id.as_str().to_string()));
        }
        let new = NewSecret {
            tags,
            kms_key_id: self.config.target_kms_key_id.clone(),
            client_request_token: Some(version_id.to_string()),
        };
        match deadline
            .finish_keeping(reserve, self.store.create(target, &value, &new))
            .await
        {
            Ok(v) => {
                tracing::info!(target_secret = %target, "created the missing target secret");
                Ok(v)
            }
            // Created concurrently by another invocation: write a version to it.
            Err(StoreError::Exists(_)) => put().await,
            Err(e) => Err(e),
        }
    }
}

/// The tag every secret this function creates carries, by which the sweep
/// finds those outside the configured names.
pub const MANAGED_TAG: (&str, &str) = ("managed-by", "p1-key-broker");

/// The tag naming, on a secret this function creates, the secret that holds
/// the secret key its keys come from.
pub const OWNER_TAG: &str = "p1:secret_key_secret";

/// The tag on a secret whose renewal failed for good (the errorType and the
/// date): sweeps skip it until a request with `force` succeeds.
pub const STOPPED_TAG: &str = "p1:renewal-stopped";

/// What became of a fetched key.
enum Stored {
    /// Stored as this version.
    Ours(VersionRef),
    /// Another renewal stored first under the same token: its version.
    Theirs(SecretValue),
}

/// The most of the margin kept for reading back a write whose answer was
/// lost: one DescribeSecret.
const READ_BACK: std::time::Duration = std::time::Duration::from_millis(500);

fn result_of(status: Status, record: &KeyRecord, version: VersionRef) -> KeyResult {
    KeyResult {
        status,
        credential_type: record.credential.credential_type,
        model_id: record.credential.model_id.clone(),
        secret_arn: version.arn,
        version_id: version.version_id,
        end_date: record.end_date.clone(),
        expires_at: record.expires_at.clone(),
        discarded: false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::credential::CredentialType;
    use crate::fakes::{FakeIssuer, FakeStore, broker};

    fn deadline() -> Deadline {
        Deadline::after(Duration::from_secs(30), Duration::from_secs(2))
    }

    fn request(b: &Broker<crate::fakes::Fakes>) -> KeyRequest {
        let Ok(r) = KeyRequest::parse(&json!({"credential_type": "train"}), b.config()) else {
            panic!("a train request is valid")
        };
        r
    }

    #[tokio::test]
    async fn a_target_created_concurrently_is_written_to() {
        let store = FakeStore::with_secret_key("sk-1");
        store.fail_once("create", StoreError::Exists("raced".into()));
        // The other invocation's secret appears between our put and create.
        store
            .values
            .lock()
            .unwrap()
            .insert("prediction-one/api-key/train".into(), vec![]);
        store.fail_once("put", StoreError::NotFound("not yet".into()));
        let b = broker(store, FakeIssuer::default(), &[]);
        let served = b.serve(&request(&b), &deadline()).await.unwrap();
        assert_eq!(served.result.status, Status::Issued);
        // Read the target (no current value), see that it exists, read the
        // secret key, put (gone meanwhile), create (raced), put.
        assert_eq!(
            *b.store.calls.lock().unwrap(),
            ["get", "describe", "get", "put", "create", "put"]
        );
    }

    #[tokio::test]
    async fn a_target_that_cannot_be_written_is_known_before_the_vendor_call() {
        for (extra, arn) in [
            (&[("P1_CREATE_MISSING_SECRET", "false")][..], false),
            (&[][..], true),
        ] {
            let b = broker(
                FakeStore::with_secret_key("sk-1"),
                FakeIssuer::default(),
                extra,
            );
            let mut r = request(&b);
            if arn {
                r.target_secret_id =
                    "arn:aws:secretsmanager:us-east-1:1:secret:missing-AbCdEf".into();
            }
            let err = b.serve(&r, &deadline()).await.unwrap_err();
            assert_eq!(err.error_type(), "StoreFailed");
            assert!(
                err.report().contains("no key was issued"),
                "{}",
                err.report()
            );
            assert!(
                b.issuer.used.lock().unwrap().is_empty(),
                "the vendor was called"
            );
        }
    }

    #[tokio::test]
    async fn a_request_without_time_to_start_answers_timeout_and_calls_nothing() {
        let b = broker(
            FakeStore::with_secret_key("sk-1"),
            FakeIssuer::default(),
            &[],
        );
        // A margin larger than the time left: no work time at all.
        let d = Deadline::after(Duration::from_millis(500), Duration::from_secs(2));
        let err = b.serve(&request(&b), &d).await.unwrap_err();
        assert_eq!(err.error_type(), "PredictionOne.Timeout");
        assert!(b.store.calls.lock().unwrap().is_empty());
        assert!(b.issuer.used.lock().unwrap().is_empty());
    }

    /// Serves a train request while the store's `op` never answers, with
    /// `total_ms` left and `margin_ms` kept back; the error and how long the
    /// answer took.
    async fn serve_with_store_hanging_on(
        op: &'static str,
        total_ms: u64,
        margin_ms: u64,
    ) -> (Error, Duration) {
        let store = FakeStore::with_secret_key("sk-1");
        store.hang_on(op);
        let b = broker(store, FakeIssuer::default(), &[]);
        let d = Deadline::after(
            Duration::from_millis(total_ms),
            Duration::from_millis(margin_ms),
        );
        let started = std::time::Instant::now();
        let err = b.serve(&request(&b), &d).await.unwrap_err();
        (err, started.elapsed())
    }

    fn expired_train_record() -> String {
        json!({"api_key": "old", "end_date": "2020-01-01T00:00:00Z",
               "expires_at": "2020-01-01T00:00:00Z", "credential_type": "train",
               "model_id": null, "issued_at": "2019-12-25T00:00:00Z"})
        .to_string()
    }

    #[tokio::test]
    async fn two_renewals_at_once_store_one_version_and_both_name_it() {
        let store = FakeStore::with_secret_key("sk-1");
        store.values.lock().unwrap().insert(
            "prediction-one/api-key/train".into(),
            vec![("v0".into(), expired_train_record(), vec![AWSCURRENT.into()])],
        );
        let b = broker(store, FakeIssuer::default(), &[]);
        let r = request(&b);
        // Both read v0, both fetch a key (the fake vendor yields, so they
        // meet there), both write under the token derived from v0.
        let d = deadline();
        let (one, two) = tokio::join!(b.serve(&r, &d), b.serve(&r, &d));
        let (one, two) = (one.unwrap(), two.unwrap());
        assert_eq!(b.issuer.used.lock().unwrap().len(), 2, "both fetched");
        let mut statuses = [one.result.status, two.result.status];
        statuses.sort_by_key(|s| s.as_str());
        assert_eq!(statuses, [Status::Fresh, Status::Issued]);
        assert_eq!(one.result.version_id, two.result.version_id);
        let loser = if one.result.status == Status::Fresh {
            &one
        } else {
            &two
        };
        assert!(loser.result.discarded);
        assert_eq!(loser.output(false)["discarded"], true);
        let winner = if one.result.status == Status::Issued {
            &one
        } else {
            &two
        };
        assert!(winner.output(false).get("discarded").is_none());
        // The loser serves the winner's key, never its own.
        assert_eq!(loser.api_key.expose(), winner.api_key.expose());
        let versions = b.store.values.lock().unwrap()["prediction-one/api-key/train"].clone();
        assert_eq!(versions.len(), 2, "v0 and one new version: {versions:?}");
        assert_eq!(
            versions[1].0,
            crate::secrets::renewal_token(
                &crate::fakes::fake_arn("prediction-one/api-key/train"),
                Some("v0")
            )
        );
    }

    #[tokio::test]
    async fn a_rolled_back_current_version_is_renewed_under_a_token_of_its_own() {
        // v0 was renewed once (under the token derived from v0), then the
        // AWSCURRENT label was moved back to v0 by hand: the derived token
        // is taken by that old version, which is no winner.
        let store = FakeStore::with_secret_key("sk-1");
        let arn = crate::fakes::fake_arn("prediction-one/api-key/train");
        let taken = crate::secrets::renewal_token(&arn, Some("v0"));
        store.values.lock().unwrap().insert(
            "prediction-one/api-key/train".into(),
            vec![
                ("v0".into(), expired_train_record(), vec![AWSCURRENT.into()]),
                (
                    taken.clone(),
                    expired_train_record(),
                    vec!["AWSPREVIOUS".into()],
                ),
            ],
        );
        let b = broker(store, FakeIssuer::default(), &[]);
        let served = b.serve(&request(&b), &deadline()).await.unwrap();
        assert_eq!(served.result.status, Status::Issued);
        assert!(!served.result.discarded);
        assert_ne!(served.result.version_id, taken);
        assert_ne!(served.result.version_id, "v0");
    }

    #[tokio::test]
    async fn a_permanent_vendor_error_marks_the_target_and_a_forced_success_clears_it() {
        let store = FakeStore::with_secret_key("sk-1");
        store.values.lock().unwrap().insert(
            "prediction-one/api-key/train".into(),
            vec![("v0".into(), expired_train_record(), vec![AWSCURRENT.into()])],
        );
        let issuer = FakeIssuer::default();
        *issuer.fails_with.lock().unwrap() = Some(PredictionOneError::UserDeleted);
        let b = broker(store, issuer, &[]);
        let e = b.serve(&request(&b), &deadline()).await.unwrap_err();
        assert_eq!(e.error_type(), "PredictionOne.UserDeleted");
        let mark =
            b.store.tags.lock().unwrap()["prediction-one/api-key/train"][STOPPED_TAG].clone();
        assert!(mark.starts_with("PredictionOne.UserDeleted 20"), "{mark}");
        // A transient failure marks nothing; a forced success clears it.
        *b.issuer.fails_with.lock().unwrap() = None;
        let forced = KeyRequest {
            force: true,
            ..request(&b)
        };
        b.serve(&forced, &deadline()).await.unwrap();
        assert!(
            !b.store.tags.lock().unwrap()["prediction-one/api-key/train"].contains_key(STOPPED_TAG)
        );
    }

    #[tokio::test]
    async fn a_missing_target_is_not_marked() {
        let issuer = FakeIssuer::default();
        *issuer.fails_with.lock().unwrap() = Some(PredictionOneError::UserDeleted);
        let b = broker(FakeStore::with_secret_key("sk-1"), issuer, &[]);
        b.serve(&request(&b), &deadline()).await.unwrap_err();
        assert!(!b.store.calls.lock().unwrap().contains(&"tag"));
    }

    #[tokio::test]
    async fn a_hanging_store_ends_with_the_deadline() {
        let (err, took) = serve_with_store_hanging_on("get", 300, 100).await;
        assert!(took < Duration::from_millis(300), "{took:?}");
        assert_eq!(err.error_type(), "StoreFailed");
        assert!(err.report().contains("timed out"), "{}", err.report());
    }

    #[tokio::test]
    async fn a_fetched_key_is_stored_in_the_margin_or_reported_as_discarded() {
        let (err, took) = serve_with_store_hanging_on("create", 600, 400).await;
        // The create waited past the work point, into the margin, and the
        // answer still came before the deadline; reading back found no
        // secret, so the key is known to be discarded.
        assert!(
            took > Duration::from_millis(250) && took < Duration::from_millis(600),
            "{took:?}"
        );
        assert_eq!(err.error_type(), "StoreFailed");
        assert!(
            err.report().contains("shows no version") && err.report().contains("discarded"),
            "{}",
            err.report()
        );
    }

    #[tokio::test]
    async fn a_write_whose_answer_was_lost_is_read_back_and_answered_issued() {
        for op in ["create", "put"] {
            let store = FakeStore::with_secret_key("sk-1");
            if op == "put" {
                store
                    .values
                    .lock()
                    .unwrap()
                    .insert("prediction-one/api-key/train".into(), vec![]);
            }
            store.lose_answer_of(op);
            let b = broker(store, FakeIssuer::default(), &[]);
            let d = || Deadline::after(Duration::from_millis(800), Duration::from_millis(600));
            let served = b.serve(&request(&b), &d()).await.unwrap();
            assert_eq!(served.result.status, Status::Issued, "{op}");
            let versions = b.store.values.lock().unwrap()["prediction-one/api-key/train"].clone();
            assert_eq!(versions.len(), 1, "{op}");
            assert_eq!(versions[0].0, served.result.version_id, "{op}");
            // The same when no time is left to read back: the answer says
            // the outcome is unknown and names the version, never
            // "discarded".
            let store = FakeStore::with_secret_key("sk-1");
            store.values.lock().unwrap().insert(
                "prediction-one/api-key/train".into(),
                vec![("v0".into(), "not a record".into(), vec![AWSCURRENT.into()])],
            );
            store.lose_answer_of("put");
            // The target's and the secret key's reads answer; the
            // read-back never does.
            store.hang_on_after("get", 2);
            let b = broker(store, FakeIssuer::default(), &[]);
            let err = b.serve(&request(&b), &d()).await.unwrap_err();
            let report = err.report();
            assert_eq!(err.error_type(), "StoreFailed");
            assert!(!report.contains("discarded"), "{report}");
            let stored = b.store.values.lock().unwrap()["prediction-one/api-key/train"][1]
                .0
                .clone();
            assert!(
                report.contains("unknown") && report.contains(&stored),
                "{report}"
            );
        }
    }

    #[tokio::test]
    async fn a_failed_label_move_does_not_fail_an_announced_key() {
        let store = FakeStore::with_secret_key("sk-1");
        store.fail_once("move_stage", StoreError::Other("denied".into()));
        let b = broker(
            store,
            FakeIssuer::default(),
            &[("P1_EVENT_BUS_NAME", "bus")],
        );
        let served = b.serve(&request(&b), &deadline()).await.unwrap();
        assert_eq!(b.handoff.announced.lock().unwrap().len(), 1);
        assert_eq!(served.result.credential_type, CredentialType::Train);
    }

    #[tokio::test]
    async fn a_refused_key_that_did_not_change_is_not_retried() {
        let store = FakeStore::with_secret_key("sk-old");
        let issuer = FakeIssuer {
            refused: vec!["sk-old".into()],
            ..Default::default()
        };
        let b = broker(store, issuer, &[]);
        let err = b.serve(&request(&b), &deadline()).await.unwrap_err();
        assert_eq!(err.error_type(), "PredictionOne.InactiveCredential");
        assert_eq!(*b.issuer.used.lock().unwrap(), ["sk-old"]);
        // Nothing was stored.
        assert!(!b.store.calls.lock().unwrap().contains(&"put"));
    }
}

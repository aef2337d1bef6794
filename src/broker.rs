//! The use case: reuse a fresh key or issue, store and announce a new one.
//!
//! The broker depends only on ports (`Vendor`, `SecretStore`, `Handoff`), so
//! the same logic serves every trigger and the rotation protocol, and its
//! adapters are chosen once in `main`.

use std::time::Instant;

use chrono::Utc;

use crate::config::Config;
use crate::error::Error;
use crate::handoff::Handoff;
use crate::request::{Credential, KeyRequest, KeyResult, Status};
use crate::secrets::store::NewSecret;
use crate::secrets::{
    AWSCURRENT, KeyRecord, P1ANNOUNCED, SecretKeySource, SecretStore, SecretValue, StoreError,
    VersionRef,
};
use crate::sensitive::ApiKey;
use crate::vendor::{IssuedKey, Vendor};

pub struct Broker<V, S, H> {
    pub config: Config,
    pub vendor: V,
    pub store: S,
    pub handoff: H,
    pub secret_key: SecretKeySource,
}

/// A served request: the result, plus what the caller needs but must not
/// publish (the key, for an allowed `include_key` or a batch-mate).
#[derive(Debug, Clone)]
pub struct Served {
    pub result: KeyResult,
    pub api_key: ApiKey,
    pub vendor_latency_ms: Option<u64>,
}

impl Served {
    /// The result object as the caller asked for it.
    pub fn output(&self, include_key: bool) -> KeyResult {
        KeyResult {
            api_key: include_key.then(|| self.api_key.clone()),
            ..self.result.clone()
        }
    }

    /// The same key, for a later request of the same batch: nothing fetched.
    pub fn reused(&self) -> Served {
        Served {
            result: KeyResult {
                status: Status::Fresh,
                ..self.result.clone()
            },
            api_key: self.api_key.clone(),
            vendor_latency_ms: None,
        }
    }
}

impl<V: Vendor, S: SecretStore, H: Handoff> Broker<V, S, H> {
    pub fn new(config: Config, vendor: V, store: S, handoff: H) -> Self {
        let secret_key = SecretKeySource::new(
            config.secret_key_secret_id.clone(),
            config.secret_key_field.clone(),
            config.secret_key_cache_ttl,
        );
        Broker {
            config,
            vendor,
            store,
            handoff,
            secret_key,
        }
    }

    /// One request: `fresh` when the target's current key outlives the renewal
    /// margin (and `force` is off), else a new key, stored and announced.
    pub async fn serve(&self, request: &KeyRequest) -> Result<Served, Error> {
        let target = &request.target_secret_id;
        let current = match self.store.get_value(target, Some(AWSCURRENT), None).await {
            Ok(v) => Some(v),
            Err(StoreError::NotFound(_)) => None,
            Err(e) => {
                return Err(Error::StoreFailed(format!(
                    "cannot read the target secret {target:?}: {e}"
                )));
            }
        };
        if !request.force
            && let Some(current) = current.as_ref()
            && let Some(served) = self.fresh(request, current).await?
        {
            tracing::info!(target_secret = %target, version_id = %served.result.version_id, "stored key is fresh");
            return Ok(served);
        }
        // Whatever name or ARN the request used, never write over the
        // account's secret key.
        if let Some(current) = &current
            && self.is_secret_key_secret(&current.arn).await?
        {
            return Err(Error::invalid(
                "target_secret_id must not be the secret that holds the Prediction One secret key",
            ));
        }

        let (issued, vendor_latency_ms) = self.issue_key(&request.credential).await?;
        let record = KeyRecord::issued(
            issued.api_key,
            issued.end_date,
            request.credential.clone(),
            Utc::now(),
        );
        let stored = self.store_record(target, &record).await?;
        tracing::info!(target_secret = %target, version_id = %stored.version_id, "issued and stored a new key");

        let served = Served {
            result: result_of(Status::Issued, &record, stored),
            api_key: record.api_key,
            vendor_latency_ms: Some(vendor_latency_ms),
        };
        self.announce(target, &served.result).await?;
        Ok(served)
    }

    /// Asks the vendor for a key. A refused secret key is re-read once: if
    /// the secret now holds a different one, the call is tried with it.
    /// Also returns the time spent in vendor calls (`VendorLatencyMs`).
    pub async fn issue_key(&self, credential: &Credential) -> Result<(IssuedKey, u64), Error> {
        let secret_key = self.secret_key.get(&self.store).await?;
        let started = Instant::now();
        let first = self.vendor.get_api_key(&secret_key, credential).await;
        let mut vendor_ms = started.elapsed().as_millis() as u64;
        let issued = match first {
            Err(Error::Vendor(e)) if e.is_credential_error() => {
                match self
                    .secret_key
                    .refresh_after_refusal(&self.store, &secret_key)
                    .await?
                {
                    Some(newer) => {
                        tracing::info!(
                            "secret key was refused; retrying once with the newly read one"
                        );
                        let started = Instant::now();
                        let retried = self.vendor.get_api_key(&newer, credential).await;
                        vendor_ms += started.elapsed().as_millis() as u64;
                        retried
                    }
                    None => Err(Error::Vendor(e)),
                }
            }
            other => other,
        }?;
        Ok((issued, vendor_ms))
    }

    /// Whether `arn` is the secret that holds the Prediction One secret key.
    pub async fn is_secret_key_secret(&self, arn: &str) -> Result<bool, Error> {
        Ok(self.secret_key.secret_arn(&self.store).await? == arn)
    }

    /// The target's current record, when it is fresh for this request.
    async fn fresh(
        &self,
        request: &KeyRequest,
        current: &SecretValue,
    ) -> Result<Option<Served>, Error> {
        let target = &request.target_secret_id;
        let Some(record) = current.secret_string.as_ref().and_then(KeyRecord::parse) else {
            return Ok(None);
        };
        if !record.is_fresh_for(&request.credential, Utc::now(), self.config.renew_before) {
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
            self.announce(target, &served.result).await?;
        }
        Ok(Some(served))
    }

    /// Writes a record as the target's new AWSCURRENT version, creating the
    /// secret when it is missing and that is allowed.
    pub async fn store_record(
        &self,
        target: &str,
        record: &KeyRecord,
    ) -> Result<VersionRef, Error> {
        let value = record.to_secret_string();
        let failed = |e: StoreError| {
            Error::StoreFailed(format!("cannot store the new key in {target:?}: {e}"))
        };
        match self
            .store
            .put_value(target, &value, None, &[AWSCURRENT], None)
            .await
        {
            Ok(v) => return Ok(v),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(failed(e)),
        }
        if !self.config.create_missing_secret {
            return Err(Error::StoreFailed(format!(
                "the target secret {target:?} does not exist and P1_CREATE_MISSING_SECRET is false"
            )));
        }
        if target.starts_with("arn:") {
            return Err(Error::StoreFailed(format!(
                "the target secret {target:?} does not exist; a secret can be created from a name, not an ARN"
            )));
        }
        let mut tags = vec![
            (
                "p1:credential_type".to_string(),
                record.credential.credential_type.as_str().to_string(),
            ),
            ("managed-by".to_string(), "p1-key-broker".to_string()),
        ];
        if let Some(model_id) = &record.credential.model_id {
            tags.push(("p1:model_id".to_string(), model_id.as_str().to_string()));
        }
        let new = NewSecret {
            tags,
            kms_key_id: self.config.target_kms_key_id.clone(),
        };
        match self.store.create(target, &value, &new).await {
            Ok(v) => {
                tracing::info!(target_secret = %target, "created the missing target secret");
                Ok(v)
            }
            // Created concurrently by another invocation: write a version to it.
            Err(StoreError::Exists(_)) => self
                .store
                .put_value(target, &value, None, &[AWSCURRENT], None)
                .await
                .map_err(failed),
            Err(e) => Err(failed(e)),
        }
    }

    /// Announces a version on the configured bus, once: success moves the
    /// `P1ANNOUNCED` label onto it.
    async fn announce(&self, target: &str, result: &KeyResult) -> Result<(), Error> {
        let Some(bus) = &self.config.event_bus_name else {
            return Ok(());
        };
        let detail = serde_json::to_string(&result.without_key())
            .map_err(|e| Error::HandOffFailed(format!("cannot encode the announcement: {e}")))?;
        if let Err(e) = self.handoff.announce(bus, &detail).await {
            return Err(Error::HandOffFailed(format!(
                "the key is stored as version {} of {}, but announcing it on EventBridge bus {bus:?} failed ({e}); the same request retried will announce it",
                result.version_id, result.secret_arn
            )));
        }
        // The event is out; a failure to label only risks a second
        // announcement later, so it is logged rather than failed.
        let holder = match self.store.describe(target).await {
            Ok(d) => d.version_with(P1ANNOUNCED).map(str::to_string),
            Err(e) => {
                tracing::warn!(error = %e, "announced, but cannot describe the secret to move P1ANNOUNCED");
                return Ok(());
            }
        };
        if holder.as_deref() != Some(result.version_id.as_str())
            && let Err(e) = self
                .store
                .move_stage(
                    target,
                    P1ANNOUNCED,
                    Some(&result.version_id),
                    holder.as_deref(),
                )
                .await
        {
            tracing::warn!(error = %e, "announced, but cannot move P1ANNOUNCED onto the version");
        }
        Ok(())
    }
}

fn result_of(status: Status, record: &KeyRecord, version: VersionRef) -> KeyResult {
    KeyResult {
        status,
        credential_type: record.credential.credential_type,
        model_id: record.credential.model_id.clone(),
        secret_arn: version.arn,
        version_id: version.version_id,
        end_date: record.end_date.clone(),
        expires_at: record.expires_at.clone(),
        api_key: None,
    }
}

#[cfg(test)]
mod tests {
    //! The broker against in-process fakes of its three ports, for the
    //! paths a real server will not produce on demand (races, partial
    //! failures). The real adapters are exercised in `tests/`.

    use std::collections::HashMap;
    use std::sync::Mutex;

    use serde_json::json;

    use super::*;
    use crate::request::CredentialType;
    use crate::secrets::store::{SecretDescription, SecretValue};
    use crate::sensitive::{RotationToken, SecretKey, SecretString, TaskToken};
    use crate::vendor::VendorError;

    /// (version id, value, stages), oldest first.
    type Versions = Vec<(String, String, Vec<String>)>;

    #[derive(Default)]
    struct FakeStore {
        values: Mutex<HashMap<String, Versions>>,
        /// Errors to return, by operation name, once each.
        fail: Mutex<HashMap<&'static str, StoreError>>,
        calls: Mutex<Vec<&'static str>>,
    }

    impl FakeStore {
        fn with_secret_key(key: &str) -> Self {
            let s = FakeStore::default();
            s.values.lock().unwrap().insert(
                "sk".into(),
                vec![("v0".into(), key.into(), vec![AWSCURRENT.into()])],
            );
            s
        }
        fn take(&self, op: &'static str) -> Result<(), StoreError> {
            self.calls.lock().unwrap().push(op);
            match self.fail.lock().unwrap().remove(op) {
                Some(e) => Err(e),
                None => Ok(()),
            }
        }
        fn put(&self, id: &str, value: &SecretString) -> VersionRef {
            let mut values = self.values.lock().unwrap();
            let versions = values.entry(id.to_string()).or_default();
            for v in versions.iter_mut() {
                v.2.retain(|s| s != AWSCURRENT);
            }
            let version_id = format!("v{}", versions.len() + 1);
            versions.push((
                version_id.clone(),
                value.expose().to_string(),
                vec![AWSCURRENT.into()],
            ));
            VersionRef {
                arn: format!("arn:{id}"),
                version_id,
            }
        }
    }

    impl SecretStore for FakeStore {
        async fn get_value(
            &self,
            id: &str,
            stage: Option<&str>,
            _: Option<&str>,
        ) -> Result<SecretValue, StoreError> {
            self.take("get")?;
            let values = self.values.lock().unwrap();
            let stage = stage.unwrap_or(AWSCURRENT);
            let (version_id, value, stages) = values
                .get(id)
                .and_then(|vs| vs.iter().find(|v| v.2.iter().any(|s| s == stage)))
                .ok_or_else(|| StoreError::NotFound(id.into()))?;
            Ok(SecretValue {
                arn: format!("arn:{id}"),
                version_id: version_id.clone(),
                secret_string: Some(SecretString::new(value.clone())),
                stages: stages.clone(),
            })
        }
        async fn put_value(
            &self,
            id: &str,
            value: &SecretString,
            _: Option<&str>,
            _: &[&str],
            _: Option<&RotationToken>,
        ) -> Result<VersionRef, StoreError> {
            self.take("put")?;
            if !self.values.lock().unwrap().contains_key(id) {
                return Err(StoreError::NotFound(id.into()));
            }
            Ok(self.put(id, value))
        }
        async fn create(
            &self,
            id: &str,
            value: &SecretString,
            _: &NewSecret,
        ) -> Result<VersionRef, StoreError> {
            self.take("create")?;
            Ok(self.put(id, value))
        }
        async fn describe(&self, _: &str) -> Result<SecretDescription, StoreError> {
            self.take("describe")?;
            Ok(SecretDescription::default())
        }
        async fn move_stage(
            &self,
            _: &str,
            _: &str,
            _: Option<&str>,
            _: Option<&str>,
        ) -> Result<(), StoreError> {
            self.take("move_stage")
        }
    }

    #[derive(Default)]
    struct FakeVendor {
        /// Secret keys the vendor refuses as inactive.
        refused: Vec<String>,
        used: Mutex<Vec<String>>,
    }

    impl Vendor for FakeVendor {
        async fn get_api_key(
            &self,
            secret_key: &SecretKey,
            _: &Credential,
        ) -> Result<IssuedKey, Error> {
            self.used
                .lock()
                .unwrap()
                .push(secret_key.expose().to_string());
            if self.refused.iter().any(|r| r == secret_key.expose()) {
                return Err(VendorError::InactiveCredential.into());
            }
            Ok(IssuedKey {
                api_key: ApiKey::new("ak"),
                end_date: "2099-01-01T00:00:00Z".into(),
            })
        }
    }

    #[derive(Default)]
    struct FakeHandoff {
        announced: Mutex<Vec<String>>,
    }

    impl Handoff for FakeHandoff {
        async fn task_success(&self, _: &TaskToken, _: &str) -> Result<(), String> {
            Ok(())
        }
        async fn task_failure(&self, _: &TaskToken, _: &str, _: &str) -> Result<(), String> {
            Ok(())
        }
        async fn announce(&self, _: &str, detail: &str) -> Result<(), String> {
            self.announced.lock().unwrap().push(detail.to_string());
            Ok(())
        }
    }

    fn broker(
        store: FakeStore,
        vendor: FakeVendor,
        extra: &[(&str, &str)],
    ) -> Broker<FakeVendor, FakeStore, FakeHandoff> {
        let mut vars: HashMap<String, String> =
            HashMap::from([("P1_SECRET_KEY_SECRET_ID".to_string(), "sk".to_string())]);
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config = Config::from_lookup(|n| Ok(vars.get(n).cloned())).unwrap();
        Broker::new(config, vendor, store, FakeHandoff::default())
    }

    fn request(b: &Broker<FakeVendor, FakeStore, FakeHandoff>) -> KeyRequest {
        KeyRequest::from_value(&json!({"credential_type": "train"}), &b.config).unwrap()
    }

    #[tokio::test]
    async fn a_target_created_concurrently_is_written_to() {
        let store = FakeStore::with_secret_key("sk-1");
        store
            .fail
            .lock()
            .unwrap()
            .insert("create", StoreError::Exists("raced".into()));
        // The other invocation's secret appears between our put and create.
        store
            .values
            .lock()
            .unwrap()
            .insert("prediction-one/api-key/train".into(), vec![]);
        store
            .fail
            .lock()
            .unwrap()
            .insert("put", StoreError::NotFound("not yet".into()));
        let b = broker(store, FakeVendor::default(), &[]);
        let served = b.serve(&request(&b)).await.unwrap();
        assert_eq!(served.result.status, Status::Issued);
        assert_eq!(
            *b.store.calls.lock().unwrap(),
            ["get", "get", "put", "create", "put"]
        );
    }

    #[tokio::test]
    async fn a_failed_label_move_does_not_fail_an_announced_key() {
        let store = FakeStore::with_secret_key("sk-1");
        store
            .fail
            .lock()
            .unwrap()
            .insert("move_stage", StoreError::Other("denied".into()));
        let b = broker(
            store,
            FakeVendor::default(),
            &[("P1_EVENT_BUS_NAME", "bus")],
        );
        let served = b.serve(&request(&b)).await.unwrap();
        assert_eq!(b.handoff.announced.lock().unwrap().len(), 1);
        assert_eq!(served.result.credential_type, CredentialType::Train);
    }

    #[tokio::test]
    async fn a_refused_key_that_did_not_change_is_not_retried() {
        let store = FakeStore::with_secret_key("sk-old");
        let vendor = FakeVendor {
            refused: vec!["sk-old".into()],
            ..Default::default()
        };
        let b = broker(store, vendor, &[]);
        let err = b.serve(&request(&b)).await.unwrap_err();
        assert_eq!(err.error_type(), "PredictionOne.InactiveCredential");
        assert_eq!(*b.vendor.used.lock().unwrap(), ["sk-old"]);
        // Nothing was stored.
        assert!(!b.store.calls.lock().unwrap().contains(&"put"));
    }
}

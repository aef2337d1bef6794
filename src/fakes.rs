//! In-process fakes of the three ports, for unit tests of the use case and
//! the entry points on paths a real server will not produce on demand
//! (races, partial failures). The real adapters run in `tests/it`.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::broker::{Broker, Ports};
use crate::config::Config;
use crate::credential::Credential;
use crate::deadline::Deadline;
use crate::handoff::{Handoff, HandoffError};
use crate::prediction_one::{IssuedKey, KeyIssuer, PredictionOneError};
use crate::secrets::{
    AWSCURRENT, BatchValues, ListFilter, ListedSecret, NewSecret, NewVersion, SecretDescription,
    SecretPage, SecretStore, SecretValue, StoreError, VersionRef,
};
use crate::sensitive::{ApiKey, SecretKey, SecretString, TaskToken};

/// A fake secret's ARN, in AWS's form (name and a six-character suffix),
/// so that names and ARNs relate as they do in Secrets Manager.
pub fn fake_arn(name: &str) -> String {
    format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf")
}

/// The broker on the fakes.
pub struct Fakes;

impl Ports for Fakes {
    type Issuer = FakeIssuer;
    type Store = FakeStore;
    type Handoff = FakeHandoff;
}

/// A broker on the fakes, with `P1_SECRET_KEY_SECRET_ID=sk` and `extra`
/// environment.
pub fn broker(store: FakeStore, issuer: FakeIssuer, extra: &[(&str, &str)]) -> Broker<Fakes> {
    let mut vars: HashMap<String, String> =
        HashMap::from([("P1_SECRET_KEY_SECRET_ID".to_string(), "sk".to_string())]);
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config = Config::from_lookup(|n| Ok(vars.get(n).cloned())).expect("test config");
    Broker::new(config, issuer, store, FakeHandoff::default())
}

/// (version id, value, stages), oldest first.
type Versions = Vec<(String, String, Vec<String>)>;

#[derive(Default)]
pub struct FakeStore {
    pub values: Mutex<HashMap<String, Versions>>,
    /// Errors to return, by operation name, once each.
    pub fail: Mutex<HashMap<&'static str, StoreError>>,
    pub calls: Mutex<Vec<&'static str>>,
    /// Operations that never answer.
    hang: Mutex<Vec<&'static str>>,
    /// Operations that never answer after their first n calls.
    hang_after: Mutex<Vec<(&'static str, usize)>>,
    /// Writes that are carried out but whose answer never comes.
    lose_answer: Mutex<Vec<&'static str>>,
    /// Tags by secret (set on create).
    pub tags: Mutex<HashMap<String, HashMap<String, String>>>,
    /// Secrets whose Secrets Manager rotation is on, by name.
    pub rotated: Mutex<Vec<String>>,
}

impl FakeStore {
    /// Makes the next call of `op` fail with `error`.
    pub fn fail_once(&self, op: &'static str, error: StoreError) {
        self.fail.lock().unwrap().insert(op, error);
    }

    pub fn with_secret_key(key: &str) -> Self {
        let s = FakeStore::default();
        s.values.lock().unwrap().insert(
            "sk".into(),
            vec![("v0".into(), key.into(), vec![AWSCURRENT.into()])],
        );
        s
    }
    /// Makes every call of `op` hang (it never answers).
    pub fn hang_on(&self, op: &'static str) {
        self.hang.lock().unwrap().push(op);
    }

    /// Makes the calls of `op` after the first `answered` hang.
    pub fn hang_on_after(&self, op: &'static str, answered: usize) {
        self.hang_after.lock().unwrap().push((op, answered));
    }

    /// Makes every write `op` ("put", "create") land and then hang, as a
    /// connection that breaks after the request was sent.
    pub fn lose_answer_of(&self, op: &'static str) {
        self.lose_answer.lock().unwrap().push(op);
    }

    async fn answer(
        &self,
        op: &'static str,
        written: VersionRef,
    ) -> Result<VersionRef, StoreError> {
        if self.lose_answer.lock().unwrap().contains(&op) {
            std::future::pending::<()>().await;
        }
        Ok(written)
    }

    async fn take(&self, op: &'static str) -> Result<(), StoreError> {
        let made = {
            let mut calls = self.calls.lock().unwrap();
            calls.push(op);
            calls.iter().filter(|c| **c == op).count()
        };
        let hangs_now = self
            .hang_after
            .lock()
            .unwrap()
            .iter()
            .any(|(o, answered)| *o == op && made > *answered);
        if hangs_now || self.hang.lock().unwrap().contains(&op) {
            std::future::pending::<()>().await;
        }
        match self.fail.lock().unwrap().remove(op) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
    /// Writes a new current version; a token already used is Secrets
    /// Manager's idempotency: the same value is that version again, another
    /// value is refused (`Exists`).
    fn put(
        &self,
        id: &str,
        value: &SecretString,
        token: Option<&str>,
    ) -> Result<VersionRef, StoreError> {
        let id = crate::secret_id::name_of(id);
        let mut values = self.values.lock().unwrap();
        let versions = values.entry(id.to_string()).or_default();
        if let Some((v, old, _)) = versions.iter().find(|v| Some(v.0.as_str()) == token) {
            return if old == value.expose() {
                Ok(VersionRef {
                    arn: fake_arn(id),
                    version_id: v.clone(),
                })
            } else {
                Err(StoreError::Exists(format!("token {v} is in use")))
            };
        }
        for v in versions.iter_mut() {
            v.2.retain(|s| s != AWSCURRENT);
        }
        let version_id = token.map_or_else(|| format!("v{}", versions.len() + 1), str::to_string);
        versions.push((
            version_id.clone(),
            value.expose().to_string(),
            vec![AWSCURRENT.into()],
        ));
        Ok(VersionRef {
            arn: fake_arn(id),
            version_id,
        })
    }
}

impl SecretStore for FakeStore {
    async fn get_value(
        &self,
        id: &str,
        stage: &str,
        version: Option<&str>,
    ) -> Result<SecretValue, StoreError> {
        self.take("get").await?;
        let id = crate::secret_id::name_of(id);
        let values = self.values.lock().unwrap();
        let (version_id, value, stages) = values
            .get(id)
            .and_then(|vs| {
                vs.iter().find(|v| {
                    v.2.iter().any(|s| s == stage) && version.is_none_or(|want| want == v.0)
                })
            })
            .ok_or_else(|| StoreError::NotFound(id.into()))?;
        Ok(SecretValue {
            arn: fake_arn(id),
            version_id: version_id.clone(),
            secret_string: Some(SecretString::new(value.clone())),
            stages: stages.clone(),
        })
    }
    async fn put_value(
        &self,
        id: &str,
        version: &NewVersion<'_>,
    ) -> Result<VersionRef, StoreError> {
        self.take("put").await?;
        let id = crate::secret_id::name_of(id);
        if !self.values.lock().unwrap().contains_key(id) {
            return Err(StoreError::NotFound(id.into()));
        }
        let written = self.put(id, version.value, version.client_request_token)?;
        self.answer("put", written).await
    }
    async fn create(
        &self,
        id: &str,
        value: &SecretString,
        new: &NewSecret,
    ) -> Result<VersionRef, StoreError> {
        self.take("create").await?;
        if self
            .values
            .lock()
            .unwrap()
            .contains_key(crate::secret_id::name_of(id))
        {
            return Err(StoreError::Exists(format!("{id} exists")));
        }
        self.tags
            .lock()
            .unwrap()
            .insert(id.to_string(), new.tags.iter().cloned().collect());
        let written = self.put(id, value, new.client_request_token.as_deref())?;
        self.answer("create", written).await
    }
    async fn describe(&self, id: &str) -> Result<SecretDescription, StoreError> {
        self.take("describe").await?;
        let id = crate::secret_id::name_of(id);
        let values = self.values.lock().unwrap();
        let versions = values
            .get(id)
            .ok_or_else(|| StoreError::NotFound(id.into()))?;
        Ok(SecretDescription {
            arn: fake_arn(id),
            versions: versions
                .iter()
                .map(|(v, _, stages)| (v.clone(), stages.clone()))
                .collect(),
            rotation_enabled: self.rotated.lock().unwrap().iter().any(|r| r == id),
            tags: self
                .tags
                .lock()
                .unwrap()
                .get(id)
                .cloned()
                .unwrap_or_default(),
        })
    }
    async fn move_stage(
        &self,
        _: &str,
        _: &str,
        _: Option<&str>,
        _: Option<&str>,
    ) -> Result<(), StoreError> {
        self.take("move_stage").await
    }

    async fn tag(&self, id: &str, key: &str, value: &str) -> Result<(), StoreError> {
        self.take("tag").await?;
        let id = crate::secret_id::name_of(id);
        self.tags
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_default()
            .insert(key.to_string(), value.to_string());
        Ok(())
    }

    async fn untag(&self, id: &str, key: &str) -> Result<(), StoreError> {
        self.take("untag").await?;
        let id = crate::secret_id::name_of(id);
        if let Some(tags) = self.tags.lock().unwrap().get_mut(id) {
            tags.remove(key);
        }
        Ok(())
    }

    async fn list(&self, filter: &ListFilter, _: Option<&str>) -> Result<SecretPage, StoreError> {
        self.take("list").await?;
        let rotated = self.rotated.lock().unwrap().clone();
        let values = self.values.lock().unwrap();
        let tags = self.tags.lock().unwrap();
        let mut names: Vec<&String> = values.keys().collect();
        names.sort();
        let secrets = names
            .into_iter()
            .filter(|name| {
                filter
                    .name_prefix
                    .as_ref()
                    .is_none_or(|p| name.starts_with(p.as_str()))
                    && filter
                        .tag
                        .as_ref()
                        .is_none_or(|(k, v)| tags.get(*name).and_then(|t| t.get(k)) == Some(v))
                    && filter
                        .exclude_name_prefix
                        .as_ref()
                        .is_none_or(|p| !name.starts_with(p.as_str()))
            })
            .map(|name| ListedSecret {
                arn: fake_arn(name),
                name: name.clone(),
                tags: tags.get(name).cloned().unwrap_or_default(),
                rotation_enabled: rotated.contains(name),
            })
            .collect();
        Ok(SecretPage {
            secrets,
            next_token: None,
        })
    }

    async fn batch_get(&self, ids: &[String]) -> Result<BatchValues, StoreError> {
        self.take("batch_get").await?;
        let mut out = BatchValues::default();
        for id in ids {
            let name = crate::secret_id::name_of(id);
            let values = self.values.lock().unwrap();
            let current = values
                .get(name)
                .and_then(|vs| vs.iter().find(|v| v.2.iter().any(|s| s == AWSCURRENT)));
            match current {
                Some((version_id, value, stages)) => out.values.push(SecretValue {
                    arn: fake_arn(name),
                    version_id: version_id.clone(),
                    secret_string: Some(SecretString::new(value.clone())),
                    stages: stages.clone(),
                }),
                None => out
                    .errors
                    .push((id.clone(), "ResourceNotFoundException".into())),
            }
        }
        Ok(out)
    }
}

#[derive(Default)]
pub struct FakeIssuer {
    /// Secret keys the vendor refuses as inactive.
    pub refused: Vec<String>,
    /// Secret keys it was called with, in order.
    pub used: Mutex<Vec<String>>,
    /// An answer every call gets instead of a key.
    pub fails_with: Mutex<Option<PredictionOneError>>,
}

impl KeyIssuer for FakeIssuer {
    async fn get_api_key(
        &self,
        secret_key: &SecretKey,
        _: &Credential,
        _: &Deadline,
    ) -> Result<IssuedKey, PredictionOneError> {
        let n = {
            let mut used = self.used.lock().unwrap();
            used.push(secret_key.expose().to_string());
            used.len()
        };
        // A vendor call takes time: concurrent requests meet here.
        tokio::task::yield_now().await;
        if self.refused.iter().any(|r| r == secret_key.expose()) {
            return Err(PredictionOneError::InactiveCredential);
        }
        if let Some(e) = self.fails_with.lock().unwrap().clone() {
            return Err(e);
        }
        // Each key a new one, as the vendor's are.
        Ok(IssuedKey {
            api_key: ApiKey::new(format!("ak-{n}")),
            end_date: "2099-01-01T00:00:00Z".into(),
        })
    }
}

#[derive(Default)]
pub struct FakeHandoff {
    pub announced: Mutex<Vec<String>>,
    /// Request bodies sent to a queue, in order.
    pub sent: Mutex<Vec<String>>,
    /// Heartbeats sent.
    pub heartbeats: Mutex<usize>,
    /// Answers to the next heartbeats, in order (then: accepted).
    pub heartbeat_answers: Mutex<std::collections::VecDeque<HandoffError>>,
}

impl Handoff for FakeHandoff {
    async fn task_success(&self, _: &TaskToken, _: &str) -> Result<(), HandoffError> {
        Ok(())
    }
    async fn task_failure(&self, _: &TaskToken, _: &str, _: &str) -> Result<(), HandoffError> {
        Ok(())
    }
    async fn task_heartbeat(&self, _: &TaskToken) -> Result<(), HandoffError> {
        *self.heartbeats.lock().unwrap() += 1;
        match self.heartbeat_answers.lock().unwrap().pop_front() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
    async fn announce(&self, _: &str, detail: &str) -> Result<(), HandoffError> {
        self.announced.lock().unwrap().push(detail.to_string());
        Ok(())
    }
    async fn send_requests(&self, _: &str, bodies: &[String]) -> Result<Vec<usize>, HandoffError> {
        self.sent.lock().unwrap().extend(bodies.iter().cloned());
        Ok(Vec::new())
    }
}

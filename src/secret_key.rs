//! The Prediction One secret key: read from its secret on first use, reused
//! by a warm instance for `P1_SECRET_KEY_CACHE_TTL_SECONDS`, and dropped when
//! the vendor refuses it, so a key rotated in Secrets Manager is picked up
//! without waiting for the TTL.
//!
//! It sits beside `secrets/` rather than in it: it speaks the function's
//! errors (`SecretKeyUnavailable`), and the Secrets Manager port below it
//! must not.

use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Mutex;

use crate::deadline::Deadline;
use crate::error::{Context, Error};
use crate::secrets::{AWSCURRENT, SecretStore, StoreError};
use crate::sensitive::SecretKey;

pub struct SecretKeySource {
    secret_id: String,
    field: String,
    ttl: Duration,
    /// Held across the read, so concurrent records of a batch share one read.
    cached: Mutex<Option<Cached>>,
}

/// The key, the ARN of the secret it came from, and when it was read.
struct Cached {
    key: SecretKey,
    arn: String,
    read_at: Instant,
}

impl SecretKeySource {
    pub fn new(secret_id: String, field: String, ttl: Duration) -> Self {
        SecretKeySource {
            secret_id,
            field,
            ttl,
            cached: Mutex::new(None),
        }
    }

    /// The cached key, or a fresh read when there is none or it is too
    /// old; with the full ARN of the secret it came from, so that writes
    /// can refuse that secret whatever name or ARN a request used.
    pub async fn current(
        &self,
        store: &impl SecretStore,
        deadline: &Deadline,
    ) -> Result<(SecretKey, String), Error> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref()
            && c.read_at.elapsed() < self.ttl
        {
            return Ok((c.key.clone(), c.arn.clone()));
        }
        let fresh = self.read(store, deadline).await?;
        let out = (fresh.key.clone(), fresh.arn.clone());
        *cached = Some(fresh);
        Ok(out)
    }

    /// Drops the cache and reads again; `Some` only when the secret now holds
    /// a different key than the one the vendor refused.
    pub async fn refresh_after_refusal(
        &self,
        store: &impl SecretStore,
        refused: &SecretKey,
        deadline: &Deadline,
    ) -> Result<Option<SecretKey>, Error> {
        let mut cached = self.cached.lock().await;
        // Another record of the same batch may have refreshed it already.
        if let Some(c) = cached.as_ref()
            && c.key != *refused
        {
            return Ok(Some(c.key.clone()));
        }
        *cached = None;
        let fresh = self.read(store, deadline).await?;
        let key = fresh.key.clone();
        *cached = Some(fresh);
        Ok((key != *refused).then_some(key))
    }

    async fn read(&self, store: &impl SecretStore, deadline: &Deadline) -> Result<Cached, Error> {
        let id = &self.secret_id;
        let value = deadline
            .work(store.get_value(id, AWSCURRENT, None))
            .await
            .map_err(|e| match e {
                StoreError::NotFound(_) => Error::SecretKeyUnavailable(Context::new(
                    format!(
                        "the secret-key secret {id:?} does not exist (or has no AWSCURRENT version)"
                    ),
                    e,
                )),
                other => Error::SecretKeyUnavailable(Context::new(
                    format!("cannot read the secret-key secret {id:?}"),
                    other,
                )),
            })?;
        let Some(raw) = value.secret_string else {
            return Err(Error::SecretKeyUnavailable(Context::new(
                format!(
                    "the secret-key secret {id:?} has no SecretString (binary secrets are not supported)"
                ),
                None,
            )));
        };
        let text = raw.expose().trim();
        let key = if text.starts_with('{') {
            let json: Value = serde_json::from_str(text).map_err(|_| {
                Error::SecretKeyUnavailable(Context::new(
                    format!("the secret-key secret {id:?} looks like JSON but does not parse"),
                    None,
                ))
            })?;
            match json.get(&self.field) {
                Some(Value::String(s)) => s.trim().to_string(),
                _ => {
                    return Err(Error::SecretKeyUnavailable(Context::new(
                        format!(
                            "the secret-key secret {id:?} is a JSON object without a string field {:?} (P1_SECRET_KEY_FIELD)",
                            self.field
                        ),
                        None,
                    )));
                }
            }
        } else {
            text.to_string()
        };
        if key.is_empty() {
            return Err(Error::SecretKeyUnavailable(Context::new(
                format!("the secret-key secret {id:?} is empty"),
                None,
            )));
        }
        // It goes into an HTTP header: visible ASCII only.
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::SecretKeyUnavailable(Context::new(
                format!(
                    "the secret key in {id:?} holds characters that cannot be sent in an HTTP header"
                ),
                None,
            )));
        }
        Ok(Cached {
            key: SecretKey::new(key),
            arn: value.arn,
            read_at: Instant::now(),
        })
    }
}

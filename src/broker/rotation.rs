//! Secrets Manager's four-step rotation protocol (SPEC section 6), as a
//! method of the use case: the same vendor client, secret-key cache,
//! secret-key guard, record format, metrics and errors as a request.
//!
//! The shape follows the AWS rotation templates: every step first checks
//! that rotation is enabled and that the token is a version of the secret;
//! a token that is already AWSCURRENT means the step is done. Each step is
//! idempotent, because Secrets Manager retries them.

use chrono::Utc;

use super::{Broker, Ports};
use crate::credential::{Credential, CredentialType, ModelId};
use crate::deadline::Deadline;
use crate::error::{Context, Error};
use crate::expiry;
use crate::metrics;
use crate::request::Status;
use crate::secrets::{
    AWSCURRENT, AWSPENDING, KeyRecord, NewVersion, SecretDescription, SecretStore, StoreError,
};
use crate::sensitive::SecretString;
use crate::trigger::RotationEvent;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    Create,
    Set,
    Test,
    Finish,
}

impl<P: Ports> Broker<P> {
    /// One step of rotating `event.secret_id` to the version named by its
    /// `ClientRequestToken`.
    ///
    /// Only `createSecret` reads the Prediction One secret key; the other
    /// steps work when it is unreadable (SPEC section 6).
    pub async fn rotate(&self, event: &RotationEvent, deadline: &Deadline) -> Result<(), Error> {
        let step = match event.step.as_str() {
            "createSecret" => Step::Create,
            "setSecret" => Step::Set,
            "testSecret" => Step::Test,
            "finishSecret" => Step::Finish,
            other => {
                return Err(Error::RotationError(Context::new(
                    format!(
                        "unknown rotation step {other:?}; expected createSecret, setSecret, testSecret or finishSecret"
                    ),
                    None,
                )));
            }
        };
        let secret_id = event.secret_id.as_str();
        let token = event.client_request_token.as_str();
        let store = &self.store;

        let description = deadline
            .work(store.describe(secret_id))
            .await
            .map_err(|e| {
                Error::RotationError(Context::new(
                    format!("cannot describe secret {secret_id:?}"),
                    e,
                ))
            })?;
        if !description.rotation_enabled {
            return Err(Error::RotationError(Context::new(
                format!("rotation is not enabled on secret {secret_id:?}"),
                None,
            )));
        }
        // Rotating it would replace the account's secret key with an API key.
        // By the configured name or ARN here; createSecret, which reads the
        // secret key anyway, also compares the ARN it was read from.
        let secret_key_secret = self.config.is_secret_key_secret(&description.arn)
            || (step == Step::Create
                && self
                    .is_secret_key_secret(&description.arn, deadline)
                    .await?);
        if secret_key_secret {
            return Err(Error::RotationError(Context::new(
                format!(
                    "secret {secret_id:?} holds the Prediction One secret key, not an API key; this function does not rotate it"
                ),
                None,
            )));
        }
        let Some(stages) = description.versions.get(token) else {
            return Err(Error::RotationError(Context::new(
                format!("version {token} is not a version of secret {secret_id:?}"),
                None,
            )));
        };
        if stages.iter().any(|s| s == AWSCURRENT) {
            if step == Step::Finish && stages.iter().any(|s| s == AWSPENDING) {
                // A retried finishSecret whose first run moved AWSCURRENT.
                return clear_pending(store, secret_id, token, deadline).await;
            }
            tracing::info!(
                step = event.step,
                version_id = token,
                "version is already AWSCURRENT; nothing to do"
            );
            return Ok(());
        }
        if !stages.iter().any(|s| s == AWSPENDING) {
            return Err(Error::RotationError(Context::new(
                format!("version {token} of secret {secret_id:?} is not AWSPENDING"),
                None,
            )));
        }

        match step {
            Step::Create => self.create_pending(event, &description, deadline).await,
            // The vendor holds no copy of the key to update.
            Step::Set => Ok(()),
            Step::Test => test_pending(store, secret_id, token, deadline).await,
            Step::Finish => {
                // Out of order (before createSecret) or on a broken value,
                // AWSCURRENT stays where it is.
                test_pending(store, secret_id, token, deadline).await?;
                let current = description.version_with(AWSCURRENT);
                deadline
                    .finish(store.move_stage(secret_id, AWSCURRENT, Some(token), current))
                    .await
                    .map_err(|e| {
                        Error::RotationError(Context::new(
                            format!("cannot move AWSCURRENT to version {token}"),
                            e,
                        ))
                    })?;
                tracing::info!(
                    version_id = token,
                    "rotation finished; the new key is AWSCURRENT"
                );
                clear_pending(store, secret_id, token, deadline).await
            }
        }
    }

    /// createSecret: a new key for the credential the secret holds, staged
    /// AWSPENDING under the token (unless a value is there already).
    async fn create_pending(
        &self,
        event: &RotationEvent,
        description: &SecretDescription,
        deadline: &Deadline,
    ) -> Result<(), Error> {
        let (secret_id, token) = (
            event.secret_id.as_str(),
            event.client_request_token.as_str(),
        );
        let store = &self.store;
        if pending_value(store, secret_id, token, deadline)
            .await?
            .is_some()
        {
            tracing::info!(
                version_id = token,
                "AWSPENDING already holds a value; createSecret is done"
            );
            return Ok(());
        }

        let credential = credential_of(store, secret_id, description, deadline).await?;
        let (issued, vendor_ms) = self.issue_key(&credential, deadline).await?;
        let record = KeyRecord::issued(
            issued.api_key,
            issued.end_date,
            credential.clone(),
            Utc::now(),
        );
        let stored = match record.to_secret_string() {
            Ok(value) => {
                let pending = NewVersion::pending(&value, token, event.rotation_token.as_ref());
                deadline.finish(store.put_value(secret_id, &pending)).await
            }
            Err(e) => Err(e),
        };
        match stored {
            Ok(_) => {}
            // Secrets Manager retried the step and a value landed meanwhile.
            Err(StoreError::Exists(_))
                if pending_value(store, secret_id, token, deadline)
                    .await?
                    .is_some() =>
            {
                return Ok(());
            }
            Err(e) => {
                return Err(Error::StoreFailed(Context::new(
                    format!(
                        "a new key was issued but could not be put as AWSPENDING of {secret_id:?}, so it was discarded"
                    ),
                    e,
                )));
            }
        }
        tracing::info!(version_id = token, "issued a key and staged it AWSPENDING");
        metrics::key_served(
            credential.credential_type,
            Status::Issued,
            record.expires_at.as_deref(),
            Some(vendor_ms),
        );
        Ok(())
    }
}

/// Takes AWSPENDING off the finished version. Secrets Manager does this
/// itself after a successful finishSecret, but a label left behind (moto
/// leaves it; so could a finishSecret that died between its two calls)
/// would make the next rotation fail with "previous rotation in progress".
async fn clear_pending(
    store: &impl SecretStore,
    secret_id: &str,
    token: &str,
    deadline: &Deadline,
) -> Result<(), Error> {
    match deadline
        .finish(store.move_stage(secret_id, AWSPENDING, None, Some(token)))
        .await
    {
        Ok(()) | Err(StoreError::NotFound(_)) => Ok(()),
        Err(e) => Err(Error::RotationError(Context::new(
            format!("cannot remove AWSPENDING from version {token}"),
            e,
        ))),
    }
}

/// The pending version's value, when it holds a non-empty one.
async fn pending_value(
    store: &impl SecretStore,
    secret_id: &str,
    token: &str,
    deadline: &Deadline,
) -> Result<Option<SecretString>, Error> {
    match deadline
        .work(store.get_value(secret_id, AWSPENDING, Some(token)))
        .await
    {
        Ok(v) => Ok(v.secret_string.filter(|s| !s.expose().trim().is_empty())),
        Err(StoreError::NotFound(_)) => Ok(None),
        Err(e) => Err(Error::RotationError(Context::new(
            format!("cannot read the AWSPENDING version {token}"),
            e,
        ))),
    }
}

/// The credential a secret holds: its current record, else its `p1:` tags,
/// else a train key.
async fn credential_of(
    store: &impl SecretStore,
    secret_id: &str,
    description: &SecretDescription,
    deadline: &Deadline,
) -> Result<Credential, Error> {
    // Only a missing or foreign current value falls back to the tags: a
    // failed read must not rotate a retrain secret into a train key.
    match deadline
        .work(store.get_value(secret_id, AWSCURRENT, None))
        .await
    {
        Ok(current) => {
            if let Some(record) = current.secret_string.as_ref().and_then(KeyRecord::parse) {
                return Ok(record.credential);
            }
        }
        Err(StoreError::NotFound(_)) => {}
        Err(e) => {
            return Err(Error::RotationError(Context::new(
                format!("cannot read the current value of {secret_id:?} to learn its credential"),
                e,
            )));
        }
    }
    let tag = |name: &str| description.tags.get(name).map(String::as_str);
    let Some(tagged) = tag("p1:credential_type") else {
        return Ok(Credential::new(CredentialType::Train, None));
    };
    let credential_type = CredentialType::parse(tagged).ok_or_else(|| {
        Error::RotationError(Context::new(
            format!(
                "secret {secret_id:?} is tagged p1:credential_type={tagged:?}; expected train, retrain or deploy"
            ),
            None,
        ))
    })?;
    if credential_type != CredentialType::Retrain {
        return Ok(Credential::new(credential_type, None));
    }
    let model_id = tag("p1:model_id").and_then(ModelId::parse).ok_or_else(|| {
        Error::RotationError(Context::new(
            format!("secret {secret_id:?} is tagged retrain without a valid p1:model_id"),
            None,
        ))
    })?;
    Ok(Credential::new(CredentialType::Retrain, Some(model_id)))
}

/// testSecret (and finishSecret, before it moves AWSCURRENT): the pending
/// value is a record with a non-empty key that has not expired.
async fn test_pending(
    store: &impl SecretStore,
    secret_id: &str,
    token: &str,
    deadline: &Deadline,
) -> Result<(), Error> {
    let problem = |what: String| Err(Error::RotationError(Context::new(what, None)));
    let Some(value) = pending_value(store, secret_id, token, deadline).await? else {
        return problem(format!("the AWSPENDING version {token} holds no value"));
    };
    let Some(record) = KeyRecord::parse(&value) else {
        return problem(format!(
            "the AWSPENDING version {token} is not a valid API key record"
        ));
    };
    if record.api_key.expose().trim().is_empty() {
        return problem(format!(
            "the AWSPENDING version {token} holds an empty api_key"
        ));
    }
    if let Some(at) = record.expiry()
        && at <= Utc::now()
    {
        return problem(format!(
            "the AWSPENDING key expired at {}",
            expiry::format_instant(at)
        ));
    }
    Ok(())
}

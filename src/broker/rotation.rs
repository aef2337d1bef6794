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
use crate::credential::Status;
use crate::credential::{Credential, CredentialType, ModelId};
use crate::deadline::Deadline;
use crate::error::{Context, Error};
use crate::expiry;
use crate::metrics;
use crate::secret_id;
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
        // Only Prediction One keys are rotated: anything else (a database
        // password the function was attached to by mistake) is refused
        // before anything is issued or written.
        let credential = self
            .credential_held(secret_id, &description, deadline)
            .await?;
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
            Step::Create => self.create_pending(event, credential, deadline).await,
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
    /// AWSPENDING under the token (unless a good value is there already; a
    /// value that fails testSecret's checks cannot be rewritten under the
    /// same token, and the error says how to start over).
    async fn create_pending(
        &self,
        event: &RotationEvent,
        credential: Credential,
        deadline: &Deadline,
    ) -> Result<(), Error> {
        let (secret_id, token) = (
            event.secret_id.as_str(),
            event.client_request_token.as_str(),
        );
        let store = &self.store;
        if let Some(value) = pending_value(store, secret_id, token, deadline).await? {
            check_pending(&value, secret_id, token)?;
            tracing::info!(
                version_id = token,
                "AWSPENDING already holds a key; createSecret is done"
            );
            return Ok(());
        }

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

impl<P: Ports> Broker<P> {
    /// The credential the secret holds, when it holds a Prediction One key
    /// (SPEC section 6): its current record's; else, when it carries `p1:`
    /// tags, theirs; else, when it is a configured target or under the
    /// retrain prefix, the one its place says (the deploy target holds
    /// deploy keys, the prefix + a model id that model's retrain key, the
    /// train target train keys). Any other secret is not this function's
    /// to rotate: a `RotationError`, with nothing issued or written.
    ///
    /// (The contract's last fallback is a train key; the place comes first
    /// here, because a train key in the deploy target or in a model's
    /// retrain secret would be the wrong key for every reader.)
    async fn credential_held(
        &self,
        secret_id: &str,
        description: &SecretDescription,
        deadline: &Deadline,
    ) -> Result<Credential, Error> {
        // Only a missing or foreign current value falls back: a failed read
        // must not rotate a retrain secret into another key.
        match deadline
            .work(self.store.get_value(secret_id, AWSCURRENT, None))
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
                    format!(
                        "cannot read the current value of {secret_id:?} to learn its credential"
                    ),
                    e,
                )));
            }
        }
        if let Some(tagged) = credential_of_tags(secret_id, description)? {
            return Ok(tagged);
        }
        let arn = description.arn.as_str();
        let config = &self.config;
        if secret_id::same_secret(arn, &config.deploy_secret_id)
            || secret_id::same_secret(secret_id, &config.deploy_secret_id)
        {
            return Ok(Credential::new(CredentialType::Deploy, None));
        }
        if secret_id::same_secret(arn, &config.train_secret_id)
            || secret_id::same_secret(secret_id, &config.train_secret_id)
        {
            return Ok(Credential::new(CredentialType::Train, None));
        }
        let name = secret_id::name_of(if arn.is_empty() { secret_id } else { arn });
        if let Some(model) = name.strip_prefix(config.retrain_secret_prefix.as_str()) {
            let model_id = ModelId::parse(model).ok_or_else(|| {
                Error::RotationError(Context::new(
                    format!(
                        "secret {secret_id:?} is under P1_RETRAIN_SECRET_PREFIX, but {model:?} is not a model id; nothing was issued or written"
                    ),
                    None,
                ))
            })?;
            return Ok(Credential::new(CredentialType::Retrain, Some(model_id)));
        }
        Err(Error::RotationError(Context::new(
            format!(
                "secret {secret_id:?} does not hold a Prediction One API key (its value is not a key record, it has no p1: tags, and it is neither a configured target nor under P1_RETRAIN_SECRET_PREFIX); this function rotates only Prediction One keys, so nothing was issued or written (give the secret its own rotation function)"
            ),
            None,
        )))
    }
}

/// The credential a secret's `p1:` tags name, if it has them.
fn credential_of_tags(
    secret_id: &str,
    description: &SecretDescription,
) -> Result<Option<Credential>, Error> {
    let tag = |name: &str| description.tags.get(name).map(String::as_str);
    let Some(tagged) = tag("p1:credential_type") else {
        if description.tags.keys().any(|k| k.starts_with("p1:")) {
            return Err(Error::RotationError(Context::new(
                format!(
                    "secret {secret_id:?} has p1: tags but no p1:credential_type; nothing was issued or written"
                ),
                None,
            )));
        }
        return Ok(None);
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
        return Ok(Some(Credential::new(credential_type, None)));
    }
    let model_id = tag("p1:model_id").and_then(ModelId::parse).ok_or_else(|| {
        Error::RotationError(Context::new(
            format!("secret {secret_id:?} is tagged retrain without a valid p1:model_id"),
            None,
        ))
    })?;
    Ok(Some(Credential::new(
        CredentialType::Retrain,
        Some(model_id),
    )))
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

/// testSecret (and finishSecret, before it moves AWSCURRENT): the pending
/// value is a record with a non-empty key that has not expired.
async fn test_pending(
    store: &impl SecretStore,
    secret_id: &str,
    token: &str,
    deadline: &Deadline,
) -> Result<(), Error> {
    let Some(value) = pending_value(store, secret_id, token, deadline).await? else {
        return Err(Error::RotationError(Context::new(
            format!("the AWSPENDING version {token} holds no value"),
            None,
        )));
    };
    check_pending(&value, secret_id, token)
}

/// The testSecret checks on a pending value. A value that fails them can
/// never pass (Secrets Manager will not let the token's version be
/// rewritten), so the error names the way out.
fn check_pending(value: &SecretString, secret_id: &str, token: &str) -> Result<(), Error> {
    let problem = match KeyRecord::parse(value) {
        None => "is not a valid API key record".to_string(),
        Some(record) if record.api_key.expose().trim().is_empty() => {
            "holds an empty api_key".to_string()
        }
        Some(record) => match record.expiry() {
            Some(at) if at <= Utc::now() => {
                format!("holds a key that expired at {}", expiry::format_instant(at))
            }
            _ => return Ok(()),
        },
    };
    Err(Error::RotationError(Context::new(
        format!(
            "the AWSPENDING version {token} of {secret_id:?} {problem}; it cannot be rewritten under the same token. Start over: remove AWSPENDING from that version (aws secretsmanager update-secret-version-stage --secret-id {secret_id} --version-stage AWSPENDING --remove-from-version-id {token}), then rotate again (aws secretsmanager rotate-secret --secret-id {secret_id}); docs/rotation.md, \"Rotation runbooks\""
        ),
        None,
    )))
}

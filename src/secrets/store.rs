//! The Secrets Manager port: just the calls this function makes, with the
//! errors it needs to tell apart.

use std::collections::HashMap;
use std::future::Future;

use crate::deadline::OutOfTime;
use crate::sensitive::{RotationToken, SecretString};

/// One version of a secret, as GetSecretValue returns it.
#[derive(Debug, Clone)]
pub struct SecretValue {
    pub arn: String,
    pub version_id: String,
    pub secret_string: Option<SecretString>,
    pub stages: Vec<String>,
}

/// Where a written value now lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionRef {
    pub arn: String,
    pub version_id: String,
}

/// DescribeSecret, reduced to what rotation and labelling need.
#[derive(Debug, Clone, Default)]
pub struct SecretDescription {
    pub arn: String,
    pub rotation_enabled: bool,
    pub versions: HashMap<String, Vec<String>>,
    pub tags: HashMap<String, String>,
}

impl SecretDescription {
    /// The version that carries `stage`, if any.
    pub fn version_with(&self, stage: &str) -> Option<&str> {
        self.versions
            .iter()
            .find(|(_, stages)| stages.iter().any(|s| s == stage))
            .map(|(id, _)| id.as_str())
    }
}

/// A new version to put.
#[derive(Debug, Clone, Copy)]
pub struct NewVersion<'a> {
    pub value: &'a SecretString,
    pub stages: &'a [&'a str],
    /// The ClientRequestToken, which becomes the version id (the SDK makes
    /// one up when it is `None`).
    pub client_request_token: Option<&'a str>,
    pub rotation_token: Option<&'a RotationToken>,
}

impl<'a> NewVersion<'a> {
    /// The secret's new current value.
    pub fn current(value: &'a SecretString) -> Self {
        NewVersion {
            value,
            stages: &[super::AWSCURRENT],
            client_request_token: None,
            rotation_token: None,
        }
    }

    /// A rotation's pending value, under the rotation's token.
    pub fn pending(
        value: &'a SecretString,
        client_request_token: &'a str,
        rotation_token: Option<&'a RotationToken>,
    ) -> Self {
        NewVersion {
            value,
            stages: &[super::AWSPENDING],
            client_request_token: Some(client_request_token),
            rotation_token,
        }
    }
}

/// What to create a missing secret with.
#[derive(Debug, Clone, Default)]
pub struct NewSecret {
    pub tags: Vec<(String, String)>,
    pub kms_key_id: Option<String>,
}

/// How a Secrets Manager call failed. Each carries the service's code and
/// message (never a secret value); the variant is what callers decide on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The secret, or the asked-for version or stage, does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The secret exists already (CreateSecret) or the token names another value.
    #[error("already exists: {0}")]
    Exists(String),
    /// The role may not do this (IAM or KMS).
    #[error("access denied: {0}")]
    AccessDenied(String),
    /// Secrets Manager asked to slow down.
    #[error("throttled: {0}")]
    Throttled(String),
    /// No answer within the time the invocation had left.
    #[error("timed out: {0}")]
    TimedOut(String),
    /// Anything else: a 5xx, a connection failure, a bad request.
    #[error("{0}")]
    Other(String),
}

impl From<OutOfTime> for StoreError {
    fn from(_: OutOfTime) -> Self {
        StoreError::TimedOut("no answer within the time the invocation had left".into())
    }
}

/// The port. `secret_id` is a name or an ARN throughout.
pub trait SecretStore: Send + Sync {
    /// The version carrying `stage` (and with `version_id`, when given:
    /// then a version without that stage is not found).
    fn get_value(
        &self,
        secret_id: &str,
        stage: &str,
        version_id: Option<&str>,
    ) -> impl Future<Output = Result<SecretValue, StoreError>> + Send;

    /// PutSecretValue: a new version of the secret.
    fn put_value(
        &self,
        secret_id: &str,
        version: &NewVersion<'_>,
    ) -> impl Future<Output = Result<VersionRef, StoreError>> + Send;

    /// CreateSecret with a first value (staged AWSCURRENT).
    fn create(
        &self,
        name: &str,
        value: &SecretString,
        new: &NewSecret,
    ) -> impl Future<Output = Result<VersionRef, StoreError>> + Send;

    fn describe(
        &self,
        secret_id: &str,
    ) -> impl Future<Output = Result<SecretDescription, StoreError>> + Send;

    /// UpdateSecretVersionStage: put `stage` on `to_version`, taking it off
    /// `from_version` (which must be named when another version holds it).
    /// Without `to_version` the stage is only removed.
    fn move_stage(
        &self,
        secret_id: &str,
        stage: &str,
        to_version: Option<&str>,
        from_version: Option<&str>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

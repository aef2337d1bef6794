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
    /// The secret's new current value, as version `token`
    /// ([`new_version_id`]): a retried write of it is the same version, and
    /// a write whose answer was lost can be looked for.
    pub fn current(value: &'a SecretString, token: &'a str) -> Self {
        NewVersion {
            value,
            stages: &[super::AWSCURRENT],
            client_request_token: Some(token),
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
    /// The first version's id ([`new_version_id`]).
    pub client_request_token: Option<String>,
}

/// A new version id (a random UUID, the form Secrets Manager uses): the
/// ClientRequestToken of a write, chosen before it is sent so that its
/// retries are idempotent and a write whose answer never came can be read
/// back (SPEC section 10). Not a secret: it is the version id the result
/// names.
pub fn new_version_id() -> String {
    let bits = fastrand::u128(..);
    // Version 4, variant 1 (RFC 9562).
    let bits = (bits & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    uuid_text(bits)
}

/// The ClientRequestToken of a renewal (SPEC section 12, "one renewal
/// wins"): a name-based UUID (RFC 9562 version 8, from SHA-256) of the
/// target and of the `AWSCURRENT` version the renewal read (`None`: the
/// target had none). Two renewals of one target that read the same version
/// derive the same token, so Secrets Manager keeps the first value written
/// under it and refuses the second (`ResourceExistsException`); a retry of
/// the same write is the same token and value, which it accepts once.
/// `target` is the secret's ARN when it was read (so that a name and an ARN
/// of one secret give one token), else its name.
pub fn renewal_token(target: &str, based_on: Option<&str>) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::new()
        .chain_update(b"p1-key-broker renewal\0")
        .chain_update(target.as_bytes())
        .chain_update(b"\0")
        .chain_update(based_on.unwrap_or("").as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    let bits = u128::from_be_bytes(bytes);
    // Version 8, variant 1 (RFC 9562).
    let bits = (bits & !(0xf << 76) | (0x8 << 76)) & !(0x3 << 62) | (0x2 << 62);
    uuid_text(bits)
}

fn uuid_text(bits: u128) -> String {
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Which secrets to list (ListSecrets' filters, ANDed): a name prefix, a
/// tag key and value, names that do not start with a prefix (a negated
/// name filter, `!prefix`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub name_prefix: Option<String>,
    pub tag: Option<(String, String)>,
    pub exclude_name_prefix: Option<String>,
}

/// One secret as ListSecrets describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListedSecret {
    pub arn: String,
    pub name: String,
    pub tags: HashMap<String, String>,
    /// Secrets Manager rotates it natively.
    pub rotation_enabled: bool,
}

/// A page of ListSecrets.
#[derive(Debug, Clone, Default)]
pub struct SecretPage {
    pub secrets: Vec<ListedSecret>,
    pub next_token: Option<String>,
}

/// BatchGetSecretValue's answer: the current values found, and for each id
/// that could not be read, its error code.
#[derive(Debug, Clone, Default)]
pub struct BatchValues {
    pub values: Vec<SecretValue>,
    pub errors: Vec<(String, String)>,
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
    /// The service failed (5xx) or the connection broke: the request may
    /// or may not have been carried out.
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: a bad request, an answer that could not be read.
    #[error("{0}")]
    Other(String),
}

impl StoreError {
    /// Whether the call may have been carried out although it failed (it
    /// timed out, the service or the connection failed): a write that
    /// failed so is read back before it is called lost.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self, StoreError::TimedOut(_) | StoreError::Unavailable(_))
    }
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

    /// ListSecrets: one page of the secrets `filter` selects (not those
    /// scheduled for deletion), from `next_token`.
    fn list(
        &self,
        filter: &ListFilter,
        next_token: Option<&str>,
    ) -> impl Future<Output = Result<SecretPage, StoreError>> + Send;

    /// BatchGetSecretValue: the AWSCURRENT values of up to 20 secrets.
    fn batch_get(
        &self,
        ids: &[String],
    ) -> impl Future<Output = Result<BatchValues, StoreError>> + Send;

    /// TagResource: one tag, set (or replaced).
    fn tag(
        &self,
        secret_id: &str,
        key: &str,
        value: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// UntagResource: one tag removed (nothing to remove is no error).
    fn untag(
        &self,
        secret_id: &str,
        key: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_ids_are_uuids() {
        let a = new_version_id();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
        assert!(a.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
        assert_ne!(a, new_version_id());
    }

    #[test]
    fn renewal_tokens_are_stable_uuids_of_the_target_and_the_version_read() {
        let arn = "arn:aws:secretsmanager:us-east-1:1:secret:t-AbCdEf";
        let a = renewal_token(arn, Some("v1"));
        assert_eq!(a, renewal_token(arn, Some("v1")), "same read, same token");
        assert_ne!(
            a,
            renewal_token(arn, Some("v2")),
            "a newer version, a new renewal"
        );
        assert_ne!(a, renewal_token(arn, None));
        assert_ne!(
            a,
            renewal_token(
                "arn:aws:secretsmanager:us-east-1:1:secret:u-AbCdEf",
                Some("v1")
            )
        );
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "8");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
    }
}

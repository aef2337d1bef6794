//! The words everything shares: which kind of key ([`CredentialType`]), for
//! which model API ([`ModelId`]), together a [`Credential`]; and whether a
//! key was served [`Status::Issued`] or [`Status::Fresh`].
//!
//! They sit below the configuration, the request and the metrics, so that
//! none of them has to import another; the stored record and the vendor
//! client speak them too.

use serde::Serialize;

/// How a key was served: the result's `status`, and which of `KeysIssued`
/// and `KeysFresh` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// A new key was fetched and stored.
    Issued,
    /// The stored key is still valid; nothing was fetched.
    Fresh,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Issued => "issued",
            Status::Fresh => "fresh",
        }
    }
}

/// The vendor's `credential_type` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialType {
    Train,
    Retrain,
    Deploy,
}

impl CredentialType {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialType::Train => "train",
            CredentialType::Retrain => "retrain",
            CredentialType::Deploy => "deploy",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "train" => Some(CredentialType::Train),
            "retrain" => Some(CredentialType::Retrain),
            "deploy" => Some(CredentialType::Deploy),
            _ => None,
        }
    }
}

/// The model API a retrain key is for: 1–64 characters of `[A-Za-z0-9_-]`.
/// The pattern is what keeps a model_id from steering a write outside the
/// retrain prefix (no `/`, `..`, or ARN syntax can pass it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ModelId(String);

impl ModelId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(value: &str) -> Option<Self> {
        let ok = !value.is_empty()
            && value.len() <= Self::MAX_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        ok.then(|| ModelId(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a key is for: the two query parameters of the vendor call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Credential {
    pub credential_type: CredentialType,
    pub model_id: Option<ModelId>,
}

impl Credential {
    pub fn new(credential_type: CredentialType, model_id: Option<ModelId>) -> Self {
        Credential {
            credential_type,
            model_id,
        }
    }
}

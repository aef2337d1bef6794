//! The Prediction One Get API Key client: the port the broker calls, its
//! errors, and the HTTP adapter.
//!
//! - [`response`] turns a status and body into a key or a contract error;
//!   it is pure, so the vendor's undocumented corners are unit-tested there.
//! - [`backoff`] decides how long to wait before a retry.
//! - [`http`] is the reqwest adapter: timeouts, retries, the 64 KiB cap.

pub mod backoff;
pub mod http;
pub mod response;

use std::future::Future;

use crate::error::Error;
use crate::request::Credential;
use crate::sensitive::{ApiKey, SecretKey};

pub use http::HttpVendor;

/// A key as the vendor issued it. `end_date` is the raw string.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub api_key: ApiKey,
    pub end_date: String,
}

/// The port: issue an API key for a credential with a secret key.
pub trait Vendor: Send + Sync {
    fn get_api_key(
        &self,
        secret_key: &SecretKey,
        credential: &Credential,
    ) -> impl Future<Output = Result<IssuedKey, Error>> + Send;
}

/// How a vendor call failed, one variant per `PredictionOne.*` errorType.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VendorError {
    #[error("Prediction One rejected the secret key: it does not exist (invalid_api_key)")]
    InvalidSecretKey,
    #[error("Prediction One rejected the secret key as incorrect (Inactive_credential)")]
    InactiveCredential,
    #[error("Prediction One rejected the secret key as incorrect (Not_found_credential)")]
    CredentialNotFound,
    #[error("Prediction One says the user may have been deleted")]
    UserDeleted,
    #[error("Prediction One says the model may have been deleted")]
    ModelDeleted,
    #[error("Prediction One requires a model_id for a retrain key")]
    ModelIdRequired,
    #[error("Prediction One refused the request (HTTP {status}): {message}")]
    BadRequest { status: u16, message: String },
    #[error("Prediction One throttled the request ({attempts} attempt(s))")]
    Throttled { attempts: u32 },
    #[error("Prediction One is unavailable after {attempts} attempt(s): {detail}")]
    Unavailable { attempts: u32, detail: String },
    #[error("Prediction One did not answer in time ({attempts} attempt(s))")]
    Timeout { attempts: u32 },
    #[error("Prediction One sent a malformed response: {0}")]
    MalformedResponse(String),
}

impl VendorError {
    pub fn error_type(&self) -> &'static str {
        match self {
            VendorError::InvalidSecretKey => "PredictionOne.InvalidSecretKey",
            VendorError::InactiveCredential => "PredictionOne.InactiveCredential",
            VendorError::CredentialNotFound => "PredictionOne.CredentialNotFound",
            VendorError::UserDeleted => "PredictionOne.UserDeleted",
            VendorError::ModelDeleted => "PredictionOne.ModelDeleted",
            VendorError::ModelIdRequired => "PredictionOne.ModelIdRequired",
            VendorError::BadRequest { .. } => "PredictionOne.BadRequest",
            VendorError::Throttled { .. } => "PredictionOne.Throttled",
            VendorError::Unavailable { .. } => "PredictionOne.Unavailable",
            VendorError::Timeout { .. } => "PredictionOne.Timeout",
            VendorError::MalformedResponse(_) => "PredictionOne.MalformedResponse",
        }
    }

    /// The secret key itself was refused: worth re-reading it once, in case
    /// it was rotated since this instance cached it.
    pub fn is_credential_error(&self) -> bool {
        matches!(
            self,
            VendorError::InvalidSecretKey
                | VendorError::InactiveCredential
                | VendorError::CredentialNotFound
        )
    }
}

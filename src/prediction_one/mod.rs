//! The Prediction One client: the port the use case calls ([`KeyIssuer`]),
//! its errors ([`PredictionOneError`], one variant per `PredictionOne.*`
//! errorType), and the HTTP adapter ([`PredictionOneClient`]).
//!
//! - [`response`] turns a status and body into a key or a contract error;
//!   it is pure, so the vendor's undocumented corners are unit-tested there.
//! - [`backoff`] decides how long to wait before a retry.
//! - [`client`] is the reqwest adapter: timeouts, retries, the 64 KiB cap.
//!
//! This module knows nothing of the function's configuration or error
//! enum: the use case maps [`PredictionOneError`] into `Error`. It knows
//! the invocation's [`Deadline`]: retries must fit in it.

pub mod backoff;
pub mod client;
pub mod response;
pub mod retrain;

use std::future::Future;

use crate::credential::Credential;
use crate::deadline::Deadline;
use crate::sensitive::{ApiKey, SecretKey};

pub use client::PredictionOneClient;
pub use retrain::{JobStatus, RetrainApi, UploadTicket};

/// A key as the vendor issued it. `end_date` is the raw string.
#[derive(Debug, Clone)]
pub struct IssuedKey {
    pub api_key: ApiKey,
    pub end_date: String,
}

/// The port: issue an API key for a credential with a secret key (the
/// vendor's Get API Key call).
pub trait KeyIssuer: Send + Sync {
    /// Ends by the deadline's work point, whatever the vendor does.
    fn get_api_key(
        &self,
        secret_key: &SecretKey,
        credential: &Credential,
        deadline: &Deadline,
    ) -> impl Future<Output = Result<IssuedKey, PredictionOneError>> + Send;
}

/// How a vendor call failed, one variant per `PredictionOne.*` errorType.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PredictionOneError {
    /// The key the call was made with (the secret key for Get API Key, the
    /// model's retrain key for a retraining call) does not exist.
    #[error(
        "Prediction One rejected the key it was called with: it does not exist (invalid_api_key)"
    )]
    InvalidSecretKey,
    #[error(
        "Prediction One rejected the key it was called with as incorrect (Inactive_credential)"
    )]
    InactiveCredential,
    #[error(
        "Prediction One rejected the key it was called with as incorrect (Not_found_credential)"
    )]
    CredentialNotFound,
    #[error("Prediction One says the user may have been deleted")]
    UserDeleted,
    #[error("Prediction One says the model may have been deleted")]
    ModelDeleted,
    #[error("Prediction One requires a model_id for a retrain key")]
    ModelIdRequired,
    #[error("Prediction One has no such retrain job (Not found retrain job)")]
    RetrainJobNotFound,
    #[error("Prediction One says the retrain job may have been deleted")]
    JobDeleted,
    #[error(
        "Prediction One cannot find the model's configuration file (Not found configuration_file); it may have been deleted"
    )]
    ConfigurationFileMissing,
    #[error(
        "Prediction One cannot find the model API to switch (Not found classifier); it may have been deleted"
    )]
    ClassifierNotFound,
    #[error("Prediction One says the retrain job is not finished")]
    RetrainNotFinished,
    /// The PUT of the training data to the pre-signed upload URL failed
    /// (5xx, 408, 429, a broken or stalled connection, no time left).
    #[error("uploading the data to Prediction One failed after {attempts} attempt(s): {detail}")]
    UploadFailed { attempts: u32, detail: String },
    /// The upload URL refused the data (a 4xx other than 408 and 429): a
    /// new job's URL would refuse it the same way, so nothing retries it.
    #[error("Prediction One's upload URL refused the data: {detail}; not retried")]
    UploadRefused { detail: String },
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
    /// Never sent: the secret key cannot go into an HTTP header. The use
    /// case reports it as `SecretKeyUnavailable`.
    #[error("the secret key holds characters that cannot be sent in an HTTP header")]
    UnsendableSecretKey,
}

impl PredictionOneError {
    pub fn error_type(&self) -> &'static str {
        match self {
            PredictionOneError::InvalidSecretKey => "PredictionOne.InvalidSecretKey",
            PredictionOneError::InactiveCredential => "PredictionOne.InactiveCredential",
            PredictionOneError::CredentialNotFound => "PredictionOne.CredentialNotFound",
            PredictionOneError::UserDeleted => "PredictionOne.UserDeleted",
            PredictionOneError::ModelDeleted => "PredictionOne.ModelDeleted",
            PredictionOneError::ModelIdRequired => "PredictionOne.ModelIdRequired",
            PredictionOneError::RetrainJobNotFound => "PredictionOne.RetrainJobNotFound",
            PredictionOneError::JobDeleted => "PredictionOne.JobDeleted",
            PredictionOneError::ConfigurationFileMissing => {
                "PredictionOne.ConfigurationFileMissing"
            }
            PredictionOneError::ClassifierNotFound => "PredictionOne.ClassifierNotFound",
            PredictionOneError::RetrainNotFinished => "PredictionOne.RetrainNotFinished",
            PredictionOneError::UploadFailed { .. } => "PredictionOne.UploadFailed",
            PredictionOneError::UploadRefused { .. } => "PredictionOne.UploadRefused",
            PredictionOneError::BadRequest { .. } => "PredictionOne.BadRequest",
            PredictionOneError::Throttled { .. } => "PredictionOne.Throttled",
            PredictionOneError::Unavailable { .. } => "PredictionOne.Unavailable",
            PredictionOneError::Timeout { .. } => "PredictionOne.Timeout",
            PredictionOneError::MalformedResponse(_) => "PredictionOne.MalformedResponse",
            PredictionOneError::UnsendableSecretKey => "SecretKeyUnavailable",
        }
    }

    /// Worth trying again later (Lambda, SQS, Step Functions retries): the
    /// vendor was busy, failing or slow, not refusing the request.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            PredictionOneError::Throttled { .. }
                | PredictionOneError::Unavailable { .. }
                | PredictionOneError::Timeout { .. }
                | PredictionOneError::UploadFailed { .. }
        )
    }

    /// The credential was refused: for Get API Key the secret key (worth
    /// re-reading it once, in case it was rotated since this instance
    /// cached it); for a retraining call the model's retrain key (worth
    /// issuing a new one once).
    pub fn is_credential_error(&self) -> bool {
        matches!(
            self,
            PredictionOneError::InvalidSecretKey
                | PredictionOneError::InactiveCredential
                | PredictionOneError::CredentialNotFound
        )
    }
}

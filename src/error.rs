//! One error enum for the whole function, mapped to the contract's stable
//! `errorType`s (SPEC section 7) through `From<Error> for Diagnostic`.
//!
//! Messages carry context (which secret, which version, what the vendor said)
//! but never a secret: values that could hold one are typed in
//! [`crate::sensitive`] and print redacted, and vendor text is scrubbed of the
//! secret key before it gets here (see `vendor::http`).

use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use lambda_runtime::Diagnostic;

use crate::vendor::VendorError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The payload or request is not what the contract accepts.
    #[error("{0}")]
    InvalidRequest(String),
    /// The environment does not configure the function correctly.
    #[error("{0}")]
    Config(String),
    /// The Prediction One secret key could not be read from Secrets Manager.
    #[error("{0}")]
    SecretKeyUnavailable(String),
    /// The Get API Key call failed; the variant says how.
    #[error(transparent)]
    Vendor(#[from] VendorError),
    /// A key was issued but could not be stored (or the target could not be read).
    #[error("{0}")]
    StoreFailed(String),
    /// A Secrets Manager rotation step failed.
    #[error("{0}")]
    Rotation(String),
    /// The key is stored, but telling Step Functions or EventBridge failed.
    #[error("{0}")]
    HandOffFailed(String),
}

/// Every `errorType` the function can return. The Step Functions workflow in
/// `infra/` is checked against this list so that its Retry/Catch names cannot
/// drift from the code.
pub const ERROR_TYPES: &[&str] = &[
    "InvalidRequest",
    "ConfigError",
    "SecretKeyUnavailable",
    "PredictionOne.InvalidSecretKey",
    "PredictionOne.InactiveCredential",
    "PredictionOne.CredentialNotFound",
    "PredictionOne.UserDeleted",
    "PredictionOne.ModelDeleted",
    "PredictionOne.ModelIdRequired",
    "PredictionOne.BadRequest",
    "PredictionOne.Throttled",
    "PredictionOne.Unavailable",
    "PredictionOne.Timeout",
    "PredictionOne.MalformedResponse",
    "StoreFailed",
    "RotationError",
    "HandOffFailed",
];

impl Error {
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::InvalidRequest(_) => "InvalidRequest",
            Error::Config(_) => "ConfigError",
            Error::SecretKeyUnavailable(_) => "SecretKeyUnavailable",
            Error::Vendor(e) => e.error_type(),
            Error::StoreFailed(_) => "StoreFailed",
            Error::Rotation(_) => "RotationError",
            Error::HandOffFailed(_) => "HandOffFailed",
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidRequest(message.into())
    }
}

impl From<Error> for Diagnostic {
    fn from(error: Error) -> Self {
        Diagnostic {
            error_type: error.error_type().to_string(),
            error_message: error.to_string(),
        }
    }
}

/// Renders an AWS SDK error with its service code and message, without the
/// raw HTTP response (which `Debug` would include).
/// (The smithy types are re-exported by every SDK crate; any one will do.)
pub fn describe_sdk_error<E, R>(err: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match err {
        SdkError::ServiceError(service) => {
            let e = service.err();
            match (e.code(), e.message()) {
                (Some(code), Some(msg)) => format!("{code}: {msg}"),
                (Some(code), None) => code.to_string(),
                _ => e.to_string(),
            }
        }
        SdkError::TimeoutError(_) => "request timed out".to_string(),
        SdkError::DispatchFailure(d) => {
            if d.is_io() {
                "connection failed".to_string()
            } else if d.is_timeout() {
                "request timed out".to_string()
            } else {
                "request could not be sent".to_string()
            }
        }
        SdkError::ResponseError(_) => "unreadable response".to_string(),
        SdkError::ConstructionFailure(_) => "request could not be built".to_string(),
        _ => "unknown error".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_type_is_listed() {
        use crate::vendor::VendorError as V;
        let errors = [
            Error::invalid("x"),
            Error::Config("x".into()),
            Error::SecretKeyUnavailable("x".into()),
            Error::StoreFailed("x".into()),
            Error::Rotation("x".into()),
            Error::HandOffFailed("x".into()),
            V::InvalidSecretKey.into(),
            V::InactiveCredential.into(),
            V::CredentialNotFound.into(),
            V::UserDeleted.into(),
            V::ModelDeleted.into(),
            V::ModelIdRequired.into(),
            V::BadRequest {
                status: 400,
                message: "x".into(),
            }
            .into(),
            V::Throttled { attempts: 3 }.into(),
            V::Unavailable {
                attempts: 3,
                detail: "x".into(),
            }
            .into(),
            V::Timeout { attempts: 3 }.into(),
            V::MalformedResponse("x".into()).into(),
        ];
        let mut seen: Vec<&str> = errors.iter().map(Error::error_type).collect();
        seen.sort();
        let mut listed = ERROR_TYPES.to_vec();
        listed.sort();
        assert_eq!(seen, listed);
    }

    #[test]
    fn diagnostic_carries_type_and_message() {
        let d: Diagnostic = Error::invalid("unknown field `credentialType`").into();
        assert_eq!(d.error_type, "InvalidRequest");
        assert_eq!(d.error_message, "unknown field `credentialType`");
    }
}

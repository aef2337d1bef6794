//! One error enum for the whole function, its variants named like the
//! contract's stable `errorType`s (SPEC section 7), mapped to Lambda's error
//! shape through `From<Error> for Diagnostic`.
//!
//! A variant's text says what failed in the function's terms (which secret,
//! which version); the port error that caused it is kept as its `source`,
//! and [`Error::report`] joins the two for the Lambda answer and the logs.
//! Neither ever holds a secret: values that could are typed in
//! [`crate::sensitive`] and print redacted, and vendor text is scrubbed of
//! the secret key before it gets here (`prediction_one::response`).
//! Mapping AWS SDK errors is the adapters' job (`secrets::aws`,
//! `handoff::aws`, `objects::s3`), so nothing here knows the SDK.

use lambda_runtime::Diagnostic;

use crate::handoff::HandoffError;
use crate::objects::ObjectError;
use crate::prediction_one::PredictionOneError;
use crate::secrets::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The payload or request is not what the contract accepts.
    #[error("{0}")]
    InvalidRequest(String),
    /// The environment does not configure the function correctly.
    #[error("{0}")]
    ConfigError(String),
    /// The Prediction One secret key could not be read from Secrets Manager.
    #[error(transparent)]
    SecretKeyUnavailable(Context<StoreError>),
    /// The vendor call failed; the inner error says how.
    #[error(transparent)]
    PredictionOne(PredictionOneError),
    /// The target could not be read or written.
    #[error(transparent)]
    StoreFailed(Context<StoreError>),
    /// A Secrets Manager rotation step failed.
    #[error(transparent)]
    RotationError(Context<StoreError>),
    /// The key is stored, but telling Step Functions or EventBridge failed.
    #[error(transparent)]
    HandOffFailed(Context<HandoffError>),
    /// Retrain runner: the training data in S3 is missing, unreadable,
    /// empty, or not a `.csv` / `.zip` file.
    #[error(transparent)]
    DataUnavailable(Context<ObjectError>),
    /// Retrain runner: a finished job's results could not be fetched.
    #[error("{0}")]
    ResultsUnavailable(String),
}

/// What failed, in the function's terms, and the port error that caused
/// it, when there is one.
#[derive(Debug)]
pub struct Context<S> {
    pub message: String,
    pub source: Option<S>,
}

impl<S> Context<S> {
    pub fn new(message: impl Into<String>, source: impl Into<Option<S>>) -> Self {
        Context {
            message: message.into(),
            source: source.into(),
        }
    }
}

impl<S> std::fmt::Display for Context<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl<S: std::error::Error + 'static> std::error::Error for Context<S> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
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
    "PredictionOne.RetrainJobNotFound",
    "PredictionOne.JobDeleted",
    "PredictionOne.ConfigurationFileMissing",
    "PredictionOne.ClassifierNotFound",
    "PredictionOne.RetrainNotFinished",
    "PredictionOne.UploadFailed",
    "PredictionOne.UploadRefused",
    "StoreFailed",
    "RotationError",
    "HandOffFailed",
    "DataUnavailable",
    "ResultsUnavailable",
];

impl Error {
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::InvalidRequest(_) => "InvalidRequest",
            Error::ConfigError(_) => "ConfigError",
            Error::SecretKeyUnavailable(_) => "SecretKeyUnavailable",
            Error::PredictionOne(e) => e.error_type(),
            Error::StoreFailed(_) => "StoreFailed",
            Error::RotationError(_) => "RotationError",
            Error::HandOffFailed(_) => "HandOffFailed",
            Error::DataUnavailable(_) => "DataUnavailable",
            Error::ResultsUnavailable(_) => "ResultsUnavailable",
        }
    }

    /// The message with its cause: what Lambda, Step Functions and the logs
    /// are told.
    pub fn report(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            text.push_str(": ");
            text.push_str(&e.to_string());
            cause = e.source();
        }
        text
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidRequest(message.into())
    }

    /// A vendor answer that no retry will change (the model or the user is
    /// gone): a renewal that fails so marks its secret, and sweeps skip it
    /// (SPEC section 12).
    pub fn stops_renewal(&self) -> bool {
        stops_renewal(self.error_type())
    }
}

/// Whether an errorType is one of the vendor's answers that no retry will
/// change ([`Error::stops_renewal`]).
pub fn stops_renewal(error_type: &str) -> bool {
    matches!(
        error_type,
        "PredictionOne.ModelDeleted"
            | "PredictionOne.UserDeleted"
            | "PredictionOne.ModelIdRequired"
    )
}

impl From<PredictionOneError> for Error {
    fn from(error: PredictionOneError) -> Self {
        match error {
            // Not the vendor's answer: the secret key itself is unusable.
            PredictionOneError::UnsendableSecretKey => Error::SecretKeyUnavailable(Context::new(
                "the secret key holds characters that cannot be sent in an HTTP header",
                None,
            )),
            other => Error::PredictionOne(other),
        }
    }
}

impl From<Error> for Diagnostic {
    fn from(error: Error) -> Self {
        Diagnostic {
            error_type: error.error_type().to_string(),
            error_message: error.report(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_error_type_is_listed() {
        use crate::prediction_one::PredictionOneError as P;
        let errors = [
            Error::invalid("x"),
            Error::ConfigError("x".into()),
            Error::SecretKeyUnavailable(Context::new("x", None)),
            Error::StoreFailed(Context::new("x", None)),
            Error::RotationError(Context::new("x", None)),
            Error::HandOffFailed(Context::new("x", None)),
            P::InvalidSecretKey.into(),
            P::InactiveCredential.into(),
            P::CredentialNotFound.into(),
            P::UserDeleted.into(),
            P::ModelDeleted.into(),
            P::ModelIdRequired.into(),
            P::BadRequest {
                status: 400,
                message: "x".into(),
            }
            .into(),
            P::Throttled { attempts: 3 }.into(),
            P::Unavailable {
                attempts: 3,
                detail: "x".into(),
            }
            .into(),
            P::Timeout { attempts: 3 }.into(),
            P::MalformedResponse("x".into()).into(),
            P::RetrainJobNotFound.into(),
            P::JobDeleted.into(),
            P::ConfigurationFileMissing.into(),
            P::ClassifierNotFound.into(),
            P::RetrainNotFinished.into(),
            P::UploadFailed {
                attempts: 1,
                detail: "x".into(),
            }
            .into(),
            P::UploadRefused { detail: "x".into() }.into(),
            Error::DataUnavailable(Context::new("x", None)),
            Error::ResultsUnavailable("x".into()),
        ];
        let mut seen: Vec<&str> = errors.iter().map(Error::error_type).collect();
        seen.sort();
        let mut listed = ERROR_TYPES.to_vec();
        listed.sort();
        assert_eq!(seen, listed);
        let unsendable: Error = P::UnsendableSecretKey.into();
        assert_eq!(unsendable.error_type(), "SecretKeyUnavailable");
    }

    #[test]
    fn diagnostic_carries_type_message_and_cause() {
        let d: Diagnostic = Error::invalid("unknown field `credentialType`").into();
        assert_eq!(d.error_type, "InvalidRequest");
        assert_eq!(d.error_message, "unknown field `credentialType`");
        let e = Error::StoreFailed(Context::new(
            "cannot read the target secret \"t\"",
            StoreError::AccessDenied("AccessDeniedException: no".into()),
        ));
        assert!(std::error::Error::source(&e).is_some());
        let d: Diagnostic = e.into();
        assert_eq!(d.error_type, "StoreFailed");
        assert_eq!(
            d.error_message,
            "cannot read the target secret \"t\": access denied: AccessDeniedException: no"
        );
    }
}

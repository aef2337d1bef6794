//! What the AWS adapters (`secrets::aws`, `handoff::aws`) share: reading an
//! SDK error as a service code and a message that is safe to show.
//!
//! `SdkError`'s `Debug` includes the raw HTTP response, and its `Display` is
//! terse ("service error"); this keeps the code and the service's message
//! and nothing else. (The smithy types are re-exported by every SDK crate;
//! any one will do.)

use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

/// The service's error code, when the service answered with one.
pub fn error_code<E, R>(err: &SdkError<E, R>) -> Option<&str>
where
    E: ProvideErrorMetadata,
{
    match err {
        SdkError::ServiceError(service) => service.err().code(),
        _ => None,
    }
}

/// The error as one line: `Code: message` from the service, or the class of
/// failure (timeout, connection) when no answer came.
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

/// Error codes that mean "slow down" across AWS services.
pub fn is_throttling(code: &str) -> bool {
    matches!(
        code,
        "ThrottlingException"
            | "Throttling"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "LimitExceededException"
    )
}

//! What the AWS adapters (`secrets::aws`, `handoff::aws`, `objects::s3`)
//! share: how one call spends the time it has, and reading an SDK error as
//! a service code and a message that is safe to show.
//!
//! `SdkError`'s `Debug` includes the raw HTTP response, and its `Display` is
//! terse ("service error"); this keeps the code and the service's message
//! and nothing else. (The smithy types are re-exported by every SDK crate;
//! any one will do.)

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};

/// Attempts per AWS call, the first included.
pub const ATTEMPTS: u32 = 3;
/// The longest one attempt may take when time is plentiful. Secrets
/// Manager, Step Functions and EventBridge answer in tens of milliseconds.
pub const MAX_ATTEMPT: Duration = Duration::from_secs(5);
/// An attempt is never cut shorter than this while the call has it: a
/// healthy call that opens a new TLS connection takes a few round trips
/// (docs/reliability.md has the healthy calls' times against moto).
pub const MIN_ATTEMPT: Duration = Duration::from_millis(300);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How one AWS call with `left` to run spends it (SPEC section 10, "One
/// stalled request is not fatal"): each attempt gets 3/10 of the time (at
/// least [`MIN_ATTEMPT`], at most [`MAX_ATTEMPT`]), so that an attempt on a
/// connection that never answers costs one attempt and a second, on a new
/// connection, still fits; the waits between attempts are a fiftieth of the
/// time at first and a tenth at most (the SDK's own default, 1 s doubling
/// up to 20 s, would not fit); and the whole call ends with the time.
///
/// Only operation timeouts are set, never the connect timeout: that one is
/// part of the HTTP connector's settings, and a new value per call would
/// give each call a new connection pool.
pub fn attempts_within(left: Duration) -> (TimeoutConfig, RetryConfig) {
    let attempt = (left * 3 / 10).max(left.min(MIN_ATTEMPT)).min(MAX_ATTEMPT);
    let timeouts = TimeoutConfig::builder()
        .operation_timeout(left)
        .operation_attempt_timeout(attempt)
        .build();
    let retry = RetryConfig::standard()
        .with_max_attempts(ATTEMPTS)
        .with_initial_backoff((left / 50).clamp(Duration::from_millis(1), MAX_BACKOFF / 10))
        .with_max_backoff((left / 10).clamp(Duration::from_millis(1), MAX_BACKOFF));
    (timeouts, retry)
}

/// [`attempts_within`] the time the current port call has left
/// (`crate::deadline`), or `None` outside a bounded call (the client's own
/// settings then apply).
pub fn sized_attempts() -> Option<(TimeoutConfig, RetryConfig)> {
    crate::deadline::call_time_left().map(attempts_within)
}

/// A per-call config override for one SDK crate's `config::Builder`, its
/// attempts sized with [`sized_attempts`] (the crates' builders share no
/// trait, hence a macro).
macro_rules! sized_override {
    ($builder:ty) => {{
        let mut config = <$builder>::default();
        if let Some((timeouts, retry)) = $crate::aws::sized_attempts() {
            config = config.timeout_config(timeouts).retry_config(retry);
        }
        config
    }};
}
pub(crate) use sized_override;

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
            let tls = d
                .as_connector_error()
                .and_then(|c| crate::tls::failure_of(c));
            if let Some(tls) = tls {
                format!("connection failed: {tls}")
            } else if d.is_io() {
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

/// Whether a failed call may have been carried out by the service all the
/// same: it timed out or its connection broke after the request may have
/// been sent, or the service failed (5xx). A write that failed this way is
/// read back before anyone is told it did not happen (SPEC section 10).
pub fn outcome_unknown<E>(err: &SdkError<E>) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(d) => d.is_io() || d.is_timeout(),
        SdkError::ServiceError(s) => s.raw().status().is_server_error(),
        _ => false,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_fit_the_time_left() {
        for (left_ms, attempt_ms) in [
            (60_000, 5_000),
            (10_000, 3_000),
            (1_750, 525),
            (800, 300),
            (200, 200),
        ] {
            let left = Duration::from_millis(left_ms);
            let (t, r) = attempts_within(left);
            assert_eq!(t.operation_timeout(), Some(left));
            assert_eq!(
                t.operation_attempt_timeout(),
                Some(Duration::from_millis(attempt_ms)),
                "{left_ms}"
            );
            assert_eq!(r.max_attempts(), ATTEMPTS);
            // Two attempts and the longest wait between them fit, so that a
            // stalled first attempt leaves room for a second.
            if left >= 2 * MIN_ATTEMPT {
                assert!(
                    2 * attempt_ms + r.max_backoff().as_millis() as u64 <= left_ms,
                    "{left_ms}"
                );
            }
            assert!(r.max_backoff() <= left / 10 + Duration::from_millis(1));
            assert!(r.initial_backoff() <= r.max_backoff());
        }
    }
}

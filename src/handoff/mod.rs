//! Handing results to pipelines (SPEC section 5): Step Functions task
//! callbacks and EventBridge announcements. Both carry a reference to the
//! stored key (secret ARN and version), never the key, unless the caller was
//! allowed to ask for it.

pub mod aws;

use std::future::Future;

use crate::sensitive::TaskToken;

pub use aws::AwsHandoff;

pub const EVENT_SOURCE: &str = "p1-key-broker";
pub const EVENT_DETAIL_TYPE: &str = "Prediction One API Key Issued";

/// The port. Errors are plain descriptions: the caller wraps them into
/// `HandOffFailed` with the stored version named.
pub trait Handoff: Send + Sync {
    fn task_success(
        &self,
        token: &TaskToken,
        output: &str,
    ) -> impl Future<Output = Result<(), String>> + Send;
    fn task_failure(
        &self,
        token: &TaskToken,
        error: &str,
        cause: &str,
    ) -> impl Future<Output = Result<(), String>> + Send;
    fn announce(&self, bus: &str, detail: &str) -> impl Future<Output = Result<(), String>> + Send;
}

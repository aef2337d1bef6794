//! Handing results and work to pipelines: Step Functions task callbacks and
//! EventBridge announcements (SPEC section 5), which carry a reference to
//! the stored key (secret ARN and version), never the key, unless the caller
//! was allowed to ask for it; and the renewal sweep's requests to the
//! broker's own SQS queue (SPEC section 12), which carry no key at all.

pub mod aws;

use std::future::Future;

use crate::deadline::OutOfTime;
use crate::sensitive::TaskToken;

pub use aws::AwsHandoff;

pub const EVENT_SOURCE: &str = "p1-key-broker";
pub const EVENT_DETAIL_TYPE: &str = "Prediction One API Key Issued";

/// How a hand-off failed. The use case wraps it into `HandOffFailed` with
/// the stored version named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoffError {
    /// Step Functions no longer waits for this token (`TaskTimedOut`,
    /// `TaskDoesNotExist`, `InvalidToken`): no retry can deliver the report.
    #[error("{operation} refused: the task is gone ({detail})")]
    TaskGone {
        operation: &'static str,
        code: String,
        detail: String,
    },
    /// Anything else (throttling, 5xx, network, a rejected event): a retry
    /// may succeed.
    #[error("{operation} failed: {detail}")]
    Failed {
        operation: &'static str,
        detail: String,
    },
}

impl From<OutOfTime> for HandoffError {
    fn from(_: OutOfTime) -> Self {
        HandoffError::Failed {
            operation: "the hand-off",
            detail: "no answer within the time the invocation had left".into(),
        }
    }
}

impl HandoffError {
    /// Step Functions no longer waits for the report.
    pub fn is_task_gone(&self) -> bool {
        matches!(self, HandoffError::TaskGone { .. })
    }
}

/// The port.
pub trait Handoff: Send + Sync {
    fn task_success(
        &self,
        token: &TaskToken,
        output: &str,
    ) -> impl Future<Output = Result<(), HandoffError>> + Send;
    fn task_failure(
        &self,
        token: &TaskToken,
        error: &str,
        cause: &str,
    ) -> impl Future<Output = Result<(), HandoffError>> + Send;
    fn announce(
        &self,
        bus: &str,
        detail: &str,
    ) -> impl Future<Output = Result<(), HandoffError>> + Send;
    /// Whether Step Functions still waits for the task (the retrain runner
    /// asks before it starts work that a gone task would waste).
    fn task_heartbeat(
        &self,
        token: &TaskToken,
    ) -> impl Future<Output = Result<(), HandoffError>> + Send;
    /// SendMessageBatch of up to 10 request bodies to `queue_url`: the
    /// positions of those SQS did not take.
    fn send_requests(
        &self,
        queue_url: &str,
        bodies: &[String],
    ) -> impl Future<Output = Result<Vec<usize>, HandoffError>> + Send;
}

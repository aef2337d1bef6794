//! Reporting an outcome to Step Functions with a task token (SPEC sections
//! 5 and 10), shared by the key broker and the retrain runner.
//!
//! Once Step Functions has the outcome it owns it (its Retry and Catch
//! decide), so the invocation succeeds; only a failed report is an error
//! (`HandOffFailed`), so that Lambda or SQS retries it. A report refused
//! because the task is gone ends the hand-off: the workflow no longer waits
//! and no retry could deliver it.

use serde_json::{Value, json};

use crate::deadline::Deadline;
use crate::error::{Context, Error};
use crate::handoff::{Handoff, HandoffError};
use crate::sensitive::TaskToken;

/// Reports `outcome` (the output object, or the error) within the finish
/// budget, and answers with the output, or for a reported failure
/// `{"status": "failed", "errorType", "errorMessage"}`.
///
/// `done` says what succeeded, for the `HandOffFailed` message when a
/// success cannot be reported; `gone` is told the code when the task is gone.
pub async fn to_step_functions(
    handoff: &impl Handoff,
    token: &TaskToken,
    outcome: Result<Value, Error>,
    done: impl FnOnce() -> String,
    gone: impl Fn(&str),
    deadline: &Deadline,
) -> Result<Value, Error> {
    let is_gone = |e: &HandoffError| match e {
        HandoffError::TaskGone { code, .. } => {
            gone(code);
            true
        }
        HandoffError::Failed { .. } => false,
    };
    match outcome {
        Ok(output) => {
            let sent = deadline
                .finish(handoff.task_success(token, &output.to_string()))
                .await;
            match sent {
                Ok(()) => Ok(output),
                Err(e) if is_gone(&e) => Ok(output),
                Err(e) => Err(Error::HandOffFailed(Context::new(
                    format!("{}, but reporting success to Step Functions failed", done()),
                    e,
                ))),
            }
        }
        Err(error) => {
            let (error_type, message) = (error.error_type(), error.report());
            let sent = deadline
                .finish(handoff.task_failure(token, error_type, &message))
                .await;
            let failed =
                || json!({"status": "failed", "errorType": error_type, "errorMessage": message});
            match sent {
                Ok(()) => Ok(failed()),
                Err(e) if is_gone(&e) => Ok(failed()),
                Err(e) => Err(Error::HandOffFailed(Context::new(
                    format!(
                        "the request failed with {error_type} ({message}), and reporting that to Step Functions failed too"
                    ),
                    e,
                ))),
            }
        }
    }
}

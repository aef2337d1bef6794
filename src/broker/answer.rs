//! Finishing a request: count it, report it to Step Functions when a task
//! token came with it, and shape the answer; announce new keys on
//! EventBridge (SPEC section 5).
//!
//! Once Step Functions has the outcome it owns it (its Retry and Catch
//! decide), so the invocation succeeds; only a failed report is an error
//! (`HandOffFailed`), so that Lambda or SQS retries it.

use serde_json::{Value, json};

use super::{Broker, Ports};
use crate::error::{Context, Error};
use crate::handoff::Handoff;
use crate::metrics;
use crate::request::{KeyRequest, KeyResult, Rejected, Served};
use crate::secrets::{P1ANNOUNCED, SecretStore};
use crate::sensitive::TaskToken;

impl<P: Ports> Broker<P> {
    /// The answer to a served (or failed) request: the result object, or
    /// the error; reported to Step Functions first when it has a task token.
    pub async fn answer(
        &self,
        request: &KeyRequest,
        outcome: Result<Served, Error>,
    ) -> Result<Value, Error> {
        let credential_type = request.credential.credential_type;
        match &outcome {
            Ok(served) => metrics::key_served(
                credential_type,
                served.result.status,
                served.result.expires_at.as_deref(),
                served.vendor_latency_ms,
            ),
            Err(e) => metrics::failed(Some(credential_type), e),
        }
        let served = outcome.is_ok();
        self.report(request.task_token.as_ref(), request.include_key, outcome)
            .await
            .inspect_err(|e| {
                // The request's own failure is counted already.
                if served {
                    metrics::failed(Some(credential_type), e);
                }
            })
    }

    /// The answer to a request that failed validation: reported to Step
    /// Functions when its task token could be read.
    pub async fn answer_rejected(&self, rejected: Rejected) -> Result<Value, Error> {
        metrics::failed(rejected.credential_type, &rejected.error);
        self.report(rejected.task_token.as_ref(), false, Err(rejected.error))
            .await
    }

    async fn report(
        &self,
        token: Option<&TaskToken>,
        include_key: bool,
        outcome: Result<Served, Error>,
    ) -> Result<Value, Error> {
        let Some(token) = token else {
            return outcome.map(|served| served.output(include_key));
        };
        match outcome {
            Ok(served) => {
                let output = served.output(include_key);
                match self.handoff.task_success(token, &output.to_string()).await {
                    Ok(()) => Ok(output),
                    Err(e) => Err(Error::HandOffFailed(Context::new(
                        format!(
                            "the key is stored as version {} of {}, but reporting success to Step Functions failed (the same request retried will report it)",
                            served.result.version_id, served.result.secret_arn
                        ),
                        e,
                    ))),
                }
            }
            Err(error) => {
                let (error_type, message) = (error.error_type(), error.report());
                match self.handoff.task_failure(token, error_type, &message).await {
                    Ok(()) => Ok(
                        json!({"status": "failed", "errorType": error_type, "errorMessage": message}),
                    ),
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

    /// Announces a version on the configured bus, once: success moves the
    /// `P1ANNOUNCED` label onto it.
    pub(super) async fn announce(&self, target: &str, result: &KeyResult) -> Result<(), Error> {
        let Some(bus) = &self.config.event_bus_name else {
            return Ok(());
        };
        let detail = result.to_json().to_string();
        if let Err(e) = self.handoff.announce(bus, &detail).await {
            return Err(Error::HandOffFailed(Context::new(
                format!(
                    "the key is stored as version {} of {}, but announcing it on EventBridge bus {bus:?} failed (the same request retried will announce it)",
                    result.version_id, result.secret_arn
                ),
                e,
            )));
        }
        // The event is out; a failure to label only risks a second
        // announcement later, so it is logged rather than failed.
        let holder = match self.store.describe(target).await {
            Ok(d) => d.version_with(P1ANNOUNCED).map(str::to_string),
            Err(e) => {
                tracing::warn!(error = %e, "announced, but cannot describe the secret to move P1ANNOUNCED");
                return Ok(());
            }
        };
        if holder.as_deref() != Some(result.version_id.as_str())
            && let Err(e) = self
                .store
                .move_stage(
                    target,
                    P1ANNOUNCED,
                    Some(&result.version_id),
                    holder.as_deref(),
                )
                .await
        {
            tracing::warn!(error = %e, "announced, but cannot move P1ANNOUNCED onto the version");
        }
        Ok(())
    }
}

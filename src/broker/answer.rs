//! Finishing a request: count it, report it to Step Functions when a task
//! token came with it (`crate::report`), and shape the answer; announce new
//! keys on EventBridge (SPEC section 5).

use serde_json::Value;

use super::{Broker, Ports};
use crate::credential::CredentialType;
use crate::deadline::Deadline;
use crate::error::{Context, Error};
use crate::handoff::Handoff;
use crate::metrics;
use crate::request::{KeyRequest, KeyResult, Rejected, Served};
use crate::secrets::{P1ANNOUNCED, SecretStore};
use crate::sensitive::TaskToken;

/// Where and how to report one request's outcome.
struct Report<'a> {
    token: Option<&'a TaskToken>,
    include_key: bool,
    credential_type: Option<CredentialType>,
}

impl<P: Ports> Broker<P> {
    /// The answer to a served (or failed) request: the result object, or
    /// the error; reported to Step Functions first when it has a task token.
    pub async fn answer(
        &self,
        request: &KeyRequest,
        outcome: Result<Served, Error>,
        deadline: &Deadline,
    ) -> Result<Value, Error> {
        let credential_type = request.credential.credential_type;
        match &outcome {
            Ok(served) => served.count(),
            Err(e) => metrics::failed(Some(credential_type), e),
        }
        let served = outcome.is_ok();
        let report = Report {
            token: request.task_token.as_ref(),
            include_key: request.include_key,
            credential_type: Some(credential_type),
        };
        self.report(report, outcome, deadline)
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
    pub async fn answer_rejected(
        &self,
        rejected: Rejected,
        deadline: &Deadline,
    ) -> Result<Value, Error> {
        metrics::failed(rejected.credential_type, &rejected.error);
        let report = Report {
            token: rejected.task_token.as_ref(),
            include_key: false,
            credential_type: rejected.credential_type,
        };
        self.report(report, Err(rejected.error), deadline).await
    }

    /// Reports to Step Functions when the request came with a task token
    /// (`crate::report`).
    async fn report(
        &self,
        report: Report<'_>,
        outcome: Result<Served, Error>,
        deadline: &Deadline,
    ) -> Result<Value, Error> {
        let Some(token) = report.token else {
            return outcome.map(|served| served.output(report.include_key));
        };
        let stored = outcome.as_ref().ok().map(|served| {
            format!(
                "the key is stored as version {} of {} (the same request retried will report it)",
                served.result.version_id, served.result.secret_arn
            )
        });
        crate::report::to_step_functions(
            &self.handoff,
            token,
            outcome.map(|served| served.output(report.include_key)),
            || stored.unwrap_or_default(),
            |code| metrics::task_gone(report.credential_type, code),
            deadline,
        )
        .await
    }

    /// Announces a version on the configured bus, once: success moves the
    /// `P1ANNOUNCED` label onto it.
    pub(super) async fn announce(
        &self,
        target: &str,
        result: &KeyResult,
        deadline: &Deadline,
    ) -> Result<(), Error> {
        let Some(bus) = &self.config.event_bus_name else {
            return Ok(());
        };
        let detail = result.to_json().to_string();
        if let Err(e) = deadline.finish(self.handoff.announce(bus, &detail)).await {
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
        let holder = match deadline.finish(self.store.describe(target)).await {
            Ok(d) => d.version_with(P1ANNOUNCED).map(str::to_string),
            Err(e) => {
                tracing::warn!(error = %e, "announced, but cannot describe the secret to move P1ANNOUNCED");
                return Ok(());
            }
        };
        if holder.as_deref() != Some(result.version_id.as_str())
            && let Err(e) = deadline
                .finish(self.store.move_stage(
                    target,
                    P1ANNOUNCED,
                    Some(&result.version_id),
                    holder.as_deref(),
                ))
                .await
        {
            tracing::warn!(error = %e, "announced, but cannot move P1ANNOUNCED onto the version");
        }
        Ok(())
    }
}

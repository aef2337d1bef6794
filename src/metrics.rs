//! CloudWatch Embedded Metric Format lines (SPEC section 9).
//!
//! Written by hand: EMF is one JSON line on stdout, and the crates that wrap
//! it bring their own runtime assumptions for no gain here.

use std::io::Write;

use crate::credential::{CredentialType, Status};
use crate::error::Error;
use crate::expiry;

pub const NAMESPACE: &str = "PredictionOne/KeyBroker";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Count,
    Seconds,
    Milliseconds,
    Bytes,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Seconds => "Seconds",
            Unit::Milliseconds => "Milliseconds",
            Unit::Bytes => "Bytes",
        }
    }
}

/// One EMF document with the `CredentialType` dimension.
pub fn emf_line(credential_type: &str, values: &[(&str, f64, Unit)], timestamp_ms: i64) -> String {
    emf_document(&[("CredentialType", credential_type)], values, timestamp_ms)
}

/// One EMF document with the given dimensions (one dimension set).
fn emf_document(
    dimensions: &[(&str, &str)],
    values: &[(&str, f64, Unit)],
    timestamp_ms: i64,
) -> String {
    let definitions: Vec<_> = values
        .iter()
        .map(|(name, _, unit)| serde_json::json!({"Name": name, "Unit": unit.as_str()}))
        .collect();
    let names: Vec<&str> = dimensions.iter().map(|(name, _)| *name).collect();
    let mut doc = serde_json::json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [names],
                "Metrics": definitions,
            }]
        },
    });
    for (name, value) in dimensions {
        doc[*name] = serde_json::json!(value);
    }
    for (name, value, _) in values {
        doc[*name] = serde_json::json!(value);
    }
    doc.to_string()
}

/// Prints one EMF line with the `CredentialType` dimension to stdout,
/// where Lambda picks it up.
pub fn emit(credential_type: &str, values: &[(&str, f64, Unit)]) {
    emit_with(&[("CredentialType", credential_type)], values);
}

fn emit_with(dimensions: &[(&str, &str)], values: &[(&str, f64, Unit)]) {
    if values.is_empty() {
        return;
    }
    let line = emf_document(dimensions, values, chrono::Utc::now().timestamp_millis());
    let _ = writeln!(std::io::stdout().lock(), "{line}");
    EMITTED.with(|n| n.set(n.get() + 1));
}

thread_local! {
    /// EMF lines emitted on this thread (one thread-local increment a line).
    static EMITTED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// EMF lines emitted on this thread so far: for tests on a current-thread
/// runtime, what one call emitted (a dry run's none, SPEC section 12).
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn emitted_on_this_thread() -> usize {
    EMITTED.with(std::cell::Cell::get)
}

/// A key served (by a request or by rotation): `KeysIssued` or
/// `KeysFresh`, `SecondsUntilExpiry` when the expiry is known, and
/// `VendorLatencyMs` when the vendor was called.
pub fn key_served(
    credential_type: CredentialType,
    status: Status,
    expires_at: Option<&str>,
    vendor_latency_ms: Option<u64>,
) {
    let counter = match status {
        Status::Issued => "KeysIssued",
        Status::Fresh => "KeysFresh",
    };
    let mut values = vec![(counter, 1.0, Unit::Count)];
    if let Some(at) = expires_at.and_then(expiry::parse_end_date) {
        let left = (at - chrono::Utc::now()).num_seconds() as f64;
        values.push(("SecondsUntilExpiry", left, Unit::Seconds));
    }
    if let Some(ms) = vendor_latency_ms {
        values.push(("VendorLatencyMs", ms as f64, Unit::Milliseconds));
    }
    emit(credential_type.as_str(), &values);
}

/// The soonest expiry of a credential type's managed keys, as the sweep
/// read them: `SecondsUntilExpiry`, so that the expiry alarms hear of every
/// key each sweep, whether renewed or not.
pub fn seconds_until_expiry(credential_type: CredentialType, at: chrono::DateTime<chrono::Utc>) {
    let left = (at - chrono::Utc::now()).num_seconds() as f64;
    emit(
        credential_type.as_str(),
        &[("SecondsUntilExpiry", left, Unit::Seconds)],
    );
}

/// A completed renewal sweep (SPEC section 12), without dimensions:
/// `KeysDue`, `KeysRenewed`, `KeysQueued`, `SweepLeft`, `KeysStopped` (the
/// secrets skipped as stopped), `SweepCompleted` (1: an alarm notices when
/// it stops arriving) and `SweepDurationMs`; and `Failures` with
/// `Reason=Sweep` for the renewals or reads that failed but may succeed
/// later (a renewal that failed for good is counted once, by
/// [`renewal_stopped`]). A dry run emits none of these.
pub fn swept(sweep: &Swept) {
    emit_with(
        &[],
        &[
            ("KeysDue", sweep.due as f64, Unit::Count),
            ("KeysRenewed", sweep.renewed as f64, Unit::Count),
            ("KeysQueued", sweep.queued as f64, Unit::Count),
            ("SweepLeft", sweep.left as f64, Unit::Count),
            ("KeysStopped", sweep.stopped as f64, Unit::Count),
            ("SweepCompleted", 1.0, Unit::Count),
            (
                "SweepDurationMs",
                sweep.duration_ms as f64,
                Unit::Milliseconds,
            ),
        ],
    );
    if sweep.failed > 0 {
        emit_with(
            &[("Reason", "Sweep")],
            &[("Failures", sweep.failed as f64, Unit::Count)],
        );
    }
}

/// A sweep's counts, for [`swept`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Swept {
    pub due: usize,
    pub renewed: usize,
    pub queued: usize,
    pub left: usize,
    pub stopped: usize,
    /// Failures that may pass (not the permanent ones).
    pub failed: usize,
    pub duration_ms: u64,
}

/// A renewal that failed for good and stopped its secret's renewals:
/// `Failures` with `Reason=RenewalStopped`, once per secret (sweeps skip it
/// afterwards), so that its alarm fires once instead of holding.
pub fn renewal_stopped() {
    emit_with(
        &[("Reason", "RenewalStopped")],
        &[("Failures", 1.0, Unit::Count)],
    );
}

/// A report that Step Functions refused because it no longer waits for it
/// (SPEC section 10): logged at WARN with the code and counted as a
/// `Failures` with `Reason=TaskGone`; no retry could deliver it.
pub fn task_gone(credential_type: Option<CredentialType>, code: &str) {
    tracing::warn!(
        code,
        "Step Functions no longer waits for this task; its report is dropped"
    );
    emit_with(
        &[
            (
                "CredentialType",
                credential_type.map_or("unknown", CredentialType::as_str),
            ),
            ("Reason", "TaskGone"),
        ],
        &[("Failures", 1.0, Unit::Count)],
    );
}

/// A step of a retraining (SPEC section 11): `RetrainJobsStarted`,
/// `RetrainJobsFinished`, `RetrainJobsFailed`, `ModelsSwitched`,
/// `UploadBytes`, with the `ModelId` dimension.
pub fn retrain(model_id: &str, values: &[(&str, f64, Unit)]) {
    emit_with(&[("ModelId", model_id)], values);
}

/// A failed retrain runner request, logged at WARN and counted
/// (`Failures`, with `ModelId` when known).
pub fn retrain_failed(model_id: Option<&str>, error: &Error) {
    tracing::warn!(
        error_type = error.error_type(),
        "retrain request failed: {}",
        error.report()
    );
    emit_with(
        &[("ModelId", model_id.unwrap_or("unknown"))],
        &[("Failures", 1.0, Unit::Count)],
    );
}

/// Logs a failure at WARN and counts it (`Failures`). Error texts never
/// hold secrets (see `error`).
pub fn failed(credential_type: Option<CredentialType>, error: &Error) {
    tracing::warn!(
        error_type = error.error_type(),
        "request failed: {}",
        error.report()
    );
    emit(
        credential_type.map_or("unknown", CredentialType::as_str),
        &[("Failures", 1.0, Unit::Count)],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emf_document_shape() {
        let line = emf_line(
            "retrain",
            &[
                ("KeysIssued", 1.0, Unit::Count),
                ("VendorLatencyMs", 42.0, Unit::Milliseconds),
            ],
            1_700_000_000_000,
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000i64);
        let m = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(m["Namespace"], NAMESPACE);
        assert_eq!(m["Dimensions"], serde_json::json!([["CredentialType"]]));
        assert_eq!(
            m["Metrics"][1],
            serde_json::json!({"Name": "VendorLatencyMs", "Unit": "Milliseconds"})
        );
        assert_eq!(v["CredentialType"], "retrain");
        assert_eq!(v["KeysIssued"], 1.0);
        assert_eq!(v["VendorLatencyMs"], 42.0);
        assert!(!line.contains('\n'));
    }

    #[test]
    fn a_reason_is_a_second_dimension() {
        let line = emf_document(
            &[("CredentialType", "train"), ("Reason", "TaskGone")],
            &[("Failures", 1.0, Unit::Count)],
            1,
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            serde_json::json!([["CredentialType", "Reason"]])
        );
        assert_eq!(v["Reason"], "TaskGone");
        assert_eq!(v["Failures"], 1.0);
    }
}

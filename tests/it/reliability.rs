//! SPEC section 10, in process: answers before the deadline, keys never
//! fetched and dropped, faults of Secrets Manager, Step Functions and
//! EventBridge (through the fault proxy in front of moto, per operation),
//! and several instances racing for one target.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use p1_key_broker::deadline::Deadline;
use serde_json::{Value, json};

use crate::common::{Harness, invoke, invoke_by};
use crate::faults::{add_rule, calls, proxy_url};

const KEY: &str = "2099-01-01 00:00:00";

fn key(n: u32) -> Value {
    json!({"json": {"api_key": format!("ak-{n}"), "end_date": KEY}})
}

fn deadline(total_ms: u64, margin_ms: u64) -> Deadline {
    Deadline::after(
        Duration::from_millis(total_ms),
        Duration::from_millis(margin_ms),
    )
}

/// An SQS record as the event source mapping delivers it.
fn sqs_record(id: &str, body: Value) -> Value {
    json!({"messageId": id, "eventSource": "aws:sqs", "body": body.to_string()})
}

/// The target's AWSCURRENT value: absent, or a complete record.
async fn current_record(h: &Harness, secret_id: &str) -> Option<Value> {
    let out =
        h.sm.get_secret_value()
            .secret_id(secret_id)
            .version_stage("AWSCURRENT")
            .send()
            .await
            .ok()?;
    let v: Value = serde_json::from_str(out.secret_string().unwrap_or_default())
        .unwrap_or_else(|e| panic!("AWSCURRENT of {secret_id} is not JSON: {e}"));
    for field in ["api_key", "end_date", "credential_type", "issued_at"] {
        assert!(
            v[field].as_str().is_some_and(|s| !s.is_empty()),
            "AWSCURRENT of {secret_id} lacks {field}"
        );
    }
    Some(v)
}

#[tokio::test]
async fn a_slow_vendor_ends_in_timeout_before_the_deadline_and_stores_nothing() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[("P1_HTTP_TIMEOUT_MS", "10000")]).await;
    h.script(
        &sk,
        json!([{"delay_ms": 5000, "json": {"api_key": "late", "end_date": KEY}}]),
    )
    .await;
    let started = Instant::now();
    let err = invoke_by(
        &app,
        json!({"credential_type": "train"}),
        deadline(1500, 500),
    )
    .await
    .unwrap_err();
    let took = started.elapsed();
    assert_eq!(err.0, "PredictionOne.Timeout", "{}", err.1);
    assert!(
        took < Duration::from_millis(1500),
        "answered after {took:?}"
    );
    assert_eq!(
        h.calls(&sk).await.len(),
        1,
        "no attempt after the time ran out"
    );
    assert_eq!(current_record(&h, &h.name("train")).await, None);
}

#[tokio::test]
async fn a_retry_after_longer_than_the_time_left_is_not_waited_for() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    h.script(
        &sk,
        json!([{"status": 429, "headers": {"Retry-After": "4"}, "json": {"message": "Too Many Requests"}}, key(1)]),
    )
    .await;
    let started = Instant::now();
    let err = invoke_by(
        &app,
        json!({"credential_type": "train"}),
        deadline(3000, 500),
    )
    .await
    .unwrap_err();
    assert_eq!(err.0, "PredictionOne.Throttled", "{}", err.1);
    assert!(started.elapsed() < Duration::from_millis(1500));
    assert_eq!(h.calls(&sk).await.len(), 1);
    // With time enough, the same wait is honoured and the retry succeeds.
    h.script(
        &sk,
        json!([{"status": 429, "headers": {"Retry-After": "1"}, "json": {"message": "Too Many Requests"}}, key(2)]),
    )
    .await;
    let out = invoke_by(
        &app,
        json!({"credential_type": "train"}),
        deadline(5000, 500),
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "issued");
}

#[tokio::test]
async fn a_retryable_failure_fails_the_credentials_later_records_at_once() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    // One group at a time, so the scripted answers meet the groups in order.
    let app = h
        .app(
            &sk,
            &[("P1_BATCH_CONCURRENCY", "1"), ("P1_MAX_ATTEMPTS", "2")],
        )
        .await;
    let down = json!({"status": 503, "body": "<html>down</html>"});
    h.script(&sk, json!([down, down, key(1)])).await;
    let record = sqs_record;
    let retrain = json!({"credential_type": "retrain", "model_id": "7"});
    let other_target = json!({"credential_type": "retrain", "model_id": "7", "target_secret_id": h.name("elsewhere")});
    let batch = json!({"Records": [
        record("a1", retrain.clone()),
        record("a2", retrain.clone()),
        record("b1", json!({"credential_type": "train"})),
        record("c1", other_target),
    ]});
    let out = invoke(&app, batch).await.unwrap();
    let failed: Vec<&str> = out["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["a1", "a2", "c1"], "{out}");
    // Two attempts for a1; a2 and c1 (same credential, another target)
    // failed at once; b1 got its key.
    let calls = h.calls(&sk).await;
    assert_eq!(calls.len(), 3, "{calls:?}");
    assert!(current_record(&h, &h.name("train")).await.is_some());
}

#[tokio::test]
async fn a_batch_answers_before_its_deadline_and_starts_no_record_late() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h
        .app(
            &sk,
            &[
                ("P1_BATCH_CONCURRENCY", "1"),
                ("P1_HTTP_TIMEOUT_MS", "10000"),
            ],
        )
        .await;
    h.script(
        &sk,
        json!([{"delay_ms": 4000, "json": {"api_key": "late", "end_date": KEY}}]),
    )
    .await;
    let record = sqs_record;
    let retrain = json!({"credential_type": "retrain", "model_id": "8"});
    let batch = json!({"Records": [
        record("a1", retrain.clone()),
        record("a2", retrain.clone()),
        record("a3", retrain),
        record("b1", json!({"credential_type": "deploy"})),
    ]});
    let started = Instant::now();
    let out = invoke_by(&app, batch, deadline(2000, 500)).await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2000),
        "answered after {took:?}"
    );
    assert_eq!(
        out,
        json!({"batchItemFailures": [{"itemIdentifier": "a1"}, {"itemIdentifier": "a2"},
            {"itemIdentifier": "a3"}, {"itemIdentifier": "b1"}]})
    );
    // One attempt, cut at the work point; b1 never started.
    assert_eq!(h.calls(&sk).await.len(), 1);
    assert_eq!(current_record(&h, &h.name("deploy")).await, None);
}

/// One fault on one Secrets Manager operation; returns the error or result.
async fn with_fault(
    h: &Harness,
    sk: &str,
    extra: &[(&str, &str)],
    operation: &str,
    fault: Value,
    request: Value,
    budget: Deadline,
) -> Result<Value, (String, String)> {
    let app = h.app_via(&proxy_url(), sk, extra).await;
    let mut rule = json!({"operation": operation, "match": h.id, "times": -1});
    for (k, v) in fault.as_object().unwrap() {
        rule[k] = v.clone();
    }
    add_rule(h, rule).await;
    invoke_by(&app, request, budget).await
}

const FAULTS: &[&str] = &["throttle", "server_error", "access_denied", "hang"];

#[tokio::test]
async fn secrets_manager_faults_end_in_contract_errors_and_leave_current_complete() {
    // Each case in its own harness (its own names, so its own rules).
    let cases = FAULTS.iter().flat_map(|fault| {
        ["GetSecretValue", "PutSecretValue", "CreateSecret"]
            .into_iter()
            .map(move |op| (op, *fault))
    });
    let results = join_all(cases.map(|(op, fault)| async move {
        let h = Harness::new().await;
        let sk = h.secret_key("");
        h.script(&sk, json!([key(1)])).await;
        let target = h.name("train");
        if op == "PutSecretValue" {
            // An existing target with a stale record: the new key is put.
            let stale = json!({"api_key": "old", "end_date": "2000-01-01 00:00:00",
                "expires_at": "2000-01-01T00:00:00Z", "credential_type": "train",
                "model_id": null, "issued_at": "2000-01-01T00:00:00Z"});
            h.create_secret(&target, &stale.to_string()).await;
        }
        let started = Instant::now();
        let out = with_fault(
            &h,
            &sk,
            &[],
            op,
            json!({"fault": fault}),
            json!({"credential_type": "train"}),
            deadline(6000, 2000),
        )
        .await;
        let took = started.elapsed();
        let current = current_record(&h, &target).await;
        let vendor_calls = h.calls(&sk).await.len();
        (op, fault, out, took, current, vendor_calls)
    }))
    .await;
    for (op, fault, out, took, current, vendor_calls) in results {
        let case = format!("{op} {fault}");
        assert!(
            took < Duration::from_millis(6000),
            "{case}: answered after {took:?}"
        );
        let (error_type, message) = out.expect_err(&case);
        assert_eq!(error_type, "StoreFailed", "{case}: {message}");
        match op {
            // The target (read first) could not be read: nothing fetched.
            "GetSecretValue" => {
                assert!(
                    message.contains("cannot read the target secret"),
                    "{case}: {message}"
                );
                assert_eq!(vendor_calls, 0, "{case}");
                assert_eq!(current, None, "{case}");
            }
            // The key was fetched, and the answer says it was not stored:
            // at once when the service refused the write, after reading
            // the target back when the write's outcome was unknown.
            _ => {
                assert!(
                    message.contains("a new key was issued but") && message.contains("discarded"),
                    "{case}: {message}"
                );
                let read_back = matches!(fault, "hang" | "server_error");
                assert_eq!(
                    message.contains("reading the secret back shows no version"),
                    read_back,
                    "{case}: {message}"
                );
                assert_eq!(vendor_calls, 1, "{case}");
                if op == "PutSecretValue" {
                    assert_eq!(current.unwrap()["api_key"], "old", "{case}");
                } else {
                    assert_eq!(current, None, "{case}");
                }
            }
        }
        if fault == "hang" {
            assert!(message.contains("timed out"), "{case}: {message}");
        }
    }
}

#[tokio::test]
async fn a_failed_announcement_or_label_move_keeps_the_key() {
    let results = join_all(
        FAULTS
            .iter()
            .flat_map(|fault| {
                ["PutEvents", "UpdateSecretVersionStage"]
                    .into_iter()
                    .map(move |op| (op, *fault))
            })
            .map(|(op, fault)| async move {
                let h = Harness::new().await;
                let sk = h.secret_key("");
                h.script(&sk, json!([key(1)])).await;
                let bus = format!("p1-bus-{}", h.id);
                h.events.create_event_bus().name(&bus).send().await.unwrap();
                let out = with_fault(
                    &h,
                    &sk,
                    &[("P1_EVENT_BUS_NAME", &bus)],
                    op,
                    json!({"fault": fault}),
                    json!({"credential_type": "train"}),
                    deadline(6000, 2000),
                )
                .await;
                let current = current_record(&h, &h.name("train")).await;
                (op, fault, out, current)
            }),
    )
    .await;
    for (op, fault, out, current) in results {
        let case = format!("{op} {fault}");
        assert_eq!(current.expect(&case)["api_key"], "ak-1", "{case}");
        match op {
            // The event did not go out: HandOffFailed names the stored version.
            "PutEvents" => {
                let (error_type, message) = out.expect_err(&case);
                assert_eq!(error_type, "HandOffFailed", "{case}");
                assert!(message.contains("stored as version"), "{case}: {message}");
            }
            // The event went out; a label that did not move is only logged.
            _ => assert_eq!(out.expect(&case)["status"], "issued", "{case}"),
        }
    }
}

#[tokio::test]
async fn step_functions_report_faults_are_retried_unless_the_task_is_gone() {
    let cases: Vec<(&str, Value, bool)> = vec![
        ("SendTaskSuccess", json!({"fault": "throttle"}), false),
        ("SendTaskSuccess", json!({"fault": "server_error"}), false),
        ("SendTaskSuccess", json!({"fault": "hang"}), false),
        (
            "SendTaskSuccess",
            json!({"fault": "error", "status": 400, "type": "TaskTimedOut"}),
            true,
        ),
        (
            "SendTaskSuccess",
            json!({"fault": "error", "status": 400, "type": "TaskDoesNotExist"}),
            true,
        ),
        ("SendTaskFailure", json!({"fault": "throttle"}), false),
        (
            "SendTaskFailure",
            json!({"fault": "error", "status": 400, "type": "TaskTimedOut"}),
            true,
        ),
    ];
    let results = join_all(cases.into_iter().map(|(op, fault, gone)| async move {
        let h = Harness::new().await;
        let sk = h.secret_key("");
        if op == "SendTaskSuccess" {
            h.script(&sk, json!([key(1)])).await;
        }
        let token = format!("token-{}", h.id);
        // SendTaskFailure: a request that fails (a deleted model).
        let request = if op == "SendTaskSuccess" {
            json!({"credential_type": "train", "task_token": token})
        } else {
            json!({"credential_type": "retrain", "model_id": "deleted-3", "task_token": token})
        };
        let started = Instant::now();
        let out = with_fault(
            &h,
            &sk,
            &[],
            op,
            fault.clone(),
            request,
            deadline(6000, 2000),
        )
        .await;
        let seen = calls(&h, &h.id).await;
        (op, fault, gone, out, started.elapsed(), seen)
    }))
    .await;
    for (op, fault, gone, out, took, seen) in results {
        let case = format!("{op} {fault}");
        assert!(took < Duration::from_millis(6000), "{case}: {took:?}");
        assert!(
            seen["operations"][op].as_u64().unwrap_or(0) >= 1,
            "{case}: {seen}"
        );
        if gone {
            let v = out.expect(&case);
            let want = if op == "SendTaskSuccess" {
                "issued"
            } else {
                "failed"
            };
            assert_eq!(v["status"], want, "{case}");
        } else {
            let (error_type, _) = out.expect_err(&case);
            assert_eq!(error_type, "HandOffFailed", "{case}");
        }
    }
}

#[tokio::test]
async fn instances_racing_for_one_target_leave_one_complete_current_record() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    const INSTANCES: usize = 6;
    let mut apps = Vec::new();
    for _ in 0..INSTANCES {
        apps.push(h.app(&sk, &[]).await);
    }
    let outs = join_all(
        apps.iter()
            .map(|app| invoke(app, json!({"credential_type": "train", "force": true}))),
    )
    .await;
    // One renewal wins (SPEC section 12): of those that read the same state,
    // one stores its key; the others answer `fresh` with the winner's
    // version and say that their own key was discarded.
    let mut issued = 0;
    let mut answered = Vec::new();
    for out in &outs {
        match out {
            Ok(v) if v["status"] == "fresh" => {
                assert_eq!(v["discarded"], true, "{v}");
                answered.push(v["version_id"].as_str().unwrap().to_string());
            }
            Ok(v) => {
                assert_eq!(v["status"], "issued", "{v}");
                assert!(v.get("discarded").is_none(), "{v}");
                answered.push(v["version_id"].as_str().unwrap().to_string());
                issued += 1;
            }
            Err((t, m)) => assert!(
                p1_key_broker::error::ERROR_TYPES.contains(&t.as_str()),
                "not a contract error: {t}: {m}"
            ),
        }
    }
    let target = h.name("train");
    let current = current_record(&h, &target).await.expect("a current record");
    let listed =
        h.sm.list_secret_version_ids()
            .secret_id(&target)
            .include_deprecated(true)
            .send()
            .await
            .unwrap();
    let versions = listed.versions();
    eprintln!(
        "race: {INSTANCES} instances, {issued} issued, {} versions written, current {}",
        versions.len(),
        current["api_key"]
    );
    assert!(issued >= 1);
    assert_eq!(versions.len(), issued, "one version per issued key");
    for v in &answered {
        assert!(
            versions.iter().any(|w| w.version_id() == Some(v.as_str())),
            "every answer names a stored version: {v}"
        );
    }
    let holders = versions
        .iter()
        .filter(|v| v.version_stages().iter().any(|s| s == "AWSCURRENT"))
        .count();
    assert_eq!(holders, 1);
}

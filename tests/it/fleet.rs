//! A fleet that never crosses, starves or stalls (SPEC section 12), on
//! moto with the real SDK and the vendor stand-in: two stacks under one
//! prefix, a stalled or throttled read among many, dead models that would
//! use up the cap, and two renewals of one target at once.

use std::time::{Duration, Instant};

use p1_key_broker::deadline::Deadline;
use serde_json::{Value, json};

use crate::common::{Harness, invoke, invoke_by};
use crate::faults::{add_rule, proxy_url};

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A retrain key record for `model`, expiring `expires_in` from now,
/// issued a week before it expires.
fn retrain_record(model: &str, expires_in: chrono::Duration) -> String {
    let now = chrono::Utc::now();
    json!({"api_key": "p1k_old", "end_date": rfc3339(now + expires_in),
           "expires_at": rfc3339(now + expires_in), "credential_type": "retrain",
           "model_id": model, "issued_at": rfc3339(now + expires_in - chrono::Duration::days(7))})
    .to_string()
}

async fn version_count(h: &Harness, name: &str) -> usize {
    h.sm.describe_secret()
        .secret_id(name)
        .send()
        .await
        .map(|d| d.version_ids_to_stages().map_or(0, |v| v.len()))
        .unwrap_or(0)
}

async fn create_all(h: &Harness, secrets: Vec<(String, String)>) {
    use futures_util::StreamExt;
    futures_util::stream::iter(secrets)
        .map(|(name, value)| async move { h.create_secret(&name, &value).await })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
}

fn names(report: &Value, kind: &str) -> Vec<String> {
    serde_json::from_value(report["names"][kind].clone()).unwrap()
}

/// Two stacks with different secret keys and one retrain prefix: each
/// sweep renews its own keys only; the other stack's are counted foreign,
/// named, and never written.
#[tokio::test]
async fn two_stacks_under_one_prefix_renew_only_their_own() {
    let h = Harness::new().await;
    let (sk_a, sk_b) = (h.secret_key(""), h.secret_key(""));
    let a = h.app(&sk_a, &[("P1_SWEEP_ENSURE", "none")]).await;
    // Stack B: its own secret key secret and targets, the same prefix.
    h.create_secret(&h.name("secret-key-b"), &sk_b).await;
    let b_secret = h.name("secret-key-b");
    let (b_train, b_deploy) = (h.name("train-b"), h.name("deploy-b"));
    let b = h
        .app(
            &sk_a,
            &[
                ("P1_SECRET_KEY_SECRET_ID", &b_secret),
                ("P1_TRAIN_SECRET_ID", &b_train),
                ("P1_DEPLOY_SECRET_ID", &b_deploy),
                ("P1_SWEEP_ENSURE", "none"),
            ],
        )
        .await;
    // Each stack creates its keys as it would (tagged with its owner).
    for (app, model) in [(&a, "a1"), (&a, "a2"), (&b, "b1")] {
        invoke(
            app,
            json!({"credential_type": "retrain", "model_id": model}),
        )
        .await
        .unwrap();
    }
    // All three expired since (values rewritten; the tags stay).
    for model in ["a1", "a2", "b1"] {
        h.set_secret(
            &h.name(&format!("retrain/{model}")),
            &retrain_record(model, chrono::Duration::hours(-3)),
        )
        .await;
    }
    let versions = |m: &'static str| {
        let h = &h;
        async move { version_count(h, &h.name(&format!("retrain/{m}"))).await }
    };
    let b1_before = versions("b1").await;

    let report = invoke(&a, json!({"sweep": "due"})).await.unwrap();
    assert_eq!(report["renewed"], 2, "{report}");
    assert!(report["foreign"].as_u64().unwrap() >= 1, "{report}");
    // Found under the prefix, so named first among the foreign.
    assert!(
        names(&report, "foreign").contains(&h.name("retrain/b1")),
        "{report}"
    );
    assert_eq!(
        versions("b1").await,
        b1_before,
        "stack A never writes B's key"
    );
    let (_, b1) = h.record(&h.name("retrain/b1"), "AWSCURRENT").await;
    assert_eq!(b1["api_key"], "p1k_old");

    // And the other way round.
    let a1_now = versions("a1").await;
    let report = invoke(&b, json!({"sweep": "due"})).await.unwrap();
    assert_eq!(report["renewed"], 1, "{report}");
    assert!(names(&report, "foreign").contains(&h.name("retrain/a1")));
    assert!(names(&report, "foreign").contains(&h.name("retrain/a2")));
    assert_eq!(versions("a1").await, a1_now);
    let (_, b1) = h.record(&h.name("retrain/b1"), "AWSCURRENT").await;
    assert_ne!(b1["api_key"], "p1k_old", "B renewed its own");
}

/// 60 due keys, three batches of reads; the batch holding one of them is
/// throttled every time, or stalls (never answers): the sweep renews what
/// it read, reports the rest as left, names them, and answers in time.
#[tokio::test]
async fn a_stalled_or_throttled_read_among_many_leaves_only_its_page() {
    for fault in ["throttle", "hang"] {
        let h = Harness::new().await;
        let sk = h.secret_key("");
        let models: Vec<String> = (0..60).map(|i| format!("m{i:02}")).collect();
        create_all(
            &h,
            models
                .iter()
                .map(|m| {
                    (
                        h.name(&format!("retrain/{m}")),
                        retrain_record(m, chrono::Duration::hours(2)),
                    )
                })
                .collect(),
        )
        .await;
        let app = h
            .app_via(
                &proxy_url(),
                &sk,
                &[
                    ("P1_SWEEP_ENSURE", "none"),
                    ("P1_SWEEP_READ_CONCURRENCY", "8"),
                ],
            )
            .await;
        let marked = h.name("retrain/m07");
        add_rule(
            &h,
            json!({"operation": "BatchGetSecretValue", "match": marked, "fault": fault, "times": -1}),
        )
        .await;
        let started = Instant::now();
        let deadline = Deadline::after(Duration::from_secs(20), Duration::from_secs(2));
        let report = invoke_by(&app, json!({"sweep": "due"}), deadline)
            .await
            .unwrap_or_else(|e| panic!("{fault}: {e:?}"));
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{fault}: answered in time"
        );
        assert_eq!(report["left"], 20, "{fault}: one page of 20 left: {report}");
        assert_eq!(report["renewed"], 40, "{fault}: the rest renewed: {report}");
        assert!(
            names(&report, "left").contains(&marked),
            "{fault}: {report}"
        );
        let (_, r) = h.record(&marked, "AWSCURRENT").await;
        assert_eq!(r["api_key"], "p1k_old", "{fault}: unread, unwritten");
    }
}

/// 300 keys of deleted models (expired long ago) and 50 live keys due, with
/// a cap of 200: the live keys are renewed by the first sweep, the dead
/// ones marked as they fail, and skipped (stopped, named) by later sweeps:
/// failing keys never use up the cap.
#[tokio::test]
async fn dead_models_never_starve_the_live_keys() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let mut secrets = Vec::new();
    for i in 0..300 {
        // The stand-in answers "This model may be deleted." for these.
        let m = format!("deleted-{i:03}");
        secrets.push((
            h.name(&format!("retrain/{m}")),
            retrain_record(&m, chrono::Duration::days(-100 - i)),
        ));
    }
    for i in 0..50 {
        let m = format!("live-{i:02}");
        secrets.push((
            h.name(&format!("retrain/{m}")),
            // All within the renewal window (a day).
            retrain_record(&m, chrono::Duration::minutes(60 + 10 * i)),
        ));
    }
    create_all(&h, secrets).await;
    let app = h
        .app(
            &sk,
            &[
                ("P1_SWEEP_ENSURE", "none"),
                ("P1_SWEEP_MAX_RENEWALS", "200"),
                ("P1_BATCH_CONCURRENCY", "16"),
            ],
        )
        .await;
    let first = invoke(&app, json!({"sweep": "due"})).await.unwrap();
    assert_eq!(first["due"], 350, "{first}");
    assert_eq!(first["renewed"], 50, "every live key first: {first}");
    let failed = first["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 150, "{first}");
    assert!(
        failed
            .iter()
            .all(|f| f["errorType"] == "PredictionOne.ModelDeleted")
    );
    assert_eq!(first["left"], 150, "past the cap");
    for i in 0..50 {
        let (_, r) = h
            .record(&h.name(&format!("retrain/live-{i:02}")), "AWSCURRENT")
            .await;
        assert_ne!(r["api_key"], "p1k_old", "live-{i:02} renewed");
    }
    // The 150 that failed are marked, and skipped from now on.
    let second = invoke(&app, json!({"sweep": "due"})).await.unwrap();
    assert_eq!(second["stopped"], 150, "{second}");
    assert_eq!(second["fresh"], 50, "{second}");
    assert_eq!(second["due"], 150, "only the dead not yet tried: {second}");
    let third = invoke(&app, json!({"sweep": "due"})).await.unwrap();
    assert_eq!(third["stopped"], 300, "{third}");
    assert_eq!(third["due"], 0, "{third}");
    assert_eq!(names(&third, "stopped").len(), 100, "named up to 100");
    let d =
        h.sm.describe_secret()
            .secret_id(h.name("retrain/deleted-000"))
            .send()
            .await
            .unwrap();
    let mark = d
        .tags()
        .iter()
        .find(|t| t.key() == Some("p1:renewal-stopped"))
        .and_then(|t| t.value())
        .unwrap_or_default()
        .to_string();
    assert!(mark.starts_with("PredictionOne.ModelDeleted 20"), "{mark}");
}

/// One renewal wins: two renewals of one target at once, however they
/// meet (two invocations, a sweep and a request, one queued message
/// delivered twice), store one new version; one answers `issued`, the
/// other `fresh` (its own key discarded, and said), both naming it.
#[tokio::test]
async fn two_renewals_of_one_target_store_one_version() {
    for how in [
        "two requests",
        "a sweep and a request",
        "a message delivered twice",
    ] {
        let h = Harness::new().await;
        let sk = h.secret_key("");
        let target = h.name("retrain/7");
        h.create_secret(&target, &retrain_record("7", chrono::Duration::hours(-1)))
            .await;
        let app = h.app(&sk, &[("P1_SWEEP_ENSURE", "none")]).await;
        // Both reach the vendor before either stores: the vendor is slow.
        let slow = json!({"delay_ms": 700, "json": {"api_key": "p1k_A", "end_date": "2099-01-01 00:00:00"}});
        let slower = json!({"delay_ms": 900, "json": {"api_key": "p1k_B", "end_date": "2099-01-01 00:00:00"}});
        h.script(&sk, json!([slow, slower])).await;
        let request = json!({"credential_type": "retrain", "model_id": "7"});
        let message = |id: &str| json!({"Records": [{"messageId": id, "eventSource": "aws:sqs", "body": request.to_string()}]});
        let (first, second) = match how {
            "two requests" => (request.clone(), request.clone()),
            "a sweep and a request" => (json!({"sweep": "due"}), request.clone()),
            _ => (message("m-1"), message("m-1")),
        };
        let (x, y) = tokio::join!(invoke(&app, first), invoke(&app, second));
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(h.calls(&sk).await.len(), 2, "{how}: both fetched");
        assert_eq!(
            version_count(&h, &target).await,
            2,
            "{how}: one new version"
        );
        let (current, record) = h.record(&target, "AWSCURRENT").await;
        match how {
            "two requests" => {
                let mut statuses = [x["status"].clone(), y["status"].clone()];
                statuses.sort_by_key(|s| s.to_string());
                assert_eq!(statuses, [json!("fresh"), json!("issued")], "{how}");
                assert_eq!(x["version_id"], current, "{how}");
                assert_eq!(y["version_id"], current, "{how}");
                let loser = if x["status"] == "fresh" { &x } else { &y };
                assert_eq!(loser["discarded"], true, "{how}: {loser}");
            }
            "a sweep and a request" => {
                // The sweep renewed (issued) or found the request's (fresh);
                // the request the other way round.
                let swept = x["renewed"].as_u64().unwrap() + x["fresh"].as_u64().unwrap();
                assert_eq!(swept, 1, "{how}: {x}");
                assert_eq!(y["version_id"], current, "{how}");
                assert_eq!(x["renewed"] == 1, y["status"] == "fresh", "{how}: {x} {y}");
            }
            _ => {
                assert_eq!(x, json!({"batchItemFailures": []}), "{how}");
                assert_eq!(y, json!({"batchItemFailures": []}), "{how}");
            }
        }
        assert!(
            record["api_key"] == "p1k_A" || record["api_key"] == "p1k_B",
            "{how}: {record}"
        );
    }
}

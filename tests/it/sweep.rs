//! The renewal sweep (SPEC section 12) end to end through `handle()`: the
//! real AWS SDK against moto (ListSecrets, BatchGetSecretValue, SQS), the
//! vendor stand-in, and faults from the proxy in front of moto.

use std::time::Duration;

use p1_key_broker::deadline::Deadline;
use serde_json::{Value, json};

use crate::common::{Harness, invoke, invoke_by};
use crate::faults::{add_rule, proxy_url};

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A key record of `credential` ("train", "deploy" or a retrain model id),
/// expiring `expires_in` from now (None: unknown), issued `issued_ago`.
fn record(
    credential: &str,
    expires_in: Option<chrono::Duration>,
    issued_ago: chrono::Duration,
) -> String {
    let now = chrono::Utc::now();
    let (ctype, model) = match credential {
        "train" | "deploy" => (credential, Value::Null),
        id => ("retrain", json!(id)),
    };
    let expires = expires_in.map(|d| rfc3339(now + d));
    json!({"api_key": "p1k_old", "end_date": expires.clone().unwrap_or("whenever".into()),
           "expires_at": expires, "credential_type": ctype, "model_id": model,
           "issued_at": rfc3339(now - issued_ago)})
    .to_string()
}

fn hours(h: i64) -> chrono::Duration {
    chrono::Duration::hours(h)
}

async fn tagged(h: &Harness, name: &str, value: &str, owner: Option<&str>) {
    let tag = |k: &str, v: &str| {
        aws_sdk_secretsmanager::types::Tag::builder()
            .key(k)
            .value(v)
            .build()
    };
    let mut create =
        h.sm.create_secret()
            .name(name)
            .secret_string(value)
            .tags(tag("managed-by", "p1-key-broker"));
    if let Some(owner) = owner {
        create = create.tags(tag("p1:secret_key_secret", owner));
    }
    create.send().await.unwrap();
}

/// Versions of a secret (0 when it does not exist).
async fn versions(h: &Harness, name: &str) -> usize {
    h.sm.describe_secret()
        .secret_id(name)
        .send()
        .await
        .map(|d| d.version_ids_to_stages().map_or(0, |v| v.len()))
        .unwrap_or(0)
}

/// Managed secrets of every kind, for the sweep of `h`: returns the names
/// that are due (the missing train target first), and those that are not.
async fn fleet(h: &Harness) -> (Vec<String>, Vec<String>) {
    let retrain = |id: &str| h.name(&format!("retrain/{id}"));
    h.create_secret(
        &h.name("deploy"),
        &record("deploy", Some(hours(24 * 30)), hours(48)),
    )
    .await;
    h.create_secret(&retrain("1"), &record("1", Some(hours(-1)), hours(24 * 8)))
        .await;
    h.create_secret(&retrain("2"), &record("2", Some(hours(12)), hours(24 * 6)))
        .await;
    h.create_secret(
        &retrain("3"),
        &record("3", None, chrono::Duration::minutes(11)),
    )
    .await;
    h.create_secret(&retrain("4"), &record("4", Some(hours(24 * 30)), hours(1)))
        .await;
    h.create_secret(&retrain("5"), "a database password").await;
    // Elsewhere, tagged as this function's (with its secret key, as the
    // function tags what it creates: other tests' sweeps run beside this
    // one on the same moto): due.
    let custom = format!("custom-{}/team-key", h.id);
    tagged(
        h,
        &custom,
        &record("train", Some(hours(2)), hours(100)),
        Some(&h.name("secret-key")),
    )
    .await;
    // Tagged too, but another stack's (another secret key): not ours.
    let foreign = format!("custom-{}/other-stack", h.id);
    tagged(
        h,
        &foreign,
        &record("train", Some(hours(2)), hours(100)),
        Some("someone-else/secret-key"),
    )
    .await;
    let due = vec![
        h.name("train"),
        retrain("1"),
        retrain("2"),
        retrain("3"),
        custom,
    ];
    let untouched = vec![h.name("deploy"), retrain("4"), retrain("5"), foreign];
    (due, untouched)
}

/// Every managed secret of the sweep's own, and only those (the moto
/// server is shared with other tests' secrets, tagged too).
#[tokio::test]
async fn exactly_the_due_keys_are_renewed_and_the_report_counts_them() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let (due, untouched) = fleet(&h).await;
    let before: Vec<usize> =
        futures_util::future::join_all(untouched.iter().map(|n| versions(&h, n))).await;
    let app = h.app(&sk, &[]).await;
    let report = invoke(&app, json!({"sweep": "due"})).await.unwrap();
    // Other tests' tagged secrets on the same moto are other stacks' here:
    // counted as foreign, with this test's own foreign one among them.
    let foreign = report["foreign"].as_u64().unwrap();
    assert!(foreign >= 1, "{report}");
    let mut shape = report.clone();
    shape["foreign"] = json!(0);
    shape["names"]["foreign"] = json!([]);
    assert_eq!(
        shape,
        json!({"sweep": "due", "managed": 7, "due": 5, "renewed": 5, "queued": 0,
               "fresh": 2, "skipped": 1, "left": 0, "stopped": 0, "foreign": 0, "failed": [],
               "names": {"left": [], "skipped": [h.name("retrain/5")], "stopped": [], "foreign": []}}),
    );
    for name in &due {
        let (_, r) = h.record(name, "AWSCURRENT").await;
        assert!(
            r["api_key"].as_str().unwrap().starts_with("p1k_") && r["api_key"] != "p1k_old",
            "{name} renewed: {r}"
        );
    }
    let after: Vec<usize> =
        futures_util::future::join_all(untouched.iter().map(|n| versions(&h, n))).await;
    assert_eq!(before, after, "untouched");
    assert_eq!(h.calls(&sk).await.len(), 5, "one key per due secret");
    // The train target was created, with the owner tag.
    let d =
        h.sm.describe_secret()
            .secret_id(h.name("train"))
            .send()
            .await
            .unwrap();
    assert!(
        d.tags()
            .iter()
            .any(|t| t.key() == Some("p1:secret_key_secret")
                && t.value() == Some(h.name("secret-key").as_str()))
    );

    // Right after, nothing is due: everything was renewed minutes ago.
    let again = invoke(&app, json!({"sweep": "due"})).await.unwrap();
    assert_eq!(again["due"], 0, "{again}");
    assert_eq!(again["fresh"], 7, "{again}");
}

#[tokio::test]
async fn a_dry_run_changes_nothing() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let (due, untouched) = fleet(&h).await;
    let app = h.app(&sk, &[]).await;
    let all: Vec<String> = due.iter().chain(&untouched).cloned().collect();
    let before: Vec<usize> =
        futures_util::future::join_all(all.iter().map(|n| versions(&h, n))).await;
    let report = invoke(&app, json!({"sweep": "due", "dry_run": true}))
        .await
        .unwrap();
    assert_eq!(
        (
            report["due"].as_u64(),
            report["renewed"].as_u64(),
            report["left"].as_u64()
        ),
        (Some(5), Some(0), Some(5))
    );
    let after: Vec<usize> =
        futures_util::future::join_all(all.iter().map(|n| versions(&h, n))).await;
    assert_eq!(before, after);
    assert!(h.calls(&sk).await.is_empty());
}

/// More due keys than the cap, handed to the queue in the sweep's order
/// (the missing target, then live keys soonest expiry first, then unknown
/// expiry, then expired): no vendor call by the sweep, the rest left and
/// named; the queued requests renew when fed back as an SQS batch.
#[tokio::test]
async fn the_queue_gets_the_soonest_up_to_the_cap_and_its_requests_renew() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let (_, _) = fleet(&h).await;
    let queue = h.create_queue("p1-renewals").await;
    let app = h
        .app(
            &sk,
            &[
                ("P1_RENEW_QUEUE_URL", &queue),
                ("P1_SWEEP_MAX_RENEWALS", "3"),
            ],
        )
        .await;
    let report = invoke(&app, json!({"sweep": "due"})).await.unwrap();
    assert_eq!(
        (
            report["due"].as_u64(),
            report["queued"].as_u64(),
            report["renewed"].as_u64(),
            report["left"].as_u64()
        ),
        (Some(5), Some(3), Some(0), Some(2)),
        "{report}"
    );
    assert!(
        h.calls(&sk).await.is_empty(),
        "the sweep itself calls no vendor"
    );
    let out = h
        .sqs
        .receive_message()
        .queue_url(&queue)
        .max_number_of_messages(10)
        .send()
        .await
        .unwrap();
    let messages = out.messages();
    assert_eq!(messages.len(), 3);
    let requests: Vec<Value> = messages
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
        .collect();
    let named = |r: &Value| r["target_secret_id"].as_str().unwrap().to_string();
    let targets: Vec<String> = requests.iter().map(named).collect();
    // The missing train target, then the live keys: the custom one (in 2
    // hours) and model 2 (in 12); model 3 (unknown) and model 1 (expired)
    // wait for the next sweep, named in the report.
    assert!(targets.iter().any(|t| *t == h.name("train")), "{targets:?}");
    assert!(
        targets
            .iter()
            .any(|t| t.contains(&format!("custom-{}/team-key", h.id))),
        "{targets:?}"
    );
    assert!(
        targets.iter().any(|t| t.contains(&h.name("retrain/2"))),
        "{targets:?}"
    );
    let mut left: Vec<String> = serde_json::from_value(report["names"]["left"].clone()).unwrap();
    left.sort();
    assert_eq!(left, [h.name("retrain/1"), h.name("retrain/3")]);
    // Fed back as the queue's event source mapping would.
    let records: Vec<Value> = messages
        .iter()
        .map(|m| json!({"messageId": m.message_id().unwrap(), "eventSource": "aws:sqs", "body": m.body().unwrap()}))
        .collect();
    let answer = invoke(&app, json!({"Records": records})).await.unwrap();
    assert_eq!(answer, json!({"batchItemFailures": []}));
    assert_eq!(h.calls(&sk).await.len(), 3);
    for t in [
        h.name("train"),
        h.name("retrain/2"),
        format!("custom-{}/team-key", h.id),
    ] {
        let (_, r) = h.record(&t, "AWSCURRENT").await;
        assert_ne!(r["api_key"], "p1k_old", "{t}");
    }
}

/// A deadline that ends the sweep early: the renewals that could not start
/// are left, and what was written is whole.
#[tokio::test]
async fn a_deadline_ends_the_sweep_with_the_rest_left() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    fleet(&h).await;
    let slow = json!({"delay_ms": 1500, "json": {"api_key": "p1k_slow", "end_date": "2099-01-01 00:00:00"}});
    h.script(&sk, json!([slow, slow, slow, slow, slow])).await;
    let app = h.app(&sk, &[("P1_BATCH_CONCURRENCY", "1")]).await;
    let deadline = Deadline::after(Duration::from_millis(4_000), Duration::from_millis(1_000));
    let report = invoke_by(&app, json!({"sweep": "due"}), deadline)
        .await
        .unwrap();
    let (renewed, left) = (
        report["renewed"].as_u64().unwrap(),
        report["left"].as_u64().unwrap(),
    );
    assert!(renewed >= 1 && left >= 1, "{report}");
    assert_eq!(
        renewed + left + report["failed"].as_array().unwrap().len() as u64,
        5,
        "{report}"
    );
    // Every due secret holds a whole record: the old one, or a new one.
    for name in [
        h.name("retrain/1"),
        h.name("retrain/2"),
        h.name("retrain/3"),
    ] {
        let (_, r) = h.record(&name, "AWSCURRENT").await;
        assert!(
            r["api_key"] == "p1k_old" || r["api_key"] == "p1k_slow",
            "{name}: {r}"
        );
    }
}

/// Faults: a throttled ListSecrets or BatchGetSecretValue page is retried
/// (the SDK's attempts) and the sweep goes on; one that stays throttled, so
/// that nothing could be listed or read, fails the sweep as StoreFailed,
/// renewing nothing; a renewal that fails among many is listed and the
/// others go on.
#[tokio::test]
async fn throttled_pages_and_a_failing_renewal() {
    for operation in ["ListSecrets", "BatchGetSecretValue"] {
        let h = Harness::new().await;
        let sk = h.secret_key("");
        fleet(&h).await;
        let app = h.app_via(&proxy_url(), &sk, &[]).await;
        add_rule(
            &h,
            json!({"operation": operation, "match": h.id, "fault": "throttle", "times": 2}),
        )
        .await;
        let report = invoke(&app, json!({"sweep": "due"})).await.unwrap();
        assert_eq!(report["renewed"], 5, "{operation}: {report}");
        add_rule(
            &h,
            json!({"operation": operation, "match": h.id, "fault": "throttle", "times": -1}),
        )
        .await;
        let (t, m) = invoke(&app, json!({"sweep": "due", "dry_run": true}))
            .await
            .unwrap_err();
        assert_eq!(t, "StoreFailed", "{operation}: {m}");
        assert!(m.contains("sweep cannot"), "{m}");
    }

    let h = Harness::new().await;
    let sk = h.secret_key("");
    fleet(&h).await;
    // The stand-in answers "This model may be deleted." for this model.
    let gone = h.name("retrain/deleted-9");
    h.create_secret(&gone, &record("deleted-9", Some(hours(-5)), hours(200)))
        .await;
    let app = h.app(&sk, &[]).await;
    let report = invoke(&app, json!({"sweep": "due"})).await.unwrap();
    assert_eq!(report["renewed"], 5, "{report}");
    assert_eq!(
        report["failed"],
        json!([{"secret": gone, "errorType": "PredictionOne.ModelDeleted"}])
    );
}

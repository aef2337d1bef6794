//! The broker end to end through `handle()`: the real AWS SDK against moto,
//! the real HTTP client against the vendor stand-in.

use std::time::{Duration, Instant};

use crate::common::{Harness, fixture, invoke};
use serde_json::{Value, json};

fn err_type(r: Result<Value, (String, String)>) -> (String, String) {
    r.expect_err("expected an error")
}

#[tokio::test]
async fn direct_fixtures_issue_store_and_tag() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    for (file, target, ctype, model) in [
        ("direct-train.json", h.name("train"), "train", Value::Null),
        (
            "direct-retrain.json",
            h.name("retrain/42"),
            "retrain",
            json!("42"),
        ),
        (
            "direct-deploy.json",
            h.name("deploy"),
            "deploy",
            Value::Null,
        ),
    ] {
        let r = invoke(&app, fixture(file)).await.unwrap();
        assert_eq!(r["status"], "issued", "{file}: {r}");
        assert_eq!(r["credential_type"], ctype);
        assert_eq!(r["model_id"], model);
        assert!(r.get("api_key").is_none(), "key must not be in the result");
        let (version, record) = h.record(&target, "AWSCURRENT").await;
        assert_eq!(r["version_id"], version.as_str());
        assert_eq!(record["credential_type"], ctype);
        assert_eq!(record["model_id"], model);
        assert!(record["api_key"].as_str().unwrap().starts_with("p1k_"));
        assert_eq!(record["end_date"], r["end_date"]);
        assert_eq!(record["expires_at"], r["expires_at"]);
        assert!(r["expires_at"].as_str().unwrap().ends_with('Z'));
        chrono::DateTime::parse_from_rfc3339(record["issued_at"].as_str().unwrap()).unwrap();
        let d =
            h.sm.describe_secret()
                .secret_id(&target)
                .send()
                .await
                .unwrap();
        assert_eq!(r["secret_arn"], d.arn().unwrap());
        let tags: Vec<(String, String)> = d
            .tags()
            .iter()
            .map(|t| (t.key().unwrap().into(), t.value().unwrap().into()))
            .collect();
        assert!(
            tags.contains(&("p1:credential_type".into(), ctype.into())),
            "{tags:?}"
        );
        assert!(tags.contains(&("managed-by".into(), "p1-key-broker".into())));
        assert_eq!(
            tags.iter().any(|(k, _)| k == "p1:model_id"),
            ctype == "retrain"
        );
    }
    let calls = h.calls(&sk).await;
    let sent: Vec<(Value, Value)> = calls
        .iter()
        .map(|c| (c["credential_type"].clone(), c["model_id"].clone()))
        .collect();
    assert_eq!(
        sent,
        vec![
            (json!("train"), Value::Null),
            (json!("retrain"), json!("42")),
            (json!("deploy"), Value::Null)
        ]
    );
}

#[tokio::test]
async fn fresh_key_is_reused_and_force_reissues() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    let first = invoke(&app, json!({"credential_type": "train"}))
        .await
        .unwrap();
    let second = invoke(&app, json!({"credential_type": "train"}))
        .await
        .unwrap();
    assert_eq!(second["status"], "fresh");
    assert_eq!(second["version_id"], first["version_id"]);
    assert_eq!(second["end_date"], first["end_date"]);
    assert_eq!(
        h.calls(&sk).await.len(),
        1,
        "fresh must not call the vendor"
    );

    let forced = invoke(&app, json!({"credential_type": "train", "force": true}))
        .await
        .unwrap();
    assert_eq!(forced["status"], "issued");
    assert_ne!(forced["version_id"], first["version_id"]);
    assert_eq!(h.calls(&sk).await.len(), 2);
    let (previous, _) = h.record(&h.name("train"), "AWSPREVIOUS").await;
    assert_eq!(
        first["version_id"],
        previous.as_str(),
        "the old key stays readable as AWSPREVIOUS"
    );
}

/// A stored record of the credential, issued `minutes_ago`, valid until
/// `end_date` (raw; `expires_at` read from it).
fn record_issued(minutes_ago: i64, end_date: &str, expires_at: Value) -> String {
    let issued = chrono::Utc::now() - chrono::Duration::minutes(minutes_ago);
    json!({"api_key": "p1k_old", "end_date": end_date, "expires_at": expires_at,
           "credential_type": "train", "model_id": null,
           "issued_at": issued.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)})
    .to_string()
}

#[tokio::test]
async fn a_record_for_another_credential_or_inside_the_margin_is_renewed() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    // The stand-in issues keys valid for 7 days; renewing 8 days ahead
    // means a stored key is due as soon as it is 10 minutes old.
    let app = h.app(&sk, &[("P1_RENEW_BEFORE_SECONDS", "691200")]).await;
    let in_7_days = (chrono::Utc::now() + chrono::Duration::days(7))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    h.create_secret(
        &h.name("train"),
        &record_issued(11, &in_7_days, json!(in_7_days)),
    )
    .await;
    let again = invoke(&app, json!({"credential_type": "train"}))
        .await
        .unwrap();
    assert_eq!(again["status"], "issued");

    // A retrain record in a shared target does not make a request for
    // another model fresh.
    let app = h.app(&sk, &[]).await;
    let target = h.name("shared");
    invoke(
        &app,
        json!({"credential_type": "retrain", "model_id": "5", "target_secret_id": target}),
    )
    .await
    .unwrap();
    let r = invoke(
        &app,
        json!({"credential_type": "retrain", "model_id": "6", "target_secret_id": target}),
    )
    .await
    .unwrap();
    assert_eq!(r["status"], "issued");
    assert_eq!(h.calls(&sk).await.len(), 3);
}

#[tokio::test]
async fn unknown_expiry_is_kept_raw_and_not_fresh_after_ten_minutes() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    h.script(
        &sk,
        json!([{"json": {"api_key": "k-1", "end_date": "sometime next week"}},
               {"json": {"api_key": "k-2", "end_date": "2099/01/02 03:04:05"}}]),
    )
    .await;
    let r = invoke(&app, json!({"credential_type": "deploy"}))
        .await
        .unwrap();
    assert_eq!(r["end_date"], "sometime next week");
    assert_eq!(r["expires_at"], Value::Null);
    let target = h.name("train");
    h.create_secret(
        &target,
        &record_issued(11, "sometime next week", Value::Null),
    )
    .await;
    let r = invoke(&app, json!({"credential_type": "train"}))
        .await
        .unwrap();
    assert_eq!(r["status"], "issued", "unknown expiry, 11 minutes old");
    assert_eq!(r["expires_at"], "2099-01-02T03:04:05Z");
    assert_eq!(
        h.record(&target, "AWSPREVIOUS").await.1["end_date"],
        "sometime next week"
    );
}

/// SPEC section 3: no target is renewed more often than every 10 minutes,
/// whatever the key's expiry, unless forced.
#[tokio::test]
async fn a_target_is_not_renewed_twice_within_ten_minutes() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    // Keys of unknown expiry, and keys that live 1 hour against a renewal
    // window of a day.
    let in_an_hour = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for (credential, end_date) in [("train", "whenever"), ("deploy", in_an_hour.as_str())] {
        h.script(
            &sk,
            json!([{"json": {"api_key": "k-1", "end_date": end_date}},
                   {"json": {"api_key": "k-2", "end_date": end_date}}]),
        )
        .await;
        let app = h.app(&sk, &[]).await;
        let first = invoke(&app, json!({"credential_type": credential}))
            .await
            .unwrap();
        assert_eq!(first["status"], "issued", "{credential}");
        let second = invoke(&app, json!({"credential_type": credential}))
            .await
            .unwrap();
        assert_eq!(second["status"], "fresh", "{credential}");
        assert_eq!(second["version_id"], first["version_id"]);
        let forced = invoke(&app, json!({"credential_type": credential, "force": true}))
            .await
            .unwrap();
        assert_eq!(forced["status"], "issued", "{credential}");
    }
    assert_eq!(h.calls(&sk).await.len(), 4);
}

/// SPEC section 3: a request may not write another credential's target,
/// by name or by ARN, and is refused before any call.
#[tokio::test]
async fn a_target_of_another_credential_is_refused_before_any_call() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    let train = invoke(&app, json!({"credential_type": "train"}))
        .await
        .unwrap();
    let retrain_42 = invoke(&app, json!({"credential_type": "retrain", "model_id": 42}))
        .await
        .unwrap();
    let before = h.calls(&sk).await.len();
    for request in [
        json!({"credential_type": "deploy", "target_secret_id": h.name("train")}),
        json!({"credential_type": "deploy", "target_secret_id": train["secret_arn"]}),
        json!({"credential_type": "retrain", "model_id": 7, "target_secret_id": h.name("retrain/42")}),
        json!({"credential_type": "retrain", "model_id": 7, "target_secret_id": retrain_42["secret_arn"]}),
        json!({"credential_type": "train", "target_secret_id": h.name("deploy")}),
    ] {
        let (t, m) = err_type(invoke(&app, request.clone()).await);
        assert_eq!(t, "InvalidRequest", "{request}: {m}");
        assert!(m.contains("may not be written there"), "{m}");
    }
    assert_eq!(h.calls(&sk).await.len(), before, "no vendor call");
    assert_eq!(
        h.record(&h.name("train"), "AWSCURRENT").await.0,
        train["version_id"].as_str().unwrap()
    );
    // Its own target, by ARN, still works.
    let own = invoke(
        &app,
        json!({"credential_type": "train", "target_secret_id": train["secret_arn"], "force": true}),
    )
    .await
    .unwrap();
    assert_eq!(own["status"], "issued");
    assert_eq!(own["secret_arn"], train["secret_arn"]);
}

/// One secret named by name and by ARN in one batch is one target: one key.
#[tokio::test]
async fn a_batch_naming_one_secret_two_ways_issues_one_key() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    let arn = h
        .create_secret(&h.name("train"), "not a key record yet")
        .await;
    let batch = json!({"Records": [
        {"messageId": "by-default", "eventSource": "aws:sqs", "body": json!({"credential_type": "train"}).to_string()},
        {"messageId": "by-arn", "eventSource": "aws:sqs", "body": json!({"credential_type": "train", "target_secret_id": arn}).to_string()},
        {"messageId": "by-name", "eventSource": "aws:sqs", "body": json!({"credential_type": "train", "target_secret_id": h.name("train")}).to_string()},
    ]});
    let r = invoke(&app, batch).await.unwrap();
    assert_eq!(r, json!({"batchItemFailures": []}));
    assert_eq!(h.calls(&sk).await.len(), 1);
    let versions = h.stages(&h.name("train")).await;
    assert_eq!(
        versions.len(),
        2,
        "one new version beside the first: {versions:?}"
    );
}

#[tokio::test]
async fn eventbridge_and_scheduler_fixtures() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    let r = invoke(&app, fixture("eventbridge-scheduled.json"))
        .await
        .unwrap();
    assert_eq!(
        (r["status"].as_str(), r["credential_type"].as_str()),
        (Some("issued"), Some("train"))
    );
    let r = invoke(&app, fixture("scheduler-input.json")).await.unwrap();
    assert_eq!(
        (r["status"].as_str(), r["credential_type"].as_str()),
        (Some("fresh"), Some("train"))
    );
    let r = invoke(&app, fixture("eventbridge-retrain.json"))
        .await
        .unwrap();
    assert_eq!(r["model_id"], "1234");
    h.record(&h.name("retrain/1234"), "AWSCURRENT").await;
    let (t, m) = err_type(
        invoke(
            &app,
            json!({"detail-type": "x", "source": "s", "detail": {"credentialType": "train"}}),
        )
        .await,
    );
    assert_eq!(t, "InvalidRequest");
    assert!(m.contains("credentialType"), "{m}");
}

#[tokio::test]
async fn sqs_batch_reports_only_failed_records_and_shares_vendor_calls() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    let r = invoke(&app, fixture("sqs-batch.json")).await.unwrap();
    assert_eq!(
        r,
        json!({"batchItemFailures": [{"itemIdentifier": "5b0c1a6e-0004-4c8e-9d6f-0a1b2c3d4e04"}]})
    );
    let calls = h.calls(&sk).await;
    let retrain = calls.iter().filter(|c| c["model_id"] == "7").count();
    assert_eq!(
        retrain, 1,
        "two requests for one target, one vendor call: {calls:?}"
    );
    assert_eq!(calls.len(), 2);
    h.record(&h.name("retrain/7"), "AWSCURRENT").await;
    h.record(&h.name("deploy"), "AWSCURRENT").await;

    // A vendor failure fails its own records only; envelopes work as bodies.
    let bad = h.secret_key("");
    let app = h.app(&bad, &[]).await;
    // model_id deleted-9 makes the stand-in answer "This model may be deleted."
    // (not a scripted response: the batch's groups run concurrently, so a
    // queued response could reach any of them).
    let batch = json!({"Records": [
        {"messageId": "a", "eventSource": "aws:sqs", "body": json!({"credential_type": "retrain", "model_id": "deleted-9"}).to_string()},
        {"messageId": "b", "eventSource": "aws:sqs", "body": json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}}).to_string()},
        {"messageId": "c", "eventSource": "aws:sqs", "body": json!({"credential_type": "retrain", "model_id": "../x"}).to_string()},
        {"messageId": "d", "eventSource": "aws:sqs", "body": {"credential_type": "deploy"}},
        {"messageId": "e", "eventSource": "aws:sqs", "body": json!({"credential_type": "deploy"}).to_string(), "attributes": {"ApproximateReceiveCount": 1}},
    ]});
    let r = invoke(&app, batch).await.unwrap();
    let mut failed: Vec<String> = r["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_string())
        .collect();
    failed.sort();
    // d's body is not a string: it fails alone; e (an odd attribute) is served.
    assert_eq!(failed, ["a", "c", "d"]);
    h.record(&h.name("deploy"), "AWSCURRENT").await;
}

async fn vendor_error(
    h: &Harness,
    prefix: &str,
    request: Value,
    script: Option<Value>,
    extra: &[(&str, &str)],
) -> (String, String, usize) {
    let sk = h.secret_key(prefix);
    let app = h.app(&sk, extra).await;
    if let Some(s) = script {
        h.script(&sk, s).await;
    }
    let (t, m) = err_type(invoke(&app, request).await);
    assert!(!m.contains(&sk), "secret key in the message: {m}");
    (t, m, h.calls(&sk).await.len())
}

#[tokio::test]
async fn documented_vendor_errors_are_mapped_and_never_retried() {
    let h = Harness::new().await;
    let train = json!({"credential_type": "train", "force": true});
    for (prefix, want) in [
        ("invalid-", "PredictionOne.InvalidSecretKey"),
        ("inactive-", "PredictionOne.InactiveCredential"),
        ("notfound-", "PredictionOne.CredentialNotFound"),
        ("deleted-user-", "PredictionOne.UserDeleted"),
    ] {
        let (t, _, calls) = vendor_error(&h, prefix, train.clone(), None, &[]).await;
        assert_eq!(t, want);
        // A credential error re-reads the secret; the same key is not retried.
        assert_eq!(calls, 1, "{prefix}");
    }
    let (t, _, calls) = vendor_error(
        &h,
        "",
        json!({"credential_type": "retrain", "model_id": "deleted-3"}),
        None,
        &[],
    )
    .await;
    assert_eq!((t.as_str(), calls), ("PredictionOne.ModelDeleted", 1));
    let body = |m: &str| json!([{"status": 400, "json": {"code": "4001000204", "error": "PREDA_EXTERNAL_BAD_REQUEST", "message": m}}]);
    let (t, _, calls) = vendor_error(
        &h,
        "",
        train.clone(),
        Some(body("model id is required")),
        &[],
    )
    .await;
    assert_eq!((t.as_str(), calls), ("PredictionOne.ModelIdRequired", 1));
    let (t, m, calls) =
        vendor_error(&h, "", train.clone(), Some(body("Something new.")), &[]).await;
    assert_eq!((t.as_str(), calls), ("PredictionOne.BadRequest", 1));
    assert!(m.contains("Something new."), "{m}");
    let (t, m, _) = vendor_error(
        &h,
        "",
        train.clone(),
        Some(json!([{"status": 403, "json": {"message": "Forbidden"}}])),
        &[],
    )
    .await;
    assert_eq!(t, "PredictionOne.BadRequest");
    assert!(m.contains("403") && m.contains("Forbidden"), "{m}");
}

#[tokio::test]
async fn transient_failures_are_retried_then_typed() {
    let h = Harness::new().await;
    let train = json!({"credential_type": "train", "force": true});
    let html502 = json!({"status": 502, "body": "<html><body>502 Bad Gateway</body></html>"});
    let (t, m, calls) = vendor_error(
        &h,
        "",
        train.clone(),
        Some(json!([html502, html502, html502])),
        &[],
    )
    .await;
    assert_eq!((t.as_str(), calls), ("PredictionOne.Unavailable", 3));
    assert!(m.contains("HTTP 502"), "{m}");
    let throttled = json!({"status": 429, "body": "Too Many Requests", "content_type": "text/plain", "headers": {"Retry-After": "0"}});
    let (t, _, calls) = vendor_error(
        &h,
        "",
        train.clone(),
        Some(json!([throttled, throttled])),
        &[("P1_MAX_ATTEMPTS", "2")],
    )
    .await;
    assert_eq!((t.as_str(), calls), ("PredictionOne.Throttled", 2));
    let slow = json!({"delay_ms": 1500, "json": {"api_key": "late", "end_date": "2099-01-01"}});
    let (t, _, calls) = vendor_error(
        &h,
        "",
        train.clone(),
        Some(json!([slow, slow])),
        &[("P1_HTTP_TIMEOUT_MS", "300"), ("P1_MAX_ATTEMPTS", "2")],
    )
    .await;
    assert_eq!((t.as_str(), calls), ("PredictionOne.Timeout", 2));
    let (t, _, calls) = vendor_error(
        &h,
        "",
        train.clone(),
        Some(json!([{"drop": true}])),
        &[("P1_MAX_ATTEMPTS", "1")],
    )
    .await;
    assert_eq!((t.as_str(), calls), ("PredictionOne.Unavailable", 1));

    // Recovery within the attempts: a 503, a dropped connection, then a key.
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    h.script(&sk, json!([{"status": 503, "body": ""}, {"drop": true}]))
        .await;
    let r = invoke(&app, train.clone()).await.unwrap();
    assert_eq!(r["status"], "issued");
    assert_eq!(h.calls(&sk).await.len(), 3);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    h.script(&sk, json!([{"status": 429, "json": {"message": "Too Many Requests"}, "headers": {"Retry-After": "2"}}])).await;
    let started = Instant::now();
    let r = invoke(&app, json!({"credential_type": "train"}))
        .await
        .unwrap();
    assert_eq!(r["status"], "issued");
    // A lower bound on a wait the server asked for: behaviour, not speed.
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "waited only {:?}",
        started.elapsed()
    );
    // A Retry-After longer than the function will wait fails fast as throttled.
    h.script(
        &sk,
        json!([{"status": 429, "headers": {"Retry-After": "3600"}}]),
    )
    .await;
    let (t, _) = err_type(invoke(&app, json!({"credential_type": "train", "force": true})).await);
    assert_eq!(t, "PredictionOne.Throttled");
}

#[tokio::test]
async fn malformed_and_oversized_responses() {
    let h = Harness::new().await;
    let train = json!({"credential_type": "train"});
    for script in [
        json!([{"body_size": 100000}]),
        json!([{"body_size": 100000, "chunked": true}]),
        json!([{"status": 503, "body_size": 70000}]),
        json!([{"status": 400, "body_size": 70000, "chunked": true}]),
        json!([{"body": "<html>ok</html>"}]),
        json!([{"json": {"api_key": ""}}]),
        json!([{"json": {"token": "x", "end_date": "2099-01-01"}}]),
    ] {
        let (t, _, calls) = vendor_error(&h, "", train.clone(), Some(script.clone()), &[]).await;
        assert_eq!(
            (t.as_str(), calls),
            ("PredictionOne.MalformedResponse", 1),
            "{script}"
        );
    }
}

#[tokio::test]
async fn secret_key_sources_and_failures() {
    let h = Harness::new().await;
    // JSON with the configured field.
    let sk = h.secret_key("");
    let app = h
        .app(
            &json!({"p1": sk, "other": "x"}).to_string(),
            &[("P1_SECRET_KEY_FIELD", "p1")],
        )
        .await;
    invoke(&app, json!({"credential_type": "train"}))
        .await
        .unwrap();
    assert_eq!(h.calls(&sk).await.len(), 1);

    for (value, needle) in [
        ("   ", "is empty"),
        (r#"{"secret_key": ""}"#, "is empty"),
        (r#"{"key": "x"}"#, "secret_key"),
        ("{not json", "does not parse"),
    ] {
        let app = h.app(value, &[]).await;
        let (t, m) =
            err_type(invoke(&app, json!({"credential_type": "train", "force": true})).await);
        assert_eq!(t, "SecretKeyUnavailable", "{value}");
        assert!(m.contains(needle), "{value}: {m}");
    }
    let mut config = h.config("x", &[]).await;
    config.secret_key_secret_id = h.name("does-not-exist");
    let app = p1_key_broker::App::from_config(config).await.unwrap();
    let (t, m) = err_type(invoke(&app, json!({"credential_type": "train", "force": true})).await);
    assert_eq!(t, "SecretKeyUnavailable");
    assert!(m.contains("does not exist"), "{m}");
}

#[tokio::test]
async fn secret_key_is_cached_for_its_ttl() {
    let h = Harness::new().await;
    let (old, new) = (h.secret_key(""), h.secret_key(""));
    let app = h.app(&old, &[]).await;
    let force = json!({"credential_type": "train", "force": true});
    invoke(&app, force.clone()).await.unwrap();
    h.set_secret(&h.name("secret-key"), &new).await;
    invoke(&app, force.clone()).await.unwrap();
    assert_eq!(
        (h.calls(&old).await.len(), h.calls(&new).await.len()),
        (2, 0),
        "within the TTL the cached key is used"
    );

    let (old, new) = (h.secret_key(""), h.secret_key(""));
    let app = h
        .app(&old, &[("P1_SECRET_KEY_CACHE_TTL_SECONDS", "0")])
        .await;
    invoke(&app, force.clone()).await.unwrap();
    h.set_secret(&h.name("secret-key"), &new).await;
    invoke(&app, force.clone()).await.unwrap();
    assert_eq!(
        (h.calls(&old).await.len(), h.calls(&new).await.len()),
        (1, 1),
        "after the TTL it is read again"
    );
}

#[tokio::test]
async fn refused_secret_key_is_reread_once() {
    let h = Harness::new().await;
    let (old, new) = (h.secret_key(""), h.secret_key(""));
    let app = h.app(&old, &[]).await;
    let force = json!({"credential_type": "train", "force": true});
    invoke(&app, force.clone()).await.unwrap();
    // The account's key is rotated: the old one is now refused.
    h.set_secret(&h.name("secret-key"), &new).await;
    h.script(&old, json!([{"status": 400, "json": {"code": 4001000204u64, "error": "PREDA_EXTERNAL_BAD_REQUEST", "message": "Inactive_credential."}}])).await;
    let r = invoke(&app, force.clone()).await.unwrap();
    assert_eq!(r["status"], "issued");
    assert_eq!(
        (h.calls(&old).await.len(), h.calls(&new).await.len()),
        (2, 1)
    );
    // And the new key is cached from then on.
    invoke(&app, force).await.unwrap();
    assert_eq!(h.calls(&new).await.len(), 2);
}

#[tokio::test]
async fn missing_targets_are_created_only_when_allowed() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[("P1_CREATE_MISSING_SECRET", "false")]).await;
    let (t, m) = err_type(invoke(&app, json!({"credential_type": "train"})).await);
    assert_eq!(t, "StoreFailed");
    assert!(m.contains("P1_CREATE_MISSING_SECRET"), "{m}");
    // Known before the vendor call (SPEC section 10): no key was issued.
    assert_eq!(h.calls(&sk).await.len(), 0);
    // An existing target (a plain string, not one of our records) is written to.
    h.create_secret(&h.name("train"), "placeholder").await;
    let r = invoke(&app, json!({"credential_type": "train"}))
        .await
        .unwrap();
    assert_eq!(r["status"], "issued");

    let app = h
        .app(&sk, &[("P1_TARGET_KMS_KEY_ID", "alias/p1-key-broker-test")])
        .await;
    invoke(&app, json!({"credential_type": "deploy"}))
        .await
        .unwrap();
    let d =
        h.sm.describe_secret()
            .secret_id(h.name("deploy"))
            .send()
            .await
            .unwrap();
    assert_eq!(d.kms_key_id(), Some("alias/p1-key-broker-test"));
    let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:nowhere-AbCdEf";
    let (t, m) = err_type(
        invoke(
            &app,
            json!({"credential_type": "train", "target_secret_id": arn}),
        )
        .await,
    );
    assert_eq!(t, "StoreFailed");
    assert!(m.contains("ARN"), "{m}");
    assert_eq!(
        h.calls(&sk).await.len(),
        2,
        "no vendor call for the missing ARN"
    );
}

#[tokio::test]
async fn include_key_only_when_allowed() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    let (t, _) = err_type(
        invoke(
            &app,
            json!({"credential_type": "train", "include_key": true}),
        )
        .await,
    );
    assert_eq!(t, "InvalidRequest");
    assert!(
        h.calls(&sk).await.is_empty(),
        "validation happens before any call"
    );
    let app = h.app(&sk, &[("P1_ALLOW_KEY_IN_OUTPUT", "true")]).await;
    let r = invoke(
        &app,
        json!({"credential_type": "train", "include_key": true}),
    )
    .await
    .unwrap();
    let (_, record) = h.record(&h.name("train"), "AWSCURRENT").await;
    assert_eq!(r["api_key"], record["api_key"]);
    let fresh = invoke(
        &app,
        json!({"credential_type": "train", "include_key": true}),
    )
    .await
    .unwrap();
    assert_eq!(
        (fresh["status"].as_str(), &fresh["api_key"]),
        (Some("fresh"), &record["api_key"])
    );
    let plain = invoke(&app, json!({"credential_type": "train"}))
        .await
        .unwrap();
    assert!(plain.get("api_key").is_none());
}

#[tokio::test]
async fn invalid_payloads_are_refused_before_any_call() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    for (payload, needle) in [
        (
            json!({"credentialType": "train"}),
            "expected a request object",
        ),
        (
            json!({"credential_type": "train", "modelId": 1}),
            "`modelId`",
        ),
        (
            json!({"credential_type": "retrain", "model_id": "a/../../train"}),
            "model_id",
        ),
        (
            json!({"credential_type": "retrain"}),
            "model_id is required",
        ),
        (json!({"Records": [{"eventSource": "aws:sns"}]}), "aws:sqs"),
        (json!([1, 2]), "expected"),
        (json!({"SecretId": "x"}), "rotation event"),
    ] {
        let (t, m) = err_type(invoke(&app, payload.clone()).await);
        assert_eq!(t, "InvalidRequest", "{payload}");
        assert!(m.contains(needle), "{payload}: {m}");
    }
    assert!(h.calls(&sk).await.is_empty());
}

async fn bus_with_queue(h: &Harness) -> (String, String) {
    let bus = format!("p1-bus-{}", h.id);
    h.events.create_event_bus().name(&bus).send().await.unwrap();
    let queue = h.create_queue("p1-events").await;
    let arn = h
        .sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes()
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    h.events
        .put_rule()
        .name("all")
        .event_bus_name(&bus)
        .event_pattern(r#"{"source": ["p1-key-broker"]}"#)
        .send()
        .await
        .unwrap();
    h.events
        .put_targets()
        .rule("all")
        .event_bus_name(&bus)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("q")
                .arn(arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    (bus, queue)
}

async fn received(h: &Harness, queue: &str) -> Vec<Value> {
    let out = h
        .sqs
        .receive_message()
        .queue_url(queue)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    out.messages()
        .iter()
        .map(|m| serde_json::from_str(m.body().unwrap()).unwrap())
        .collect()
}

#[tokio::test]
async fn issued_keys_are_announced_once() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let (bus, queue) = bus_with_queue(&h).await;
    let app = h.app(&sk, &[("P1_EVENT_BUS_NAME", &bus)]).await;
    let r = invoke(&app, json!({"credential_type": "train"}))
        .await
        .unwrap();
    let events = received(&h, &queue).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["detail-type"], "Prediction One API Key Issued");
    assert_eq!(events[0]["source"], "p1-key-broker");
    assert_eq!(events[0]["detail"], r);
    assert!(events[0]["detail"].get("api_key").is_none());
    let stages = h.stages(&h.name("train")).await;
    assert!(
        stages[r["version_id"].as_str().unwrap()].contains(&"P1ANNOUNCED".to_string()),
        "{stages:?}"
    );
    // Fresh and already announced: no second event.
    assert_eq!(
        invoke(&app, json!({"credential_type": "train"}))
            .await
            .unwrap()["status"],
        "fresh"
    );
    assert!(received(&h, &queue).await.is_empty());
    // A new version takes the label over.
    let r2 = invoke(&app, json!({"credential_type": "train", "force": true}))
        .await
        .unwrap();
    assert_eq!(received(&h, &queue).await.len(), 1);
    let stages = h.stages(&h.name("train")).await;
    let holders: Vec<_> = stages
        .iter()
        .filter(|(_, s)| s.contains(&"P1ANNOUNCED".to_string()))
        .map(|(v, _)| v.clone())
        .collect();
    assert_eq!(holders, [r2["version_id"].as_str().unwrap().to_string()]);
}

#[tokio::test]
async fn a_failed_announcement_is_completed_by_the_next_request() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let bus = format!("p1-late-bus-{}", h.id);
    let app = h.app(&sk, &[("P1_EVENT_BUS_NAME", &bus)]).await;
    let (t, m) = err_type(invoke(&app, json!({"credential_type": "deploy"})).await);
    assert_eq!(t, "HandOffFailed");
    let (version, _) = h.record(&h.name("deploy"), "AWSCURRENT").await;
    assert!(
        m.contains(&version),
        "the message names the stored version: {m}"
    );
    // The bus appears; the same request finds the key fresh and announces it.
    h.events.create_event_bus().name(&bus).send().await.unwrap();
    let r = invoke(&app, json!({"credential_type": "deploy"}))
        .await
        .unwrap();
    assert_eq!(
        (r["status"].as_str(), r["version_id"].as_str()),
        (Some("fresh"), Some(version.as_str()))
    );
    assert!(h.stages(&h.name("deploy")).await[&version].contains(&"P1ANNOUNCED".to_string()));
    assert_eq!(h.calls(&sk).await.len(), 1, "nothing was issued twice");
}

#[tokio::test]
async fn a_force_after_a_fresh_result_in_one_batch_still_renews() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    let first = invoke(&app, json!({"credential_type": "train"}))
        .await
        .unwrap();
    let batch = json!({"Records": [
        {"messageId": "a", "eventSource": "aws:sqs", "body": json!({"credential_type": "train"}).to_string()},
        {"messageId": "b", "eventSource": "aws:sqs", "body": json!({"credential_type": "train", "force": true}).to_string()},
        {"messageId": "c", "eventSource": "aws:sqs", "body": json!({"credential_type": "train", "force": true}).to_string()},
    ]});
    let r = invoke(&app, batch).await.unwrap();
    assert_eq!(r, json!({"batchItemFailures": []}));
    // One renewal for the two forced records (the second reuses it).
    assert_eq!(h.calls(&sk).await.len(), 2);
    let (current, _) = h.record(&h.name("train"), "AWSCURRENT").await;
    assert_ne!(first["version_id"], current.as_str());
}

#[tokio::test]
async fn the_secret_key_secret_is_never_written_whatever_it_is_called() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    let secret_key_id = h.name("secret-key");
    let arn =
        h.sm.describe_secret()
            .secret_id(&secret_key_id)
            .send()
            .await
            .unwrap()
            .arn()
            .unwrap()
            .to_string();
    for request in [
        json!({"credential_type": "train", "target_secret_id": arn}),
        json!({"credential_type": "train", "target_secret_id": arn, "force": true}),
        json!({"credential_type": "train", "target_secret_id": secret_key_id}),
    ] {
        let (t, m) = err_type(invoke(&app, request.clone()).await);
        assert_eq!(t, "InvalidRequest", "{request}");
        assert!(m.contains("secret key"), "{m}");
    }
    assert!(
        h.calls(&sk).await.is_empty(),
        "refused before the vendor call"
    );
    let value =
        h.sm.get_secret_value()
            .secret_id(&secret_key_id)
            .send()
            .await
            .unwrap();
    assert_eq!(value.secret_string(), Some(sk.as_str()));
}

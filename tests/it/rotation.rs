//! Native Secrets Manager rotation against moto. moto's `rotate_secret`
//! cannot run this function as the rotation Lambda, but it stages an empty
//! `AWSPENDING` version under the token, as Secrets Manager does; the tests
//! then play Secrets Manager's part and call each step through `handle()`.

use crate::common::{Harness, fixture, invoke};
use serde_json::{Value, json};

/// A secret that holds no record yet, tagged as a retrain key for `model_id`.
async fn retrain_tagged_placeholder(h: &Harness, name: &str, model_id: &str) {
    let tag = |k: &str, v: &str| {
        aws_sdk_secretsmanager::types::Tag::builder()
            .key(k)
            .value(v)
            .build()
    };
    h.sm.create_secret()
        .name(name)
        .secret_string("placeholder")
        .tags(tag("p1:credential_type", "retrain"))
        .tags(tag("p1:model_id", model_id))
        .send()
        .await
        .unwrap();
}

fn step(secret: &str, token: &str, step: &str) -> Value {
    json!({"SecretId": secret, "ClientRequestToken": token, "Step": step, "RotationToken": "rotation-token-1"})
}

async fn run_steps(h: &Harness, app: &p1_key_broker::App, secret: &str, token: &str) {
    for s in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        assert_eq!(
            invoke(app, step(secret, token, s)).await,
            Ok(Value::Null),
            "{s}"
        );
    }
    assert!(h.stages(secret).await[token].contains(&"AWSCURRENT".to_string()));
}

fn has(
    stages: &std::collections::HashMap<String, Vec<String>>,
    version: &str,
    stage: &str,
) -> bool {
    stages
        .get(version)
        .is_some_and(|s| s.iter().any(|x| x == stage))
}

#[tokio::test]
async fn happy_path_with_retried_steps_and_a_second_rotation() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    let first = invoke(&app, json!({"credential_type": "train"}))
        .await
        .unwrap();
    let secret = first["secret_arn"].as_str().unwrap().to_string();
    let old_version = first["version_id"].as_str().unwrap().to_string();
    let (_, old_record) = h.record(&secret, "AWSCURRENT").await;

    let token = h.start_rotation(&secret).await;
    // Every step twice: Secrets Manager retries them.
    for s in [
        "createSecret",
        "createSecret",
        "setSecret",
        "setSecret",
        "testSecret",
        "testSecret",
    ] {
        assert_eq!(
            invoke(&app, step(&secret, &token, s)).await,
            Ok(Value::Null),
            "{s}"
        );
        // Readers of AWSCURRENT see the old key until finishSecret.
        assert_eq!(h.record(&secret, "AWSCURRENT").await.0, old_version);
    }
    assert_eq!(
        h.calls(&sk).await.len(),
        2,
        "a retried createSecret issues no second key"
    );
    let (_, pending) = h.record(&secret, "AWSPENDING").await;
    assert_ne!(pending["api_key"], old_record["api_key"]);
    assert_eq!(pending["credential_type"], "train");
    for _ in 0..2 {
        assert_eq!(
            invoke(&app, step(&secret, &token, "finishSecret")).await,
            Ok(Value::Null)
        );
    }
    let stages = h.stages(&secret).await;
    assert!(has(&stages, &token, "AWSCURRENT"), "{stages:?}");
    assert!(
        has(&stages, &old_version, "AWSPREVIOUS"),
        "the old key stays readable: {stages:?}"
    );
    let (current, record) = h.record(&secret, "AWSCURRENT").await;
    assert_eq!(
        (current.as_str(), &record["api_key"]),
        (token.as_str(), &pending["api_key"])
    );

    // A second rotation after the first has finished.
    let second = h.start_rotation(&secret).await;
    run_steps(&h, &app, &secret, &second).await;
    let stages = h.stages(&secret).await;
    assert!(has(&stages, &token, "AWSPREVIOUS"), "{stages:?}");
    assert_eq!(h.calls(&sk).await.len(), 3);
    // And the broker reads the rotated key as fresh.
    let r = invoke(&app, json!({"credential_type": "train"}))
        .await
        .unwrap();
    assert_eq!(
        (r["status"].as_str(), r["version_id"].as_str()),
        (Some("fresh"), Some(second.as_str()))
    );
}

#[tokio::test]
async fn retrain_secrets_rotate_their_own_model() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    let r = invoke(&app, json!({"credential_type": "retrain", "model_id": 77}))
        .await
        .unwrap();
    let secret = r["secret_arn"].as_str().unwrap().to_string();
    let token = h.start_rotation(&secret).await;
    run_steps(&h, &app, &secret, &token).await;
    let calls = h.calls(&sk).await;
    assert_eq!(
        (&calls[1]["credential_type"], &calls[1]["model_id"]),
        (&json!("retrain"), &json!("77"))
    );
    assert_eq!(h.record(&secret, "AWSCURRENT").await.1["model_id"], "77");

    // A secret that holds no record yet: its p1: tags say what to issue.
    let tagged = h.name("tagged");
    retrain_tagged_placeholder(&h, &tagged, "88").await;
    let token = h.start_rotation(&tagged).await;
    run_steps(&h, &app, &tagged, &token).await;
    let calls = h.calls(&sk).await;
    assert_eq!(calls[2]["model_id"], "88");

    // A retrain tag without a usable model id is refused, not rotated as train.
    let broken = h.name("broken-tags");
    retrain_tagged_placeholder(&h, &broken, "no/slashes").await;
    let token = h.start_rotation(&broken).await;
    let (t, m) = invoke(&app, step(&broken, &token, "createSecret"))
        .await
        .unwrap_err();
    assert_eq!(t, "RotationError");
    assert!(m.contains("p1:model_id"), "{m}");
    assert_eq!(h.calls(&sk).await.len(), 3, "no key issued for it");

    // Neither record nor tags, but a configured target: the key its place
    // says (the deploy target holds deploy keys).
    let deploy = h.name("deploy");
    h.create_secret(&deploy, "placeholder").await;
    let token = h.start_rotation(&deploy).await;
    run_steps(&h, &app, &deploy, &token).await;
    assert_eq!(h.calls(&sk).await[3]["credential_type"], "deploy");
}

/// SPEC section 6: a secret that holds no Prediction One key (a plain
/// value, no p1: tags, not a configured target, not under the retrain
/// prefix) is refused at every step, with nothing issued or written.
#[tokio::test]
async fn a_foreign_secret_is_not_rotated() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    let foreign = h.name("database-password");
    h.create_secret(&foreign, "hunter2").await;
    let token = h.start_rotation(&foreign).await;
    let before = h.stages(&foreign).await;
    for s in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        let (t, m) = invoke(&app, step(&foreign, &token, s)).await.unwrap_err();
        assert_eq!(t, "RotationError", "{s}");
        assert!(
            m.contains("does not hold a Prediction One API key"),
            "{s}: {m}"
        );
    }
    assert!(h.calls(&sk).await.is_empty(), "nothing issued");
    assert_eq!(h.stages(&foreign).await, before, "nothing moved");
    let pending =
        h.sm.get_secret_value()
            .secret_id(&foreign)
            .version_id(&token)
            .version_stage("AWSPENDING")
            .send()
            .await;
    assert!(
        pending.map_or(true, |v| v.secret_string().is_none()),
        "nothing written"
    );
    let current =
        h.sm.get_secret_value()
            .secret_id(&foreign)
            .send()
            .await
            .unwrap();
    assert_eq!(current.secret_string(), Some("hunter2"));
}

#[tokio::test]
async fn pre_checks_refuse_what_is_not_a_pending_rotation() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    let r = invoke(&app, json!({"credential_type": "deploy"}))
        .await
        .unwrap();
    let secret = r["secret_arn"].as_str().unwrap().to_string();
    let current = r["version_id"].as_str().unwrap().to_string();

    // Rotation not enabled: refused before anything else.
    let (t, m) = invoke(&app, step(&secret, &current, "createSecret"))
        .await
        .unwrap_err();
    assert_eq!(t, "RotationError");
    assert!(m.contains("not enabled"), "{m}");

    // An unknown step is refused first of all, even for a secret that does not exist.
    let (t, m) = invoke(&app, step("nowhere", "x", "rotateSecret"))
        .await
        .unwrap_err();
    assert_eq!(t, "RotationError");
    assert!(m.contains("\"rotateSecret\""), "{m}");

    let token = h.start_rotation(&secret).await;
    let (t, m) = invoke(
        &app,
        step(
            &secret,
            "0f0e4bde-8c1a-4a5e-9f27-000000000000",
            "createSecret",
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(t, "RotationError");
    assert!(m.contains("not a version"), "{m}");
    // The current version: the step is already done.
    assert_eq!(
        invoke(&app, step(&secret, &current, "createSecret")).await,
        Ok(Value::Null)
    );
    run_steps(&h, &app, &secret, &token).await;
    // The now-previous version is neither current nor pending.
    let (t, m) = invoke(&app, step(&secret, &current, "testSecret"))
        .await
        .unwrap_err();
    assert_eq!(t, "RotationError");
    assert!(m.contains("not AWSPENDING"), "{m}");
    assert_eq!(
        h.calls(&sk).await.len(),
        2,
        "only the real rotation issued a key"
    );
}

#[tokio::test]
async fn vendor_failure_in_create_promotes_nothing() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    let r = invoke(&app, json!({"credential_type": "train"}))
        .await
        .unwrap();
    let secret = r["secret_arn"].as_str().unwrap().to_string();
    let (current, record) = h.record(&secret, "AWSCURRENT").await;
    let token = h.start_rotation(&secret).await;
    let bad = json!({"status": 503, "body": "<html>down</html>"});
    h.script(&sk, json!([bad, bad, bad])).await;
    let (t, _) = invoke(&app, step(&secret, &token, "createSecret"))
        .await
        .unwrap_err();
    assert_eq!(t, "PredictionOne.Unavailable");
    let (t, _) = invoke(&app, step(&secret, &token, "testSecret"))
        .await
        .unwrap_err();
    assert_eq!(
        t, "RotationError",
        "an empty pending version fails testSecret"
    );
    assert_eq!(
        h.record(&secret, "AWSCURRENT").await,
        (current.clone(), record.clone()),
        "the current key is untouched"
    );

    // Secrets Manager retries createSecret: now it works, and the rest follows.
    run_steps(&h, &app, &secret, &token).await;
    assert_ne!(
        h.record(&secret, "AWSCURRENT").await.1["api_key"],
        record["api_key"]
    );
}

#[tokio::test]
async fn test_secret_refuses_an_expired_pending_key() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    let r = invoke(&app, json!({"credential_type": "train"}))
        .await
        .unwrap();
    let secret = r["secret_arn"].as_str().unwrap().to_string();
    let token = h.start_rotation(&secret).await;
    h.script(
        &sk,
        json!([{"json": {"api_key": "old", "end_date": "2001-01-01 00:00:00"}}]),
    )
    .await;
    assert_eq!(
        invoke(&app, step(&secret, &token, "createSecret")).await,
        Ok(Value::Null)
    );
    let (t, m) = invoke(&app, step(&secret, &token, "testSecret"))
        .await
        .unwrap_err();
    assert_eq!(t, "RotationError");
    assert!(m.contains("expired"), "{m}");
    // A retried createSecret cannot repair it, and says so: the error names
    // the way out, docs/rotation.md's runbook.
    let (t, m) = invoke(&app, step(&secret, &token, "createSecret"))
        .await
        .unwrap_err();
    assert_eq!(t, "RotationError");
    assert!(
        m.contains("--remove-from-version-id") && m.contains("rotate-secret"),
        "{m}"
    );
    assert_eq!(
        h.calls(&sk).await.len(),
        2,
        "no key issued for a stuck version"
    );

    // The runbook, against moto: take AWSPENDING off the stuck version,
    // rotate again, and the next rotation succeeds.
    h.sm.update_secret_version_stage()
        .secret_id(&secret)
        .version_stage("AWSPENDING")
        .remove_from_version_id(&token)
        .send()
        .await
        .unwrap();
    let next = h.start_rotation(&secret).await;
    assert_ne!(next, token);
    run_steps(&h, &app, &secret, &next).await;
    let (current, record) = h.record(&secret, "AWSCURRENT").await;
    assert_eq!(current, next);
    assert_ne!(record["end_date"], "2001-01-01 00:00:00");
}

#[tokio::test]
async fn rotation_fixtures_drive_a_rotation() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    let r = invoke(&app, json!({"credential_type": "train"}))
        .await
        .unwrap();
    let secret = r["secret_arn"].as_str().unwrap().to_string();
    let token = h.start_rotation(&secret).await;
    for file in [
        "rotation-create-secret.json",
        "rotation-set-secret.json",
        "rotation-test-secret.json",
        "rotation-finish-secret.json",
    ] {
        let mut event = fixture(file);
        event["SecretId"] = json!(secret);
        event["ClientRequestToken"] = json!(token);
        assert_eq!(invoke(&app, event).await, Ok(Value::Null), "{file}");
    }
    assert_eq!(h.record(&secret, "AWSCURRENT").await.0, token);
}

#[tokio::test]
async fn the_secret_key_secret_is_not_rotated() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    let secret = h.name("secret-key");
    let token = h.start_rotation(&secret).await;
    let (t, m) = invoke(&app, step(&secret, &token, "createSecret"))
        .await
        .unwrap_err();
    assert_eq!(t, "RotationError");
    assert!(m.contains("secret key"), "{m}");
    assert!(h.calls(&sk).await.is_empty());
    let value =
        h.sm.get_secret_value()
            .secret_id(&secret)
            .version_stage("AWSCURRENT")
            .send()
            .await
            .unwrap();
    assert_eq!(value.secret_string(), Some(sk.as_str()));
}

/// SPEC section 6: a finishSecret out of order (before createSecret) finds
/// an empty AWSPENDING version and must not promote it.
#[tokio::test]
async fn finish_before_create_keeps_the_current_key() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    let first = invoke(&app, json!({"credential_type": "train"}))
        .await
        .unwrap();
    let secret = first["secret_arn"].as_str().unwrap().to_string();
    let current = first["version_id"].as_str().unwrap().to_string();
    let token = h.start_rotation(&secret).await;

    let err = invoke(&app, step(&secret, &token, "finishSecret"))
        .await
        .unwrap_err();
    assert_eq!(err.0, "RotationError", "{}", err.1);
    assert!(err.1.contains("holds no value"), "{}", err.1);
    let stages = h.stages(&secret).await;
    assert!(has(&stages, &current, "AWSCURRENT"));
    assert!(!has(&stages, &token, "AWSCURRENT"));
    // The rotation then completes in order.
    run_steps(&h, &app, &secret, &token).await;
}

/// SPEC section 6: only createSecret reads the Prediction One secret key;
/// the other steps work while it is unreadable.
#[tokio::test]
async fn only_create_secret_needs_the_secret_key() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app(&sk, &[]).await;
    let first = invoke(&app, json!({"credential_type": "train"}))
        .await
        .unwrap();
    let secret = first["secret_arn"].as_str().unwrap().to_string();
    let token = h.start_rotation(&secret).await;
    assert_eq!(
        invoke(&app, step(&secret, &token, "createSecret")).await,
        Ok(Value::Null)
    );

    // A new instance (nothing cached) whose secret-key secret is gone.
    let config = h.config(&sk, &[]).await;
    h.sm.delete_secret()
        .secret_id(&config.secret_key_secret_id)
        .force_delete_without_recovery(true)
        .send()
        .await
        .unwrap();
    let cold = p1_key_broker::App::from_config(config).await.unwrap();
    for s in ["setSecret", "testSecret", "finishSecret"] {
        assert_eq!(
            invoke(&cold, step(&secret, &token, s)).await,
            Ok(Value::Null),
            "{s}"
        );
    }
    assert!(has(&h.stages(&secret).await, &token, "AWSCURRENT"));
    // createSecret of the next rotation does need it.
    let next = h.start_rotation(&secret).await;
    let err = invoke(&cold, step(&secret, &next, "createSecret"))
        .await
        .unwrap_err();
    assert_eq!(err.0, "SecretKeyUnavailable", "{}", err.1);
}

//! The fault-injecting proxy in front of moto (`scripts/aws_fault_proxy.py`,
//! started by `scripts/services.sh`, which exports `P1_FAULT_PROXY_URL`):
//! these tests check the proxy itself with plain SDK clients, so that the
//! function's fault tests can rely on it. Each test matches only request
//! bodies that carry its own names, so tests run in parallel.

use std::time::{Duration, Instant};

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use serde_json::{Value, json};

use crate::common::{Harness, fixture, invoke};

/// The proxy's URL, also an AWS endpoint URL.
pub fn proxy_url() -> String {
    std::env::var("P1_FAULT_PROXY_URL").unwrap_or_else(|_| {
        panic!("P1_FAULT_PROXY_URL is not set: run the integration tests with scripts/test.sh (scripts/services.sh start)")
    })
}

/// Adds a fault rule (see the proxy's docstring); returns its id.
pub async fn add_rule(h: &Harness, rule: Value) -> u64 {
    let r = h
        .http
        .post(format!("{}/_faults/rules", proxy_url()))
        .json(&rule)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert!(status.is_success(), "rule refused: {body}");
    body["id"].as_u64().unwrap()
}

/// One control call for the requests whose body contains `m`.
async fn control(h: &Harness, method: reqwest::Method, path: &str, m: &str) -> Value {
    h.http
        .request(method, format!("{}/_faults/{path}", proxy_url()))
        .query(&[("match", m)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The rules whose `match` is `m`, with `remaining`, `hits` and `holding`.
pub async fn rules(h: &Harness, m: &str) -> Vec<Value> {
    let v = control(h, reqwest::Method::GET, "rules", m).await;
    v["rules"].as_array().cloned().unwrap()
}

/// Removes the rules whose `match` is `m`; returns how many.
pub async fn clear_rules(h: &Harness, m: &str) -> u64 {
    let v = control(h, reqwest::Method::DELETE, "rules", m).await;
    v["deleted"].as_u64().unwrap()
}

/// The requests seen whose body contains `m`: `operations` and `faulted`
/// (counts per operation name), `total`, `connections`, `complete`.
pub async fn calls(h: &Harness, m: &str) -> Value {
    control(h, reqwest::Method::GET, "calls", m).await
}

/// An AWS configuration on the proxy: `attempts` in all (fast backoff), and
/// an operation timeout if given.
async fn via_proxy(attempts: u32, timeout: Option<Duration>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(proxy_url())
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(attempts)
                .with_initial_backoff(Duration::from_millis(10)),
        );
    if let Some(t) = timeout {
        loader = loader.timeout_config(TimeoutConfig::builder().operation_timeout(t).build());
    }
    loader.load().await
}

/// The HTTP status of a service error (0 if there was no response).
fn status<E>(e: &SdkError<E>) -> u16 {
    e.raw_response().map(|r| r.status().as_u16()).unwrap_or(0)
}

#[tokio::test]
async fn throttle_is_retried_by_the_sdk_until_times_is_used_up() {
    let h = Harness::new().await;
    let name = h.name("throttled");
    h.create_secret(&name, "v1").await;
    let sm = aws_sdk_secretsmanager::Client::new(&via_proxy(3, None).await);

    // Two throttles, then moto answers: the SDK's third attempt succeeds.
    add_rule(
        &h,
        json!({"operation": "secretsmanager.GetSecretValue", "match": name,
               "fault": "throttle", "times": 2}),
    )
    .await;
    let out = sm.get_secret_value().secret_id(&name).send().await.unwrap();
    assert_eq!(out.secret_string(), Some("v1"));
    let c = calls(&h, &name).await;
    assert_eq!(c["operations"]["GetSecretValue"], 3, "{c}");
    assert_eq!(c["faulted"]["GetSecretValue"], 2, "{c}");

    // Always throttled (operation given by its name alone): the SDK gives up
    // after its 3 attempts with the service's error.
    add_rule(
        &h,
        json!({"operation": "GetSecretValue", "match": name, "fault": "throttle", "times": -1}),
    )
    .await;
    let e = sm
        .get_secret_value()
        .secret_id(&name)
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ThrottlingException"), "{e:?}");
    assert_eq!(e.message(), Some("Rate exceeded"));
    assert_eq!(status(&e), 400);
    let c = calls(&h, &name).await;
    assert_eq!(c["operations"]["GetSecretValue"], 6, "{c}");
    assert_eq!(c["faulted"]["GetSecretValue"], 5, "{c}");
    let r = rules(&h, &name).await;
    assert_eq!(
        r.iter()
            .map(|r| (r["remaining"].clone(), r["hits"].clone()))
            .collect::<Vec<_>>(),
        vec![(json!(0), json!(2)), (json!(-1), json!(3))]
    );

    // The rules gone, moto answers again; other operations were never touched.
    assert_eq!(clear_rules(&h, &name).await, 2);
    let out = sm.get_secret_value().secret_id(&name).send().await.unwrap();
    assert_eq!(out.secret_string(), Some("v1"));
    let c = calls(&h, &name).await;
    assert_eq!(c["operations"]["GetSecretValue"], 7, "{c}");
    assert!(c["operations"].get("PutSecretValue").is_none(), "{c}");
    assert_eq!(c["complete"], true);
    // CreateSecret went to moto directly, not through the proxy.
    assert!(c["operations"].get("CreateSecret").is_none(), "{c}");
}

#[tokio::test]
async fn each_service_gets_its_own_error_shapes() {
    let h = Harness::new().await;
    let aws = via_proxy(1, None).await;
    let sm = aws_sdk_secretsmanager::Client::new(&aws);
    let sfn = aws_sdk_sfn::Client::new(&aws);
    let events = aws_sdk_eventbridge::Client::new(&aws);
    let name = h.name("shapes");
    let arn = h.create_secret(&name, "v1").await;
    let rule = |op: &str, fault: &str| json!({"operation": op, "match": h.id, "fault": fault});

    // Secrets Manager: its modelled 5xx, InternalServiceError.
    add_rule(&h, rule("secretsmanager.PutSecretValue", "server_error")).await;
    let e = sm
        .put_secret_value()
        .secret_id(&name)
        .secret_string("v2")
        .send()
        .await
        .unwrap_err();
    assert_eq!((e.code(), status(&e)), (Some("InternalServiceError"), 500));
    assert!(e.into_service_error().is_internal_service_error());

    add_rule(&h, rule("CreateSecret", "access_denied")).await;
    let e = sm
        .create_secret()
        .name(h.name("denied"))
        .secret_string("v")
        .send()
        .await
        .unwrap_err();
    assert_eq!((e.code(), status(&e)), (Some("AccessDeniedException"), 400));

    add_rule(&h, rule("UpdateSecretVersionStage", "throttle")).await;
    let e = sm
        .update_secret_version_stage()
        .secret_id(&arn)
        .version_stage("AWSCURRENT")
        .send()
        .await
        .unwrap_err();
    assert_eq!((e.code(), status(&e)), (Some("ThrottlingException"), 400));

    // Step Functions: no modelled 5xx, so AWS's common InternalFailure; its
    // modelled errors, as Step Functions sends them, through "error".
    let token = format!("token-{}", h.id);
    add_rule(&h, rule("AWSStepFunctions.SendTaskSuccess", "server_error")).await;
    let e = sfn
        .send_task_success()
        .task_token(&token)
        .output("{}")
        .send()
        .await
        .unwrap_err();
    assert_eq!((e.code(), status(&e)), (Some("InternalFailure"), 500));
    add_rule(
        &h,
        json!({"operation": "SendTaskSuccess", "match": token, "fault": "error",
               "status": 400, "type": "TaskTimedOut", "message": "Task Timed Out"}),
    )
    .await;
    let e = sfn
        .send_task_success()
        .task_token(&token)
        .output("{}")
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.message(), Some("Task Timed Out"));
    assert!(e.into_service_error().is_task_timed_out());
    add_rule(
        &h,
        json!({"operation": "SendTaskFailure", "match": token, "fault": "error",
               "status": 400, "type": "TaskDoesNotExist"}),
    )
    .await;
    let e = sfn
        .send_task_failure()
        .task_token(&token)
        .send()
        .await
        .unwrap_err();
    assert!(e.into_service_error().is_task_does_not_exist());
    // No rule left: moto's own answer to an unknown token comes through.
    let e = sfn
        .send_task_failure()
        .task_token(&token)
        .send()
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("InvalidToken"), "{e:?}");

    // EventBridge: its modelled 5xx, InternalException.
    let entry = aws_sdk_eventbridge::types::PutEventsRequestEntry::builder()
        .source(format!("p1.test.{}", h.id))
        .detail_type("faults")
        .detail("{}")
        .build();
    add_rule(&h, rule("AWSEvents.PutEvents", "server_error")).await;
    let e = events
        .put_events()
        .entries(entry.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!((e.code(), status(&e)), (Some("InternalException"), 500));
    assert!(e.into_service_error().is_internal_exception());
    add_rule(&h, rule("PutEvents", "access_denied")).await;
    let e = events
        .put_events()
        .entries(entry.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!((e.code(), status(&e)), (Some("AccessDeniedException"), 400));
    events.put_events().entries(entry).send().await.unwrap();

    let c = calls(&h, &h.id).await;
    assert_eq!(
        c["faulted"],
        json!({"PutSecretValue": 1, "CreateSecret": 1, "UpdateSecretVersionStage": 1,
               "SendTaskSuccess": 2, "SendTaskFailure": 1, "PutEvents": 2}),
        "{c}"
    );
    assert_eq!(c["operations"]["SendTaskFailure"], 2, "{c}");
    assert_eq!(c["operations"]["PutEvents"], 3, "{c}");
    clear_rules(&h, &h.id).await;
    clear_rules(&h, &token).await;
}

#[tokio::test]
async fn a_hang_ends_in_the_clients_timeout_and_holds_nothing_else() {
    let h = Harness::new().await;
    let name = h.name("hang");
    h.create_secret(&name, "v1").await;
    let hanging =
        aws_sdk_secretsmanager::Client::new(&via_proxy(1, Some(Duration::from_secs(1))).await);
    let other =
        aws_sdk_secretsmanager::Client::new(&via_proxy(1, Some(Duration::from_secs(5))).await);
    add_rule(
        &h,
        json!({"operation": "DescribeSecret", "match": name, "fault": "hang"}),
    )
    .await;

    let started = Instant::now();
    let (hung, during) = tokio::join!(hanging.describe_secret().secret_id(&name).send(), async {
        // While the first request hangs, the proxy serves others.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let r = other.get_secret_value().secret_id(&name).send().await;
        (r, started.elapsed())
    });
    let elapsed = started.elapsed();
    let e = hung.unwrap_err();
    assert!(matches!(e, SdkError::TimeoutError(_)), "{e:?}");
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    let (r, at) = during;
    assert_eq!(r.unwrap().secret_string(), Some("v1"));
    assert!(at < Duration::from_secs(1), "served at {at:?}");

    // The client dropped its connection at its timeout; the proxy lets go of
    // it then, not at its own bound (--hang-seconds, 120 s).
    let mut holding = json!(null);
    for _ in 0..40 {
        holding = rules(&h, &name).await[0]["holding"].clone();
        if holding == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(holding, 0, "the hang still holds the connection");

    // times was 1: the next DescribeSecret goes through.
    let d = hanging
        .describe_secret()
        .secret_id(&name)
        .send()
        .await
        .unwrap();
    assert_eq!(d.name(), Some(name.as_str()));
    let c = calls(&h, &name).await;
    assert_eq!(c["operations"]["DescribeSecret"], 2, "{c}");
    assert_eq!(c["faulted"], json!({"DescribeSecret": 1}), "{c}");
    clear_rules(&h, &name).await;
}

#[tokio::test]
async fn the_sdk_keeps_its_connection_alive_through_the_proxy() {
    let h = Harness::new().await;
    let name = h.name("keepalive");
    h.create_secret(&name, "v1").await;
    let sm = aws_sdk_secretsmanager::Client::new(&via_proxy(1, None).await);
    for i in 0..5 {
        let value = format!("v{}", i + 2);
        sm.put_secret_value()
            .secret_id(&name)
            .secret_string(&value)
            .send()
            .await
            .unwrap();
        let out = sm.get_secret_value().secret_id(&name).send().await.unwrap();
        assert_eq!(out.secret_string(), Some(value.as_str()));
    }
    let c = calls(&h, &name).await;
    assert_eq!(c["total"], 10, "{c}");
    assert_eq!(c["connections"], 1, "{c}");
}

#[tokio::test]
async fn an_app_can_be_pointed_at_the_proxy() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.app_via(&proxy_url(), &sk, &[]).await;
    let r = invoke(&app, fixture("direct-train.json")).await.unwrap();
    assert_eq!(r["status"], "issued", "{r}");
    // Its Secrets Manager calls went through the proxy: the secret key read,
    // the key written.
    let c = calls(&h, &h.id).await;
    let ops = &c["operations"];
    assert!(ops["GetSecretValue"].as_u64() >= Some(1), "{c}");
    assert!(
        ops.get("CreateSecret").is_some() || ops.get("PutSecretValue").is_some(),
        "{c}"
    );
}

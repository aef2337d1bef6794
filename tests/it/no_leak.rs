//! Secrets never reach logs, errors or results: every run here uses sentinel
//! values for the secret key, the API keys, task tokens and the rotation
//! token, logs at TRACE through the function's own logging set-up, and then
//! searches every captured line, error and result for them.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::common::{Harness, invoke};
use serde_json::{Value, json};
use tracing::level_filters::LevelFilter;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const SENTINELS: &[&str] = &["SENTINELSK", "SENTINELAK", "SENTINELTT", "SENTINELRT"];

#[tokio::test]
async fn sentinels_never_leave_through_logs_errors_or_results() {
    let capture = Capture::default();
    let writer = capture.clone();
    p1_key_broker::logging::init_with_writer(LevelFilter::TRACE, true, move || writer.clone());

    let h = Harness::new().await;
    let sk = format!("SENTINELSK-{}", h.id);
    let bus = format!("p1-leak-bus-{}", h.id);
    h.events.create_event_bus().name(&bus).send().await.unwrap();
    let app = h.app(&sk, &[("P1_EVENT_BUS_NAME", &bus)]).await;
    let ak = |n: u32| json!({"json": {"api_key": format!("SENTINELAK-{n}"), "end_date": "2099-01-01 00:00:00"}});
    h.script(&sk, json!([ak(1), ak(2), ak(3),
        {"status": 400, "json": {"code": 1, "error": "X", "message": format!("unknown key {sk}")}},
        {"status": 502, "body": format!("<html>{sk}</html>")}, {"status": 502, "body": "x"}, {"status": 502, "body": "x"}])).await;

    let mut outputs: Vec<String> = Vec::new();
    let mut record = |r: Result<Value, (String, String)>| {
        outputs.push(match r {
            Ok(v) => v.to_string(),
            Err((t, m)) => format!("{t}: {m}"),
        })
    };
    record(invoke(&app, json!({"credential_type": "train"})).await);
    record(invoke(&app, json!({"credential_type": "train"})).await);
    record(
        invoke(
            &app,
            json!({"credential_type": "retrain", "model_id": 1, "task_token": "SENTINELTT-direct"}),
        )
        .await,
    );
    record(invoke(&app, json!({"Records": [
        {"messageId": "m1", "eventSource": "aws:sqs", "body": json!({"credential_type": "deploy", "task_token": "SENTINELTT-sqs"}).to_string()},
        {"messageId": "m2", "eventSource": "aws:sqs", "body": json!({"credential_type": "deploy", "bad": 1, "task_token": "SENTINELTT-bad"}).to_string()},
    ]})).await);
    record(invoke(&app, json!({"credential_type": "train", "force": true})).await);
    record(invoke(&app, json!({"credential_type": "train", "force": true})).await);
    record(invoke(&app, json!({"credential_type": "train", "include_key": true, "task_token": "SENTINELTT-refused"})).await);

    // Rotation, with a sentinel RotationToken.
    let target = h.name("train");
    let pending = h.start_rotation(&target).await;
    h.script(&sk, json!([ak(4)])).await;
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        record(invoke(&app, json!({"SecretId": target, "ClientRequestToken": pending, "Step": step, "RotationToken": "SENTINELRT-1"})).await);
    }

    // The runs did what they should, so the search below means something.
    assert!(
        outputs[0].contains("\"issued\"") && outputs[1].contains("\"fresh\""),
        "{outputs:?}"
    );
    assert!(
        outputs[4].starts_with("PredictionOne.BadRequest"),
        "{outputs:?}"
    );
    assert!(
        outputs[5].starts_with("PredictionOne.Unavailable"),
        "{outputs:?}"
    );
    assert_eq!(
        outputs[7..],
        ["null", "null", "null", "null"],
        "rotation steps: {outputs:?}"
    );
    let (_, current) = h.record(&target, "AWSCURRENT").await;
    assert_eq!(
        current["api_key"], "SENTINELAK-4",
        "rotation stored the scripted key"
    );

    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = logs.lines().collect();
    assert!(
        lines.len() > 50,
        "too little captured to mean anything: {}",
        lines.len()
    );
    assert!(
        lines.iter().any(|l| l.contains("\"level\":\"DEBUG\"")),
        "DEBUG lines from the AWS SDK and HTTP stack are captured"
    );
    for sentinel in SENTINELS {
        for line in &lines {
            assert!(!line.contains(sentinel), "{sentinel} in a log line: {line}");
        }
        for output in &outputs {
            assert!(
                !output.contains(sentinel),
                "{sentinel} in a result or error: {output}"
            );
        }
    }
}

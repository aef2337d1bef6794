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

/// Every log line of this test process from the first call on, at TRACE,
/// through the function's own logging set-up (one subscriber per process,
/// so the tests here share it).
fn capture() -> &'static Capture {
    static CAPTURE: std::sync::OnceLock<Capture> = std::sync::OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture::default();
        let writer = capture.clone();
        p1_key_broker::logging::init_with_writer(LevelFilter::TRACE, true, move || writer.clone());
        capture
    })
}

impl Capture {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_string)
            .collect()
    }
}

#[tokio::test]
async fn sentinels_never_leave_through_logs_errors_or_results() {
    let capture = capture();

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

    // The sweep reads every managed record (BatchGetSecretValue brings the
    // sentinel keys back) and reports on them.
    record(invoke(&app, json!({"sweep": "due", "dry_run": true})).await);
    record(invoke(&app, json!({"sweep": "due"})).await);

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
        outputs[7..11],
        ["null", "null", "null", "null"],
        "rotation steps: {outputs:?}"
    );
    for swept in &outputs[11..] {
        let report: Value = serde_json::from_str(swept).expect(swept);
        // deploy and model 1 (train is rotated now: left to its rotation).
        assert_eq!(
            (&report["managed"], &report["fresh"]),
            (&json!(2), &json!(2)),
            "{swept}"
        );
    }
    let (_, current) = h.record(&target, "AWSCURRENT").await;
    assert_eq!(
        current["api_key"], "SENTINELAK-4",
        "rotation stored the scripted key"
    );

    let lines = capture.lines();
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

/// The retrain runner: the secret key, the retrain keys it issues and
/// stores, the task tokens, and the pre-signed upload and download URLs
/// (recognised by their path and signature) never reach a log line, a
/// result or an error, through every action, a refused key, a failed and a
/// retried upload, and reports to Step Functions.
#[tokio::test]
async fn the_retrain_runner_leaks_no_key_url_or_token() {
    use crate::common::{data, run};

    let capture = capture();
    let h = Harness::new().await;
    let sk = format!("SENTINELSK-r-{}", h.id);
    let app = h.runner(&sk, &[]).await;
    let bucket = h.create_bucket().await;
    let model = h.model("");
    h.control(
        "retrain",
        json!({"model_id": model, "running_polls": 1, "results_size": 70_000}),
    )
    .await;
    h.control(
        "script",
        json!({"model_id": model, "endpoint": "upload", "responses": [{"status": 503}]}),
    )
    .await;
    let key = format!("retrain/{model}/data.csv");
    h.put_object(&bucket, &key, data(100_000, 3)).await;

    let mut outputs: Vec<String> = Vec::new();
    let mut record = |r: Result<Value, (String, String)>| {
        let text = match &r {
            Ok(v) => v.to_string(),
            Err((t, m)) => format!("{t}: {m}"),
        };
        outputs.push(text);
        r
    };
    let started = record(
        run(
            &app,
            json!({"action": "start", "bucket": bucket, "key": key}),
        )
        .await,
    )
    .expect("start");
    let job = started["retrain_job_id"].as_str().unwrap().to_string();
    let action = |a: &str| json!({"action": a, "model_id": model, "retrain_job_id": job});
    record(run(&app, action("status")).await).expect("status");
    h.control("revoke", json!({"model_id": model})).await;
    let finished = record(run(&app, action("status")).await).expect("status");
    assert_eq!(finished["state"], "finished", "{finished}");
    let mut save = action("save_results");
    save["bucket"] = json!(bucket);
    save["key"] = json!(format!("retrain-results/{model}/{job}/results"));
    record(run(&app, save).await).expect("save_results");
    record(run(&app, action("switch_model")).await).expect("switch_model");
    // Failures, and reports with task tokens Step Functions does not know.
    let _ = record(run(&app, action("nonsense")).await);
    let _ = record(
        run(
            &app,
            json!({"Records": [
                {"messageId": "r1", "eventSource": "aws:sqs", "body": json!({"action": "status", "model_id": model, "retrain_job_id": "rj-missing", "task_token": "SENTINELTT-r1"}).to_string()},
                {"messageId": "r2", "eventSource": "aws:sqs", "body": json!({"action": "status", "model_id": model, "retrain_job_id": job, "task_token": "SENTINELTT-r2"}).to_string()},
                {"messageId": "r3", "eventSource": "aws:sqs", "body": json!({"action": "start", "bucket": bucket, "key": "retrain/x/y.txt", "task_token": "SENTINELTT-r3"}).to_string()},
            ]}),
        )
        .await,
    );

    // The keys it issued and stored (the first one was revoked).
    let target = h.name(&format!("retrain/{model}"));
    let mut keys = Vec::new();
    for stage in ["AWSCURRENT", "AWSPREVIOUS"] {
        let (_, value) = h.record(&target, stage).await;
        keys.push(value["api_key"].as_str().unwrap().to_string());
    }
    assert_ne!(keys[0], keys[1]);
    let job_record = &h.jobs(&model).await[0];
    assert_eq!(
        job_record["upload_puts"], 2,
        "a failed and a retried upload"
    );
    assert_eq!(job_record["download_gets"], 1);

    let lines = capture.lines();
    assert!(lines.len() > 50, "too little captured: {}", lines.len());
    for said in [
        "retrain job created",
        "upload failed transiently",
        "stored retrain key was refused",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(said)),
            "the runner's own lines are captured: {said}"
        );
    }
    let mut needles: Vec<&str> = vec![
        "SENTINELSK",
        "SENTINELTT",
        "/_upload/",
        "/_download/",
        "X-Amz-Signature",
    ];
    needles.extend(keys.iter().map(String::as_str));
    for needle in &needles {
        for line in &lines {
            assert!(!line.contains(needle), "{needle} in a log line: {line}");
        }
        for output in &outputs {
            assert!(
                !output.contains(needle),
                "{needle} in a result or error: {output}"
            );
        }
    }
}

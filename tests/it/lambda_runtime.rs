//! The real Lambda runtime path: `cargo lambda watch` runs the function
//! binaries under its Runtime API emulator, and `cargo lambda invoke
//! <function> --data-file events/...` sends the fixtures, against moto and
//! the vendor stand-in. Logs run at TRACE and are searched for the sentinel
//! secret key.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Harness;
use serde_json::{Value, json};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

struct Watch {
    child: Child,
    port: u16,
    log: PathBuf,
    /// The binary invoked: the crate has two, so invokes name one.
    function: &'static str,
}

impl Watch {
    fn start(name: &str, env: &[(&str, &str)], remove: &[&str]) -> Watch {
        Self::start_function("p1-key-broker", name, env, remove)
    }

    fn start_function(
        function: &'static str,
        name: &str,
        env: &[(&str, &str)],
        remove: &[&str],
    ) -> Watch {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Outside the crate, so the log never looks like a source change.
        let log = std::env::temp_dir().join(format!("p1-key-broker-watch-{name}-{port}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new("cargo");
        cmd.args([
            "lambda",
            "watch",
            "--ignore-changes",
            "-A",
            "127.0.0.1",
            "-P",
            &port.to_string(),
            "--timeout",
            "120",
        ])
        .current_dir(MANIFEST_DIR)
        .env("RUST_LOG", "trace")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        for k in remove {
            cmd.env_remove(k);
        }
        // Its own process group, so that stopping it stops the function too.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .expect("cargo lambda watch (is cargo-lambda on PATH? run scripts/test.sh)");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "cargo lambda watch did not start; see {}",
                log.display()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Watch {
            child,
            port,
            log,
            function,
        }
    }

    /// `cargo lambda invoke --data-file events/<file>`: the parsed stdout.
    fn invoke(&self, file: &str) -> Value {
        self.invoke_path(&format!("events/{file}"))
    }

    fn invoke_path(&self, file: &str) -> Value {
        let out = Command::new("cargo")
            .args([
                "lambda",
                "invoke",
                self.function,
                "-A",
                "127.0.0.1",
                "-P",
                &self.port.to_string(),
                "--data-file",
                file,
            ])
            .current_dir(MANIFEST_DIR)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "invoke {file}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{file}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    /// The invoke endpoint directly, to see an error's errorType (the CLI
    /// prints only a generic error).
    async fn invoke_raw(&self, payload: Value) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(format!(
                "http://127.0.0.1:{}/2015-03-31/functions/{}/invocations",
                self.port, self.function
            ))
            .json(&payload)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops the emulator and the function; their output.
    fn stop(mut self) -> String {
        self.kill();
        self.logs()
    }

    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["--", &format!("-{}", self.child.id())])
                .status();
            let _ = self.child.wait();
        }
    }
}

/// Also when a test panics: no emulator or function outlives its test.
impl Drop for Watch {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The JSON log lines the function itself wrote (not the runtime's or the
/// emulator's).
fn function_log_lines(logs: &str) -> Vec<Value> {
    logs.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("p1_key_broker"))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn fixtures_through_cargo_lambda() {
    let h = Harness::new().await;
    let sk = format!("SENTINELSK-e2e-{}", h.id);
    let config = h.config(&sk, &[]).await;
    let watch = Watch::start(
        "main",
        &[
            ("P1_SECRET_KEY_SECRET_ID", &config.secret_key_secret_id),
            ("P1_TRAIN_SECRET_ID", &config.train_secret_id),
            ("P1_DEPLOY_SECRET_ID", &config.deploy_secret_id),
            ("P1_RETRAIN_SECRET_PREFIX", &config.retrain_secret_prefix),
            ("P1_API_BASE_URL", &h.standin),
        ],
        &[],
    );

    let r = watch.invoke("direct-train.json");
    assert_eq!(
        (r["status"].as_str(), r["credential_type"].as_str()),
        (Some("issued"), Some("train")),
        "{r}"
    );
    assert_eq!(watch.invoke("scheduler-input.json")["status"], "fresh");
    assert_eq!(
        watch.invoke("eventbridge-scheduled.json")["status"],
        "fresh"
    );
    let r = watch.invoke("direct-retrain.json");
    assert_eq!(
        (r["status"].as_str(), r["model_id"].as_str()),
        (Some("issued"), Some("42"))
    );
    assert_eq!(watch.invoke("eventbridge-retrain.json")["model_id"], "1234");
    assert_eq!(watch.invoke("direct-deploy.json")["status"], "issued");
    let r = watch.invoke("sqs-batch.json");
    assert_eq!(
        r["batchItemFailures"],
        json!([{"itemIdentifier": "5b0c1a6e-0004-4c8e-9d6f-0a1b2c3d4e04"}])
    );
    let (_, record) = h
        .record(&format!("{}7", config.retrain_secret_prefix), "AWSCURRENT")
        .await;
    assert_eq!(record["model_id"], "7");

    // The sweep's fixtures: every key made above is fresh, so the dry run
    // finds none due and the sweep renews none (its listing is this test's
    // own secrets: the tag names this test's secret key).
    let dry = watch.invoke("sweep-dry-run.json");
    assert_eq!(dry["sweep"], "due", "{dry}");
    assert!(dry["managed"].as_u64().unwrap() >= 5, "{dry}");
    assert_eq!(
        (&dry["due"], &dry["renewed"], &dry["left"]),
        (&json!(0), &json!(0), &json!(0)),
        "{dry}"
    );
    assert_eq!(dry["fresh"], dry["managed"], "{dry}");
    let swept = watch.invoke("sweep-due.json");
    assert_eq!(
        (&swept["due"], &swept["renewed"], &swept["failed"]),
        (&json!(0), &json!(0), &json!([])),
        "{swept}"
    );

    // The fixture's token is unknown to Step Functions (moto: InvalidToken):
    // the task is gone, so the invocation succeeds (SPEC section 10).
    let fixture = crate::common::fixture("stepfunctions-task-token.json");
    let (status, body) = watch.invoke_raw(fixture).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("fresh")),
        "{body}"
    );
    let (status, body) = watch.invoke_raw(json!({"credentialType": "train"})).await;
    assert_eq!(
        (status, body["errorType"].as_str()),
        (500, Some("InvalidRequest")),
        "{body}"
    );
    let (_, body) = watch
        .invoke_raw(json!({"credential_type": "train", "force": true, "include_key": true}))
        .await;
    assert_eq!(body["errorType"], "InvalidRequest");

    // A rotation, step by step, from the rotation fixtures pointed at a
    // live secret and the version moto staged for it.
    let secret = &config.train_secret_id;
    let token = h.start_rotation(secret).await;
    for file in [
        "rotation-create-secret.json",
        "rotation-set-secret.json",
        "rotation-test-secret.json",
        "rotation-finish-secret.json",
    ] {
        let mut event = crate::common::fixture(file);
        event["SecretId"] = json!(secret);
        event["ClientRequestToken"] = json!(token);
        let path = std::env::temp_dir().join(format!("p1-{}-{file}", h.id));
        std::fs::write(&path, event.to_string()).unwrap();
        let result = watch.invoke_path(path.to_str().unwrap());
        let _ = std::fs::remove_file(&path);
        assert_eq!(result, Value::Null, "{file}");
    }
    assert_eq!(h.record(secret, "AWSCURRENT").await.0, token);

    let logs = watch.stop();
    // Every line the function logs inside an invocation is JSON and carries
    // the request id of the runtime's invoke span.
    let ours = function_log_lines(&logs);
    assert!(
        ours.len() >= 10,
        "too few JSON log lines from the function:\n{logs}"
    );
    for line in &ours {
        assert!(
            line["span"]["requestId"].is_string(),
            "a line without requestId: {line}"
        );
    }
    assert!(
        logs.contains("issued and stored a new key"),
        "the function's own logs were captured"
    );
    assert_eq!(
        h.calls(&sk).await.len(),
        6,
        "train, retrain 42, retrain 1234, deploy, retrain 7, rotation"
    );
    for line in logs.lines() {
        assert!(
            !line.contains("example-rotation-token"),
            "a rotation token in the runtime's output: {line}"
        );
        assert!(
            !line.contains("SENTINELSK"),
            "secret key in the runtime's output: {line}"
        );
        assert!(
            !line.contains("p1k_"),
            "an API key in the runtime's output: {line}"
        );
        assert!(
            !line.contains("exampleTaskToken"),
            "a task token in the runtime's output: {line}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_configuration_fails_init_naming_the_variable() {
    // A host whose trust store yields no certificates: the init error must
    // still reach the Runtime API (it is plain HTTP; no TLS set-up on the way).
    let empty = std::env::temp_dir().join(format!("p1-no-certs-{}", crate::common::unique()));
    std::fs::create_dir_all(&empty).unwrap();
    let watch = Watch::start(
        "init",
        &[
            ("P1_MAX_ATTEMPTS", "lots"),
            ("SSL_CERT_DIR", empty.to_str().unwrap()),
            ("SSL_CERT_FILE", empty.join("none.pem").to_str().unwrap()),
        ],
        &["P1_SECRET_KEY_SECRET_ID"],
    );
    let (_, body) = watch.invoke_raw(json!({"credential_type": "train"})).await;
    assert_eq!(body["errorType"], "ConfigError", "{body}");
    assert!(
        body["errorMessage"]
            .as_str()
            .unwrap()
            .contains("P1_SECRET_KEY_SECRET_ID"),
        "{body}"
    );
    watch.stop();
    let _ = std::fs::remove_dir_all(&empty);
}

#[tokio::test(flavor = "multi_thread")]
async fn warning_lines_carry_the_request_id_at_warn_level() {
    let h = Harness::new().await;
    let config = h.config(&h.secret_key(""), &[]).await;
    let watch = Watch::start(
        "warn",
        &[
            ("P1_SECRET_KEY_SECRET_ID", &config.secret_key_secret_id),
            ("AWS_LAMBDA_LOG_LEVEL", "WARN"),
        ],
        &[],
    );
    let (_, body) = watch
        .invoke_raw(json!({"credential_type": "retrain", "model_id": "a/b"}))
        .await;
    assert_eq!(body["errorType"], "InvalidRequest");
    let logs = watch.stop();
    let ours = function_log_lines(&logs);
    assert!(!ours.is_empty(), "the failure is logged:\n{logs}");
    for line in &ours {
        assert_eq!(line["level"], "WARN", "{line}");
        assert!(
            line["span"]["requestId"].is_string(),
            "a line without requestId: {line}"
        );
    }
}

/// The retrain runner through `cargo lambda watch` and `cargo lambda invoke
/// p1-retrain`: its fixtures (the S3 event and `start`) against moto's S3
/// and the stand-in, then the other actions on the job it created.
#[tokio::test(flavor = "multi_thread")]
async fn the_retrain_runner_through_cargo_lambda() {
    let h = Harness::new().await;
    let sk = format!("SENTINELSK-rt-{}", h.id);
    let config = h.config(&sk, &[]).await;
    // The fixtures' bucket and data, shared by every run against this moto.
    let _ = h.s3.create_bucket().bucket("p1-retrain-data").send().await;
    h.put_object(
        "p1-retrain-data",
        "retrain/42/new-data.csv",
        b"x,y\n1,2\n".to_vec(),
    )
    .await;
    h.control("retrain", json!({"model_id": "42", "running_polls": 0}))
        .await;
    let watch = Watch::start_function(
        "p1-retrain",
        "retrain",
        &[
            ("P1_SECRET_KEY_SECRET_ID", &config.secret_key_secret_id),
            ("P1_RETRAIN_SECRET_PREFIX", &config.retrain_secret_prefix),
            ("P1_API_BASE_URL", &h.standin),
        ],
        &[],
    );
    let started = watch.invoke("retrain-start.json");
    assert_eq!(
        (
            started["action"].as_str(),
            started["model_id"].as_str(),
            started["bytes"].as_u64()
        ),
        (Some("start"), Some("42"), Some(8)),
        "{started}"
    );
    let from_event = watch.invoke("s3-object-created.json");
    assert_eq!(from_event["action"], "start", "{from_event}");
    let job = from_event["retrain_job_id"].as_str().unwrap();
    let request = |action: &str| json!({"action": action, "model_id": "42", "retrain_job_id": job});
    let (_, status) = watch.invoke_raw(request("status")).await;
    assert_eq!(status["state"], "finished", "{status}");
    let mut save = request("save_results");
    save["bucket"] = json!("p1-retrain-data");
    save["key"] = json!(format!("retrain-results/42/{job}/results"));
    let (_, saved) = watch.invoke_raw(save).await;
    assert_eq!(saved["bytes"], 2048, "{saved}");
    let (_, switched) = watch.invoke_raw(request("switch_model")).await;
    assert_eq!(switched["switched"], true, "{switched}");
    // The action fixtures name a job that does not exist here.
    let (status, body) = watch
        .invoke_raw(crate::common::fixture("retrain-status.json"))
        .await;
    assert_eq!(
        (status, body["errorType"].as_str()),
        (500, Some("PredictionOne.RetrainJobNotFound")),
        "{body}"
    );
    let (_, body) = watch
        .invoke_raw(
            json!({"action": "start", "bucket": "p1-retrain-data", "key": "retrain/42/x.txt"}),
        )
        .await;
    assert_eq!(body["errorType"], "DataUnavailable", "{body}");

    let logs = watch.stop();
    let ours = function_log_lines(&logs);
    assert!(
        ours.len() >= 5,
        "too few JSON log lines from the runner:\n{logs}"
    );
    assert!(!logs.contains("SENTINELSK"), "the secret key in the logs");
    for marker in ["/_upload/", "/_download/", "X-Amz-Signature"] {
        assert!(
            !logs.contains(marker),
            "a pre-signed URL in the logs: {marker}"
        );
    }
}

/// The retrain runner's init fails on a bad configuration the same way:
/// `ConfigError` naming the variable, as the invocation's answer.
#[tokio::test(flavor = "multi_thread")]
async fn the_retrain_runner_fails_init_naming_the_variable() {
    let watch = Watch::start_function(
        "p1-retrain",
        "retrain-init",
        &[
            ("P1_SECRET_KEY_SECRET_ID", "p1/any"),
            ("P1_RETRAIN_DATA_PREFIX", "retrain"),
        ],
        &[],
    );
    let (_, body) = watch
        .invoke_raw(crate::common::fixture("retrain-status.json"))
        .await;
    assert_eq!(body["errorType"], "ConfigError", "{body}");
    assert!(
        body["errorMessage"]
            .as_str()
            .is_some_and(|m| m.starts_with("P1_RETRAIN_DATA_PREFIX")),
        "{body}"
    );
    watch.stop();
}

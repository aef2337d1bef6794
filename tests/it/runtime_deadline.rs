//! The deadline through a real Lambda runtime (SPEC section 10): the
//! function's own binary runs under AWS's Runtime Interface Emulator
//! (`.venv/bin/aws-lambda-rie`, which `scripts/setup.sh` takes from the
//! aws-sam-cli wheel) with a short function timeout, against moto and the
//! vendor stand-in.
//!
//! The emulator runs the binary as its bootstrap, without a container. For
//! each invoke it hands the function `Lambda-Runtime-Deadline-Ms` = the time
//! the invoke arrived + `AWS_LAMBDA_FUNCTION_TIMEOUT` (the first invoke's
//! init counts against it too), and at that deadline it does what Lambda
//! does: it kills the function and answers, in place of the function's
//! answer, `Task timed out after N.00 seconds`. A function error comes back
//! as the `{"errorType", "errorMessage"}` body the function posted, a result
//! as the result; the emulator answers HTTP 200 in all three cases.
//! (`cargo lambda watch` cannot stand in here: it has no function timeout,
//! and it hands every invocation the fixed deadline 600000 ms after the
//! epoch, 1970-01-01T00:10:00Z.)
//!
//! Each test asserts that the answer is the contract's, and that it came
//! before the function's timeout. Nothing more about timing.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Harness, fixture};
use serde_json::{Value, json};

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// The functions under test: the debug binaries cargo built for this test run.
const FUNCTION: &str = env!("CARGO_BIN_EXE_p1-key-broker");
pub const RETRAIN_FUNCTION: &str = env!("CARGO_BIN_EXE_p1-retrain");
/// However a test ends, the emulator and the function are stopped after
/// this long (by coreutils `timeout`), even if the test process was killed
/// before its guard could run.
const LIFETIME_SECS: u64 = 120;

/// The function's timeout for these tests, and its margin (section 10).
const FUNCTION_TIMEOUT: Duration = Duration::from_secs(3);
const MARGIN_MS: &str = "1000";
/// Longer than the function's timeout: a vendor call this slow can only end
/// in time by the deadline, never by itself.
const SLOW_VENDOR_MS: u64 = 5000;

fn free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

/// The emulator: `.venv/bin/aws-lambda-rie` in this clone, or the one on
/// PATH.
fn emulator() -> PathBuf {
    let local = PathBuf::from(MANIFEST_DIR).join(".venv/bin/aws-lambda-rie");
    if local.exists() {
        return local;
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join("aws-lambda-rie"))
                .find(|p| p.exists())
        })
        .expect("aws-lambda-rie not found: run scripts/setup.sh, which installs it into .venv/bin")
}

/// The function's binary under the emulator. Dropping it stops both, also
/// when a test panics.
pub struct Rie {
    child: Child,
    port: u16,
    timeout: Duration,
    log: PathBuf,
}

/// What an invoke through the emulator answered.
#[derive(Debug)]
pub enum Answer {
    /// The function's result.
    Result(Value),
    /// The function's error: (errorType, errorMessage).
    Error(String, String),
    /// The emulator's own answer when the function ran out of time: the
    /// function was killed.
    TimedOut(String),
}

pub struct Invocation {
    pub answer: Answer,
    /// From sending the invoke to having the whole answer.
    pub elapsed: Duration,
}

impl Rie {
    /// Starts the emulator with the function as its bootstrap; `env` is the
    /// function's environment on top of this process's (which points the
    /// SDK at moto).
    fn start(name: &str, timeout: Duration, env: &[(&str, &str)]) -> Rie {
        Self::start_binary(FUNCTION, name, timeout, env)
    }

    pub fn start_binary(binary: &str, name: &str, timeout: Duration, env: &[(&str, &str)]) -> Rie {
        let (port, runtime_api_port) = free_ports();
        // Outside the crate, so the log never looks like a source change.
        let log = std::env::temp_dir().join(format!("p1-key-broker-rie-{name}-{port}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new("timeout");
        cmd.arg("--kill-after=5")
            .arg(LIFETIME_SECS.to_string())
            .arg(emulator())
            .args(["--log-level", "error"])
            .arg("--runtime-interface-emulator-address")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--runtime-api-address")
            .arg(format!("127.0.0.1:{runtime_api_port}"))
            .arg(binary)
            .current_dir(std::env::temp_dir())
            .env("AWS_LAMBDA_FUNCTION_TIMEOUT", timeout.as_secs().to_string())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        for (k, v) in env {
            cmd.env(k, v);
        }
        // `timeout` and the emulator in a process group of their own, so
        // that the guard can signal both. (The emulator puts the function in
        // yet another group, and kills it itself when it is terminated.)
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().expect("coreutils `timeout` runs the emulator");
        let started = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "aws-lambda-rie exited ({status}): {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "aws-lambda-rie did not listen on 127.0.0.1:{port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Rie {
            child,
            port,
            timeout,
            log,
        }
    }

    /// One invoke, the way `curl -d` would send it to the emulator.
    pub async fn invoke(&self, payload: &Value) -> Invocation {
        let client = reqwest::Client::builder()
            .timeout(self.timeout + Duration::from_secs(30))
            .build()
            .unwrap();
        let started = Instant::now();
        let response = client
            .post(format!(
                "http://127.0.0.1:{}/2015-03-31/functions/function/invocations",
                self.port
            ))
            .json(payload)
            .send()
            .await
            .unwrap_or_else(|e| panic!("invoke: {e}\n{}", self.logs()));
        let status = response.status();
        let body = response.text().await.unwrap();
        let elapsed = started.elapsed();
        assert!(status.is_success(), "{status}: {body}\n{}", self.logs());
        let answer = if body.starts_with("Task timed out after") {
            Answer::TimedOut(body)
        } else {
            let value: Value = serde_json::from_str(&body)
                .unwrap_or_else(|e| panic!("{e}: {body}\n{}", self.logs()));
            match value["errorType"].as_str() {
                Some(error_type) => Answer::Error(
                    error_type.to_string(),
                    value["errorMessage"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                ),
                None => Answer::Result(value),
            }
        };
        Invocation { answer, elapsed }
    }

    /// The emulator's and the function's output so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Rie {
    fn drop(&mut self) {
        // SIGTERM first: `timeout` passes it on, and the emulator then kills
        // the function (in its own process group) before it exits.
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                let _ = std::fs::remove_file(&self.log);
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The function's environment for a test: its own secret key, targets and
/// the stand-in as vendor (as `Harness::config` makes them), a margin of
/// `MARGIN_MS`, and a per-attempt HTTP timeout longer than the function's
/// timeout.
async fn function_env(h: &Harness, secret_key: &str) -> Vec<(String, String)> {
    let config = h.config(secret_key, &[]).await;
    vec![
        (
            "P1_SECRET_KEY_SECRET_ID".into(),
            config.secret_key_secret_id,
        ),
        ("P1_TRAIN_SECRET_ID".into(), config.train_secret_id),
        ("P1_DEPLOY_SECRET_ID".into(), config.deploy_secret_id),
        (
            "P1_RETRAIN_SECRET_PREFIX".into(),
            config.retrain_secret_prefix,
        ),
        ("P1_API_BASE_URL".into(), h.standin.clone()),
        ("P1_DEADLINE_MARGIN_MS".into(), MARGIN_MS.into()),
        ("P1_HTTP_TIMEOUT_MS".into(), "10000".into()),
    ]
}

fn start(name: &str, env: &[(String, String)]) -> Rie {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Rie::start(name, FUNCTION_TIMEOUT, &env)
}

/// `n` vendor responses that each take `SLOW_VENDOR_MS`, so that every
/// attempt and retry the function could make is slow.
fn slow_vendor(n: usize) -> Value {
    let slow = json!({
        "delay_ms": SLOW_VENDOR_MS,
        "json": {"api_key": "p1k_late", "end_date": "2099-01-01 00:00:00"},
    });
    Value::Array(vec![slow; n])
}

/// Whether a secret exists at all.
async fn exists(h: &Harness, secret_id: &str) -> bool {
    h.sm.describe_secret()
        .secret_id(secret_id)
        .send()
        .await
        .is_ok()
}

/// Waits until `SLOW_VENDOR_MS` after `since`, when every slow vendor
/// response has been sent: a key the function could still store would be
/// stored by then.
async fn after_the_slow_vendor(since: Instant) {
    let until = since + Duration::from_millis(SLOW_VENDOR_MS + 500);
    tokio::time::sleep_until(until.into()).await;
}

/// The harness itself: an invoke through the emulator reaches the function
/// and comes back with its result object, well within the timeout.
#[tokio::test(flavor = "multi_thread")]
async fn emulator_returns_the_functions_result() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let env = function_env(&h, &sk).await;
    let rie = start("fast", &env);

    let call = rie.invoke(&fixture("direct-deploy.json")).await;
    let Answer::Result(result) = &call.answer else {
        panic!("{:?}\n{}", call.answer, rie.logs());
    };
    assert_eq!(
        (
            result["status"].as_str(),
            result["credential_type"].as_str()
        ),
        (Some("issued"), Some("deploy")),
        "{result}"
    );
    assert!(call.elapsed < FUNCTION_TIMEOUT, "{:?}", call.elapsed);
    let (version, record) = h.record(&h.name("deploy"), "AWSCURRENT").await;
    assert_eq!(result["version_id"].as_str(), Some(version.as_str()));
    assert_eq!(record["credential_type"], "deploy");

    // An error comes back as the function's errorType.
    let call = rie.invoke(&json!({"credentialType": "train"})).await;
    assert!(
        matches!(&call.answer, Answer::Error(t, _) if t == "InvalidRequest"),
        "{:?}",
        call.answer
    );
    assert_eq!(h.calls(&sk).await.len(), 1);
}

/// A direct request whose vendor call would outlast the function: the
/// function answers `PredictionOne.Timeout` before its timeout, as its own
/// error and not as the emulator's timeout, and stores nothing.
#[tokio::test(flavor = "multi_thread")]
async fn slow_vendor_direct_request_answers_timeout_before_the_deadline() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let env = function_env(&h, &sk).await;
    h.script(&sk, slow_vendor(3)).await;
    let rie = start("direct", &env);

    let started = Instant::now();
    let call = rie.invoke(&fixture("direct-train.json")).await;
    let logs = rie.logs();
    match &call.answer {
        Answer::Error(error_type, message) => {
            assert_eq!(error_type, "PredictionOne.Timeout", "{message}\n{logs}")
        }
        Answer::TimedOut(body) => panic!(
            "expected the function's PredictionOne.Timeout before its {FUNCTION_TIMEOUT:?} timeout; \
             the emulator answered for it after {:?}: {body}\n{logs}",
            call.elapsed
        ),
        Answer::Result(result) => {
            panic!("expected PredictionOne.Timeout, got a result: {result}\n{logs}")
        }
    }
    assert!(
        call.elapsed < FUNCTION_TIMEOUT,
        "answered after {:?}",
        call.elapsed
    );
    assert!(
        !h.calls(&sk).await.is_empty(),
        "the vendor was called: the time went there"
    );

    after_the_slow_vendor(started).await;
    assert!(
        !exists(&h, &h.name("train")).await,
        "nothing is stored in the target once the function has answered"
    );
}

/// An SQS batch whose vendor calls would outlast the function: the batch
/// response comes back before the timeout and names exactly the records that
/// got no key; a record whose target is fresh needs no vendor call and
/// succeeds; nothing is stored for the others.
#[tokio::test(flavor = "multi_thread")]
async fn slow_vendor_sqs_batch_lists_records_without_a_key_before_the_deadline() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let env = function_env(&h, &sk).await;
    let rie = start("sqs", &env);

    // A fresh deploy key first, with the vendor still fast (and the
    // function warm).
    let call = rie.invoke(&fixture("direct-deploy.json")).await;
    let Answer::Result(result) = &call.answer else {
        panic!("{:?}\n{}", call.answer, rie.logs());
    };
    assert_eq!(result["status"], "issued", "{result}");
    let (deploy_version, _) = h.record(&h.name("deploy"), "AWSCURRENT").await;

    // Then every vendor call is slow.
    h.script(&sk, slow_vendor(10)).await;
    let template = fixture("sqs-batch.json")["Records"][0].clone();
    let record = |id: &str, body: &str| {
        let mut r = template.clone();
        r["messageId"] = json!(id);
        r["body"] = json!(body);
        r
    };
    let batch = json!({"Records": [
        record("r7-a", r#"{"credential_type": "retrain", "model_id": "7"}"#),
        record("r7-b", r#"{"credential_type": "retrain", "model_id": "7"}"#),
        record("r8", r#"{"credential_type": "retrain", "model_id": "8"}"#),
        record("deploy", r#"{"credential_type": "deploy"}"#),
        record("garbage", "retrain model 9 please"),
    ]});
    let started = Instant::now();
    let call = rie.invoke(&batch).await;
    let logs = rie.logs();
    let Answer::Result(result) = &call.answer else {
        panic!(
            "expected a batch response before the {FUNCTION_TIMEOUT:?} timeout, got {:?} after {:?}\n{logs}",
            call.answer, call.elapsed
        );
    };
    assert!(
        call.elapsed < FUNCTION_TIMEOUT,
        "answered after {:?}",
        call.elapsed
    );
    let mut failed: Vec<&str> = result["batchItemFailures"]
        .as_array()
        .unwrap_or_else(|| panic!("{result}"))
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap())
        .collect();
    failed.sort_unstable();
    assert_eq!(
        failed,
        ["garbage", "r7-a", "r7-b", "r8"],
        "{result}\n{logs}"
    );

    after_the_slow_vendor(started).await;
    for model in ["7", "8"] {
        assert!(
            !exists(&h, &h.name(&format!("retrain/{model}"))).await,
            "nothing is stored for model {model}"
        );
    }
    assert_eq!(
        h.record(&h.name("deploy"), "AWSCURRENT").await.0,
        deploy_version,
        "the fresh deploy key stays"
    );
}

/// The retrain runner under the emulator, its vendor (`what`) slower than
/// the function's timeout: it answers `error_type` before the timeout, as
/// its own error.
async fn retrain_runner_answers_before_the_deadline(
    endpoint: &str,
    request: impl Fn(&str, &str, &str) -> Value,
    error_type: &str,
) {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let env = function_env(&h, &sk).await;
    let bucket = h.create_bucket().await;
    let model = h.model("");
    h.control("retrain", json!({"model_id": model, "running_polls": 0}))
        .await;
    for name in ["d.csv", "d2.csv"] {
        h.put_object(
            &bucket,
            &format!("retrain/{model}/{name}"),
            vec![b'1'; 100_000],
        )
        .await;
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let rie = Rie::start_binary(RETRAIN_FUNCTION, "retrain", FUNCTION_TIMEOUT, &env);
    // A job to ask about, made before the vendor turns slow.
    let call = rie
        .invoke(
            &json!({"action": "start", "bucket": bucket, "key": format!("retrain/{model}/d.csv")}),
        )
        .await;
    let Answer::Result(started) = &call.answer else {
        panic!("{:?}\n{}", call.answer, rie.logs());
    };
    let job = started["retrain_job_id"].as_str().unwrap().to_string();
    let slow = json!({"delay_ms": SLOW_VENDOR_MS, "status": 200, "json": {"status": "running"}});
    h.control(
        "script",
        json!({"model_id": model, "endpoint": endpoint, "responses": [slow, slow, slow]}),
    )
    .await;
    let call = rie.invoke(&request(&bucket, &model, &job)).await;
    match &call.answer {
        Answer::Error(t, m) => assert_eq!(t, error_type, "{m}\n{}", rie.logs()),
        other => panic!(
            "expected {error_type} before the {FUNCTION_TIMEOUT:?} timeout, after {:?}: {other:?}\n{}",
            call.elapsed,
            rie.logs()
        ),
    }
    assert!(call.elapsed < FUNCTION_TIMEOUT, "{:?}", call.elapsed);
}

#[tokio::test(flavor = "multi_thread")]
async fn retrain_runner_slow_upload_fails_before_the_deadline() {
    retrain_runner_answers_before_the_deadline(
        "upload",
        // Another object: d.csv's start is recorded, and a start of it
        // again answers its job without uploading.
        |bucket, model, _| {
            json!({"action": "start", "bucket": bucket, "key": format!("retrain/{model}/d2.csv")})
        },
        "PredictionOne.UploadFailed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retrain_runner_slow_status_answers_timeout_before_the_deadline() {
    retrain_runner_answers_before_the_deadline(
        "status",
        |_, model, job| json!({"action": "status", "model_id": model, "retrain_job_id": job}),
        "PredictionOne.Timeout",
    )
    .await;
}

/// One fault of the proxy in front of moto on a write of the train target,
/// with the key arriving just before the work point of a 3-second function
/// with the default 2-second margin (SPEC section 10): the key is stored
/// and the answer is `issued`, before the deadline, whatever the fault
/// costs the write's first attempts. `exists`: the target is there (a
/// PutSecretValue), else it is created (CreateSecret).
async fn a_write_fault_in_the_margin_keeps_the_key(
    operation: &str,
    fault: Value,
    exists: bool,
) -> (Value, Value) {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let mut env = function_env(&h, &sk).await;
    env.retain(|(k, _)| k != "P1_DEADLINE_MARGIN_MS");
    env.push(("AWS_ENDPOINT_URL".into(), crate::faults::proxy_url()));
    let target = h.name("train");
    let rie = start(&format!("write-{operation}"), &env);
    // Warm: the first invoke's init counts against its deadline.
    let warm = if exists {
        json!({"credential_type": "train"})
    } else {
        json!({"credential_type": "deploy"})
    };
    let call = rie.invoke(&warm).await;
    assert!(
        matches!(&call.answer, Answer::Result(r) if r["status"] == "issued"),
        "{:?}\n{}",
        call.answer,
        rie.logs()
    );
    // The vendor answers 700 ms into the 1-second work window.
    h.script(
        &sk,
        json!([{"delay_ms": 700, "json": {"api_key": "p1k_margin", "end_date": "2099-01-01 00:00:00"}}]),
    )
    .await;
    let mut rule = json!({"operation": operation, "match": target});
    for (k, v) in fault.as_object().unwrap() {
        rule[k] = v.clone();
    }
    crate::faults::add_rule(&h, rule).await;
    let call = rie
        .invoke(&json!({"credential_type": "train", "force": true}))
        .await;
    let logs = rie.logs();
    let Answer::Result(result) = call.answer else {
        panic!("{operation} {fault}: {:?}\n{logs}", call.answer);
    };
    assert!(call.elapsed < FUNCTION_TIMEOUT, "{:?}", call.elapsed);
    let calls = crate::faults::calls(&h, &target).await;
    let (version, record) = h.record(&target, "AWSCURRENT").await;
    assert_eq!(record["api_key"], "p1k_margin", "{operation} {fault}");
    assert_eq!(
        result["version_id"].as_str(),
        Some(version.as_str()),
        "{result}"
    );
    (result, calls)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_put_in_the_margin_costs_one_attempt() {
    let (result, calls) = a_write_fault_in_the_margin_keeps_the_key(
        "PutSecretValue",
        json!({"fault": "hang", "times": 1}),
        true,
    )
    .await;
    assert_eq!(result["status"], "issued", "{result}");
    assert_eq!(calls["faulted"]["PutSecretValue"], 1, "{calls}");
    // The second attempt came on a new connection.
    assert!(calls["operations"]["PutSecretValue"] == 2, "{calls}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_create_in_the_margin_costs_one_attempt() {
    let (result, calls) = a_write_fault_in_the_margin_keeps_the_key(
        "CreateSecret",
        json!({"fault": "hang", "times": 1}),
        false,
    )
    .await;
    assert_eq!(result["status"], "issued", "{result}");
    assert_eq!(calls["operations"]["CreateSecret"], 2, "{calls}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_throttled_puts_in_the_margin_still_store_the_key() {
    let (result, calls) = a_write_fault_in_the_margin_keeps_the_key(
        "PutSecretValue",
        json!({"fault": "throttle", "times": 2}),
        true,
    )
    .await;
    assert_eq!(result["status"], "issued", "{result}");
    assert_eq!(calls["operations"]["PutSecretValue"], 3, "{calls}");
}

/// Every answer to the write is lost although moto carries it out: the
/// function reads the target back and answers `issued` (it never says
/// "discarded" while AWSCURRENT holds the key).
#[tokio::test(flavor = "multi_thread")]
async fn a_write_whose_answers_are_lost_is_read_back_as_issued() {
    let (result, calls) = a_write_fault_in_the_margin_keeps_the_key(
        "PutSecretValue",
        json!({"fault": "hold_answer", "times": -1}),
        true,
    )
    .await;
    assert_eq!(result["status"], "issued", "{result}");
    // Every attempt was the same version (one ClientRequestToken).
    assert!(
        calls["faulted"]["PutSecretValue"].as_u64().unwrap() >= 2,
        "{calls}"
    );
    // One read-back, of the version the token names (GetSecretValue: its
    // value tells ours from a concurrent renewal's, SPEC section 12); the
    // other calls are the warm-up's and the request's own read.
    assert_eq!(calls["operations"]["DescribeSecret"], 1, "{calls}");
    assert_eq!(calls["operations"]["GetSecretValue"], 3, "{calls}");
}

/// A TLS failure names its cause (issue 15): a vendor whose certificate no
/// trusted root signed is "unknown issuer", a host with no trusted roots at
/// all says so, for the vendor client and the AWS SDK alike, instead of a
/// bare "connection failed".
#[tokio::test(flavor = "multi_thread")]
async fn a_tls_failure_names_its_cause() {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let system = [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("a system CA bundle");
    let empty = std::env::temp_dir().join(format!("p1-no-roots-{}.pem", h.id));
    std::fs::write(&empty, "").unwrap();
    let tls_vendor = std::env::var("P1_STANDIN_TLS_URL").unwrap();
    let mut base = function_env(&h, &sk).await;
    base.retain(|(k, _)| k != "P1_API_BASE_URL");
    base.push(("P1_API_BASE_URL".into(), tls_vendor.clone()));
    base.push(("SSL_CERT_DIR".into(), String::new()));
    let cases = [
        (
            system.to_string(),
            None,
            "PredictionOne.Unavailable",
            "unknown issuer",
        ),
        (
            empty.display().to_string(),
            None,
            "PredictionOne.Unavailable",
            "trusts no root certificate",
        ),
        (
            system.to_string(),
            Some(tls_vendor.clone()),
            "StoreFailed",
            "connection failed: TLS failed: the server's certificate is not issued by a root this host trusts (unknown issuer",
        ),
    ];
    for (roots, secrets_endpoint, error_type, says) in cases {
        let mut env = base.clone();
        env.push(("SSL_CERT_FILE".into(), roots.clone()));
        if let Some(endpoint) = &secrets_endpoint {
            env.push(("AWS_ENDPOINT_URL_SECRETS_MANAGER".into(), endpoint.clone()));
        }
        let rie = start("tls-cause", &env);
        let call = rie.invoke(&json!({"credential_type": "train"})).await;
        match &call.answer {
            Answer::Error(t, m) => {
                assert_eq!(t, error_type, "{roots} {secrets_endpoint:?}: {m}");
                assert!(m.contains(says), "{roots} {secrets_endpoint:?}: {m}");
            }
            other => panic!("{other:?}\n{}", rie.logs()),
        }
    }
    let _ = std::fs::remove_file(&empty);
    assert!(h.calls(&sk).await.is_empty(), "no key was issued");
}

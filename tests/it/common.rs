//! Shared set-up for the integration tests: the real AWS SDK against the
//! moto server, and the vendor stand-in, both started by `scripts/test.sh`
//! (which exports `AWS_ENDPOINT_URL` and `P1_STANDIN_URL`). Every test makes
//! its own uniquely named secrets and secret key, so tests run in parallel.
#![allow(dead_code)]

use std::collections::HashMap;

use std::time::Duration;

use p1_key_broker::deadline::{Deadline, MAX_INVOCATION};
use p1_key_broker::{App, Config, RetrainApp};
use serde_json::{Value, json};

pub struct Harness {
    pub sm: aws_sdk_secretsmanager::Client,
    pub sfn: aws_sdk_sfn::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub events: aws_sdk_eventbridge::Client,
    /// Path-style, as the runner addresses moto.
    pub s3: aws_sdk_s3::Client,
    pub standin: String,
    pub http: reqwest::Client,
    /// Unique per test: prefixes every name it creates.
    pub id: String,
}

pub fn unique() -> String {
    format!("{:016x}", fastrand::u64(..))
}

impl Harness {
    pub async fn new() -> Harness {
        let standin = std::env::var("P1_STANDIN_URL").unwrap_or_else(|_| {
            panic!("P1_STANDIN_URL and AWS_ENDPOINT_URL are not set: run the integration tests with scripts/test.sh, which starts moto and the vendor stand-in")
        });
        assert!(
            std::env::var("AWS_ENDPOINT_URL").is_ok(),
            "AWS_ENDPOINT_URL is not set: run scripts/test.sh"
        );
        let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Harness {
            sm: aws_sdk_secretsmanager::Client::new(&aws),
            sfn: aws_sdk_sfn::Client::new(&aws),
            sqs: aws_sdk_sqs::Client::new(&aws),
            events: aws_sdk_eventbridge::Client::new(&aws),
            s3: aws_sdk_s3::Client::from_conf(
                aws_sdk_s3::config::Builder::from(&aws)
                    .force_path_style(true)
                    .build(),
            ),
            standin,
            http: reqwest::Client::new(),
            id: unique(),
        }
    }

    /// The same, with the TLS stand-in (`P1_STANDIN_TLS_URL`, under the
    /// test CA that `scripts/services.sh` made) as the vendor.
    pub async fn over_tls() -> Harness {
        let mut h = Harness::new().await;
        h.standin =
            std::env::var("P1_STANDIN_TLS_URL").expect("P1_STANDIN_TLS_URL: run scripts/test.sh");
        let ca = std::fs::read(std::env::var("P1_TEST_CA").expect("P1_TEST_CA")).unwrap();
        h.http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap();
        h
    }

    /// A name unique to this test.
    pub fn name(&self, what: &str) -> String {
        format!("t-{}/{what}", self.id)
    }

    /// A secret key the stand-in accepts (or refuses, with its prefixes).
    pub fn secret_key(&self, prefix: &str) -> String {
        format!("{prefix}sk-{}-{}", self.id, unique())
    }

    pub async fn create_secret(&self, name: &str, value: &str) -> String {
        self.sm
            .create_secret()
            .name(name)
            .secret_string(value)
            .send()
            .await
            .expect("create_secret")
            .arn()
            .unwrap()
            .to_string()
    }

    /// An SQS queue unique to this test; returns its URL.
    pub async fn create_queue(&self, name: &str) -> String {
        self.sqs
            .create_queue()
            .queue_name(format!("{name}-{}", self.id))
            .send()
            .await
            .expect("create_queue")
            .queue_url()
            .unwrap()
            .to_string()
    }

    pub async fn set_secret(&self, name: &str, value: &str) {
        self.sm
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .send()
            .await
            .expect("put_secret_value");
    }

    /// The environment of a test function: its own secret-key secret holding
    /// `secret_key`, its own targets, the stand-in as vendor; `extra` on top.
    pub async fn config(&self, secret_key: &str, extra: &[(&str, &str)]) -> Config {
        let secret_id = self.name("secret-key");
        if self
            .sm
            .describe_secret()
            .secret_id(&secret_id)
            .send()
            .await
            .is_err()
        {
            self.create_secret(&secret_id, secret_key).await;
        } else {
            self.set_secret(&secret_id, secret_key).await;
        }
        let mut vars: HashMap<String, String> = HashMap::from([
            ("P1_SECRET_KEY_SECRET_ID".into(), secret_id),
            ("P1_API_BASE_URL".into(), self.standin.clone()),
            ("P1_TRAIN_SECRET_ID".into(), self.name("train")),
            ("P1_DEPLOY_SECRET_ID".into(), self.name("deploy")),
            ("P1_RETRAIN_SECRET_PREFIX".into(), self.name("retrain/")),
            ("P1_HTTP_TIMEOUT_MS".into(), "2000".into()),
        ]);
        for (k, v) in extra {
            vars.insert(k.to_string(), v.to_string());
        }
        Config::from_lookup(|name| Ok(vars.get(name).cloned())).expect("test config")
    }

    pub async fn app(&self, secret_key: &str, extra: &[(&str, &str)]) -> App {
        App::from_config(self.config(secret_key, extra).await)
            .await
            .expect("app")
    }

    /// An app whose AWS calls go to `endpoint` (for example the fault
    /// proxy in front of moto) instead of `AWS_ENDPOINT_URL`.
    pub async fn app_via(&self, endpoint: &str, secret_key: &str, extra: &[(&str, &str)]) -> App {
        let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .endpoint_url(endpoint)
            .load()
            .await;
        App::with_aws(self.config(secret_key, extra).await, &aws).expect("app")
    }

    /// The retrain runner with this test's configuration.
    pub async fn runner(&self, secret_key: &str, extra: &[(&str, &str)]) -> RetrainApp {
        RetrainApp::from_config(self.config(secret_key, extra).await)
            .await
            .expect("runner")
    }

    /// A bucket unique to this test.
    pub async fn create_bucket(&self) -> String {
        let bucket = format!("p1-{}", self.id);
        self.s3
            .create_bucket()
            .bucket(&bucket)
            .send()
            .await
            .expect("create_bucket");
        bucket
    }

    pub async fn put_object(&self, bucket: &str, key: &str, body: Vec<u8>) {
        self.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(body.into())
            .send()
            .await
            .expect("put_object");
    }

    /// An object's bytes and content type.
    pub async fn get_object(&self, bucket: &str, key: &str) -> (Vec<u8>, Option<String>) {
        let out = self
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("get s3://{bucket}/{key}: {e:?}"));
        let content_type = out.content_type().map(str::to_string);
        (
            out.body.collect().await.unwrap().into_bytes().to_vec(),
            content_type,
        )
    }

    /// A model id unique to this test (the stand-in keeps jobs per model);
    /// `prefix` selects stand-in behaviours (`noconfig-`, `noclassifier-`).
    pub fn model(&self, prefix: &str) -> String {
        format!("{prefix}m{}", &self.id[..12])
    }

    /// POSTs a control call to the stand-in and returns its answer.
    pub async fn control(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}/_standin/{path}", self.standin))
            .json(&body)
            .send()
            .await
            .unwrap();
        let ok = r.status().is_success();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(ok, "stand-in refused {path}: {v}");
        v
    }

    /// A model's retrain jobs at the stand-in, oldest first.
    pub async fn jobs(&self, model: &str) -> Vec<Value> {
        let v = self.standin_get("jobs", model).await;
        v.as_array().cloned().unwrap_or_default()
    }

    /// The job of a model at the stand-in with this id.
    pub async fn job(&self, model: &str, retrain_job_id: &str) -> Value {
        self.jobs(model)
            .await
            .into_iter()
            .find(|j| j["retrain_job_id"] == retrain_job_id)
            .unwrap_or_else(|| panic!("no job {retrain_job_id} of model {model}"))
    }

    /// A GET of a stand-in control about one model.
    async fn standin_get(&self, path: &str, model: &str) -> Value {
        self.http
            .get(format!("{}/_standin/{path}", self.standin))
            .query(&[("model_id", model)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// A model's retraining calls at the stand-in: (endpoint, status code).
    pub async fn retrain_calls(&self, model: &str) -> Vec<(String, u64)> {
        let v = self.standin_get("calls", model).await;
        v["calls"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|c| {
                assert_eq!(
                    c["had_api_key"],
                    c["endpoint"] != "upload" && c["endpoint"] != "download",
                    "x-api-key only on API calls: {c}"
                );
                (
                    c["endpoint"].as_str().unwrap_or_default().to_string(),
                    c["status_code"].as_u64().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Queues scripted responses for a secret key at the stand-in.
    pub async fn script(&self, secret_key: &str, responses: Value) {
        let r = self
            .http
            .post(format!("{}/_standin/script", self.standin))
            .json(&json!({"secret_key": secret_key, "responses": responses}))
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "script refused: {}",
            r.text().await.unwrap()
        );
    }

    /// The vendor calls made with a secret key.
    pub async fn calls(&self, secret_key: &str) -> Vec<Value> {
        let v: Value = self
            .http
            .get(format!("{}/_standin/calls", self.standin))
            .query(&[("secret_key", secret_key)])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["calls"].as_array().cloned().unwrap_or_default()
    }

    /// The JSON record a target secret holds under `stage`.
    pub async fn record(&self, secret_id: &str, stage: &str) -> (String, Value) {
        let out = self
            .sm
            .get_secret_value()
            .secret_id(secret_id)
            .version_stage(stage)
            .send()
            .await
            .unwrap_or_else(|e| panic!("get {secret_id} {stage}: {e:?}"));
        let value = serde_json::from_str(out.secret_string().unwrap()).unwrap();
        (out.version_id().unwrap().to_string(), value)
    }

    /// Starts a rotation the way Secrets Manager does; returns the token.
    pub async fn start_rotation(&self, secret: &str) -> String {
        let before = self.stages(secret).await;
        // moto fails to invoke the (absent) Lambda after staging the version.
        let _ = self
            .sm
            .rotate_secret()
            .secret_id(secret)
            .rotation_lambda_arn("arn:aws:lambda:us-east-1:123456789012:function:p1-key-broker")
            .rotation_rules(
                aws_sdk_secretsmanager::types::RotationRulesType::builder()
                    .automatically_after_days(1)
                    .build(),
            )
            .send()
            .await;
        self.stages(secret)
            .await
            .into_iter()
            .find(|(v, s)| {
                s.contains(&"AWSPENDING".to_string())
                    && !before
                        .get(v)
                        .is_some_and(|b| b.contains(&"AWSPENDING".to_string()))
            })
            .map(|(v, _)| v)
            .expect("rotate_secret staged a pending version")
    }

    pub async fn stages(&self, secret_id: &str) -> HashMap<String, Vec<String>> {
        self.sm
            .describe_secret()
            .secret_id(secret_id)
            .send()
            .await
            .unwrap()
            .version_ids_to_stages()
            .cloned()
            .unwrap_or_default()
    }
}

/// Runs the handler with Lambda's longest deadline and returns (value or
/// error type, message).
pub async fn invoke(app: &App, payload: Value) -> Result<Value, (String, String)> {
    invoke_by(
        app,
        payload,
        Deadline::after(MAX_INVOCATION, Duration::from_secs(2)),
    )
    .await
}

/// Runs the handler with a given deadline.
pub async fn invoke_by(
    app: &App,
    payload: Value,
    deadline: Deadline,
) -> Result<Value, (String, String)> {
    p1_key_broker::handle(app, payload, &deadline)
        .await
        .map_err(|e| (e.error_type().to_string(), e.report()))
}

/// Runs the retrain runner's handler with Lambda's longest deadline.
pub async fn run(app: &RetrainApp, payload: Value) -> Result<Value, (String, String)> {
    let deadline = Deadline::after(MAX_INVOCATION, Duration::from_secs(2));
    // Boxed: the handler's future is large, and a debug build's test
    // thread has a small stack.
    Box::pin(p1_key_broker::retrain::handler::handle(
        app, payload, &deadline,
    ))
    .await
    .map_err(|e| (e.error_type().to_string(), e.report()))
}

/// SHA-256 as lowercase hex (the stand-in's form).
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Deterministic test data of `len` bytes, different per `seed`.
pub fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

/// Loads a fixture from `events/`.
/// Turns on a bucket's EventBridge notifications (S3 `Object Created`
/// events on the default bus).
pub async fn send_events_to_eventbridge(s3: &aws_sdk_s3::Client, bucket: &str) {
    s3.put_bucket_notification_configuration()
        .bucket(bucket)
        .notification_configuration(
            aws_sdk_s3::types::NotificationConfiguration::builder()
                .event_bridge_configuration(
                    aws_sdk_s3::types::EventBridgeConfiguration::builder().build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("EventBridge notifications on");
}

pub fn fixture(name: &str) -> Value {
    let path = format!("{}/events/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")))
        .unwrap()
}

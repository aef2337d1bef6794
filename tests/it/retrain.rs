//! The retrain runner's four actions (SPEC section 11) against moto's S3 and
//! Secrets Manager and the vendor stand-in's retraining API: data and
//! results byte for byte, the documented errors as errorTypes, a revoked
//! stored key, and requests refused before any call.

use serde_json::{Value, json};

use crate::common::{Harness, data, fixture, run, sha256_hex};

/// A runner with its own secret key, a bucket, and a model at the stand-in
/// that finishes after `running_polls` status calls.
struct Setup {
    h: Harness,
    sk: String,
    app: p1_key_broker::RetrainApp,
    bucket: String,
    model: String,
}

async fn setup(model_prefix: &str, settings: Value) -> Setup {
    setup_with(Harness::new().await, model_prefix, settings).await
}

async fn setup_with(h: Harness, model_prefix: &str, settings: Value) -> Setup {
    let sk = h.secret_key("");
    let app = h.runner(&sk, &[]).await;
    let bucket = h.create_bucket().await;
    let model = h.model(model_prefix);
    let mut settings = settings;
    settings["model_id"] = json!(model);
    h.control("retrain", settings).await;
    Setup {
        h,
        sk,
        app,
        bucket,
        model,
    }
}

impl Setup {
    fn data_key(&self, file: &str) -> String {
        format!("retrain/{}/{file}", self.model)
    }

    async fn start(&self, len: usize) -> (Vec<u8>, String) {
        let body = data(len, 7);
        let key = self.data_key("new.csv");
        self.h.put_object(&self.bucket, &key, body.clone()).await;
        let out = run(
            &self.app,
            json!({"action": "start", "bucket": self.bucket, "key": key}),
        )
        .await
        .expect("start");
        (body, out["retrain_job_id"].as_str().unwrap().to_string())
    }

    async fn action(&self, action: &str, job: &str) -> Result<Value, (String, String)> {
        run(
            &self.app,
            json!({"action": action, "model_id": self.model, "retrain_job_id": job}),
        )
        .await
    }

    async fn save(&self, job: &str) -> Result<Value, (String, String)> {
        run(
            &self.app,
            json!({"action": "save_results", "model_id": self.model, "retrain_job_id": job,
                   "bucket": self.bucket, "key": format!("retrain-results/{}/{job}/results", self.model)}),
        )
        .await
    }

    async fn job(&self) -> Value {
        let jobs = self.h.jobs(&self.model).await;
        assert_eq!(jobs.len(), 1, "{jobs:?}");
        jobs[0].clone()
    }
}

#[tokio::test]
async fn start_uploads_the_object_byte_for_byte_without_the_api_key() {
    let s = setup("", json!({})).await;
    let body = data(3 * 1024 * 1024 + 17, 1);
    let key = s.data_key("2026-11/new-data.csv");
    s.h.put_object(&s.bucket, &key, body.clone()).await;
    let out = run(
        &s.app,
        json!({"action": "start", "bucket": s.bucket, "key": key}),
    )
    .await
    .unwrap();
    assert_eq!(out["action"], "start");
    assert_eq!(out["model_id"], s.model.as_str());
    assert_eq!(out["bytes"], body.len());
    assert_eq!(out.as_object().unwrap().len(), 4, "{out}");
    let job = s.job().await;
    assert_eq!(out["retrain_job_id"], job["retrain_job_id"]);
    assert_eq!(job["filename"], "new-data.csv");
    assert_eq!(job["upload"]["sha256"], sha256_hex(&body));
    assert_eq!(job["upload"]["content_length_header"], body.len());
    assert_eq!(job["upload_puts"], 1);
    assert_eq!(
        s.h.retrain_calls(&s.model).await,
        [("upload_url".to_string(), 200), ("upload".to_string(), 200)]
    );
    // The key was issued for the model and stored first.
    let (_, record) =
        s.h.record(&s.h.name(&format!("retrain/{}", s.model)), "AWSCURRENT")
            .await;
    assert_eq!(record["credential_type"], "retrain");
    assert_eq!(record["model_id"], s.model.as_str());
}

#[tokio::test]
async fn a_job_is_polled_to_the_end_its_results_saved_and_the_model_switched() {
    let s = setup("", json!({"running_polls": 2, "results_size": 300_000})).await;
    let (_, job) = s.start(4096).await;
    // Not finished yet: no results, no switch.
    let early = s.save(&job).await.unwrap_err();
    assert_eq!(early.0, "PredictionOne.RetrainNotFinished", "{early:?}");
    let mut states = Vec::new();
    loop {
        let out = s.action("status", &job).await.unwrap();
        assert_eq!(out["retrain_job_id"], job.as_str());
        states.push(out["state"].as_str().unwrap().to_string());
        if out["state"] != "running" {
            assert_eq!(out["status"], "job_finished");
            assert_eq!(out["message"], Value::Null);
            break;
        }
        assert_eq!(out["status"], "running");
        assert!(states.len() < 10, "{states:?}");
    }
    // One running status was used up by the early save_results.
    assert_eq!(states, ["running", "finished"]);

    let saved = s.save(&job).await.unwrap();
    let key = format!("retrain-results/{}/{job}/results", s.model);
    assert_eq!(
        saved,
        json!({"action": "save_results", "bucket": s.bucket, "key": key, "bytes": 300_000})
    );
    let (bytes, content_type) = s.h.get_object(&s.bucket, &key).await;
    let standin = s.job().await;
    assert_eq!(sha256_hex(&bytes), standin["results_sha256"]);
    assert_eq!(content_type.as_deref(), Some("application/zip"));

    let switched = s.action("switch_model", &job).await.unwrap();
    assert_eq!(
        switched,
        json!({"action": "switch_model", "model_id": s.model, "retrain_job_id": job, "switched": true})
    );
    assert_eq!(s.job().await["switched"], true);
}

#[tokio::test]
async fn results_of_unknown_length_are_saved_in_parts() {
    // Chunked, over one part (8 MiB): a multipart upload, memory bounded.
    let size = 9 * 1024 * 1024 + 5;
    let s = setup(
        "",
        json!({"running_polls": 0, "results_size": size, "results_chunked": true}),
    )
    .await;
    let (_, job) = s.start(10).await;
    assert_eq!(s.action("status", &job).await.unwrap()["state"], "finished");
    let saved = s.save(&job).await.unwrap();
    assert_eq!(saved["bytes"], size);
    let (bytes, _) =
        s.h.get_object(&s.bucket, saved["key"].as_str().unwrap())
            .await;
    assert_eq!(bytes.len(), size);
    assert_eq!(sha256_hex(&bytes), s.job().await["results_sha256"]);
}

#[tokio::test]
async fn a_failed_job_reports_its_status_and_message() {
    let s = setup(
        "",
        json!({"running_polls": 0, "final_status": "job_failed", "message": "eval_src is missing"}),
    )
    .await;
    let (_, job) = s.start(100).await;
    let out = s.action("status", &job).await.unwrap();
    assert_eq!(out["state"], "failed");
    assert_eq!(out["status"], "job_failed");
    assert_eq!(out["message"], "eval_src is missing");
    let err = s.save(&job).await.unwrap_err();
    assert_eq!(err.0, "PredictionOne.RetrainNotFinished", "{err:?}");
}

#[tokio::test]
async fn the_documented_errors_map_to_their_error_types() {
    let s = setup("", json!({"running_polls": 5})).await;
    let (_, job) = s.start(10).await;
    // A status whose own message reads like a documented error is still a
    // status.
    s.h.control(
        "script",
        json!({"model_id": s.model, "endpoint": "status", "responses": [
            {"json": {"status": "running", "message": "Retrain job is not finished."}}
        ]}),
    )
    .await;
    let out = s.action("status", &job).await.unwrap();
    assert_eq!(
        (out["state"].as_str(), out["message"].as_str()),
        (Some("running"), Some("Retrain job is not finished."))
    );
    let missing = s.action("status", "rj-does-not-exist").await.unwrap_err();
    assert_eq!(missing.0, "PredictionOne.RetrainJobNotFound", "{missing:?}");
    let early = s.action("switch_model", &job).await.unwrap_err();
    assert_eq!(early.0, "PredictionOne.RetrainNotFinished", "{early:?}");
    s.h.control("delete_job", json!({"retrain_job_id": job}))
        .await;
    for action in ["status", "switch_model"] {
        let gone = s.action(action, &job).await.unwrap_err();
        assert_eq!(gone.0, "PredictionOne.JobDeleted", "{action}: {gone:?}");
    }

    // A model whose configuration file is gone: a 500 that is not retried.
    let s = setup("noconfig-", json!({})).await;
    s.h.put_object(&s.bucket, &s.data_key("a.csv"), b"x,y\n1,2\n".to_vec())
        .await;
    let err = run(
        &s.app,
        json!({"action": "start", "bucket": s.bucket, "key": s.data_key("a.csv")}),
    )
    .await
    .unwrap_err();
    assert_eq!(err.0, "PredictionOne.ConfigurationFileMissing", "{err:?}");
    assert_eq!(
        s.h.retrain_calls(&s.model).await,
        [("upload_url".to_string(), 500)]
    );

    // A model API that is gone cannot be switched.
    let s = setup("noclassifier-", json!({"running_polls": 0})).await;
    let (_, job) = s.start(10).await;
    s.action("status", &job).await.unwrap();
    let err = s.action("switch_model", &job).await.unwrap_err();
    assert_eq!(err.0, "PredictionOne.ClassifierNotFound", "{err:?}");
}

#[tokio::test]
async fn a_revoked_stored_key_is_replaced_once_and_the_call_retried() {
    let s = setup("", json!({"running_polls": 3})).await;
    let (_, job) = s.start(10).await;
    let target = s.h.name(&format!("retrain/{}", s.model));
    let (first_version, first) = s.h.record(&target, "AWSCURRENT").await;
    s.h.control("revoke", json!({"model_id": s.model})).await;

    let out = s.action("status", &job).await.unwrap();
    assert_eq!(out["state"], "running");
    let (second_version, second) = s.h.record(&target, "AWSCURRENT").await;
    assert_ne!(first_version, second_version, "a new key was stored");
    assert_ne!(first["api_key"], second["api_key"]);
    let calls = s.h.retrain_calls(&s.model).await;
    assert_eq!(
        calls[2..],
        [("status".to_string(), 400), ("status".to_string(), 200)]
    );
    // Two keys in all: the first, and the one that replaced it.
    assert_eq!(s.h.calls(&s.sk).await.len(), 2);

    // A key just issued is not replaced again: the refusal is the answer.
    let refused = json!({"status": 400, "json": {"code": 4001000204u64, "error": "PREDA_EXTERNAL_BAD_REQUEST", "message": "Inactive_credential."}});
    s.h.control(
        "script",
        json!({"model_id": s.model, "endpoint": "status", "responses": [refused, refused, refused]}),
    )
    .await;
    let err = s.action("status", &job).await.unwrap_err();
    assert_eq!(err.0, "PredictionOne.InactiveCredential", "{err:?}");
    assert_eq!(s.h.retrain_calls(&s.model).await.len(), calls.len() + 2);
    assert_eq!(s.h.calls(&s.sk).await.len(), 3);
}

#[tokio::test]
async fn bad_data_is_refused_before_a_job_exists() {
    let s = setup("", json!({})).await;
    s.h.put_object(&s.bucket, &s.data_key("empty.csv"), Vec::new())
        .await;
    s.h.put_object(&s.bucket, &s.data_key("data.parquet"), b"PAR1".to_vec())
        .await;
    let cases = [
        (
            json!({"key": s.data_key("missing.csv")}),
            "DataUnavailable",
            "cannot be read",
        ),
        (
            json!({"key": s.data_key("empty.csv")}),
            "DataUnavailable",
            "is empty",
        ),
        (
            json!({"key": s.data_key("data.parquet")}),
            "DataUnavailable",
            ".csv or .zip",
        ),
        (
            json!({"key": s.data_key("a.csv"), "model_id": "other"}),
            "InvalidRequest",
            "does not match",
        ),
        (
            json!({"key": "elsewhere/a.csv"}),
            "InvalidRequest",
            "model_id is required",
        ),
        (
            json!({"key": s.data_key("a.csv"), "bucket": "p1-no-such-bucket-here"}),
            "DataUnavailable",
            "cannot be read",
        ),
    ];
    for (fields, error_type, says) in cases {
        let mut request = json!({"action": "start", "bucket": s.bucket});
        for (k, v) in fields.as_object().unwrap() {
            request[k] = v.clone();
        }
        let (t, m) = run(&s.app, request.clone()).await.unwrap_err();
        assert_eq!(t, error_type, "{request}: {m}");
        assert!(m.contains(says), "{request}: {m}");
    }
    assert!(s.h.jobs(&s.model).await.is_empty(), "no job was created");
    assert!(s.h.calls(&s.sk).await.is_empty(), "no key was issued");
}

#[tokio::test]
async fn an_upload_that_fails_transiently_is_sent_again_and_a_refused_one_is_not() {
    let s = setup("", json!({})).await;
    s.h.control(
        "script",
        json!({"model_id": s.model, "endpoint": "upload", "responses": [{"status": 503}, {"drop": true}]}),
    )
    .await;
    let (body, _) = s.start(200_000).await;
    let job = s.job().await;
    assert_eq!(job["upload_puts"], 3);
    assert_eq!(job["upload"]["sha256"], sha256_hex(&body));

    let s = setup("", json!({})).await;
    s.h.control(
        "script",
        json!({"model_id": s.model, "endpoint": "upload", "responses": [{"status": 403}]}),
    )
    .await;
    s.h.put_object(&s.bucket, &s.data_key("a.zip"), b"PK".to_vec())
        .await;
    let (t, m) = run(
        &s.app,
        json!({"action": "start", "bucket": s.bucket, "key": s.data_key("a.zip")}),
    )
    .await
    .unwrap_err();
    // A refusal: one job, one PUT, and an errorType nothing retries.
    assert_eq!(t, "PredictionOne.UploadRefused", "{m}");
    assert!(m.contains("HTTP 403") && m.contains("not retried"), "{m}");
    assert_eq!(s.job().await["upload_puts"], 1);
    assert_eq!(s.h.jobs(&s.model).await.len(), 1);
}

#[tokio::test]
async fn results_that_cannot_be_fetched_are_results_unavailable() {
    let s = setup("", json!({"running_polls": 0, "no_download_url": true})).await;
    let (_, job) = s.start(10).await;
    let (t, m) = s.save(&job).await.unwrap_err();
    assert_eq!(t, "ResultsUnavailable", "{m}");
    assert!(m.contains("no download_url"), "{m}");

    let s = setup("", json!({"running_polls": 0})).await;
    let (_, job) = s.start(10).await;
    s.h.control(
        "script",
        json!({"model_id": s.model, "endpoint": "download", "responses": [{"status": 500}]}),
    )
    .await;
    let (t, m) = s.save(&job).await.unwrap_err();
    assert_eq!(t, "ResultsUnavailable", "{m}");
    assert!(m.contains("HTTP 500"), "{m}");

    // Cut short while S3 reads it, with a length (one PutObject) and
    // chunked (parts): nothing is saved.
    for cut in [
        json!({"body_size": 3_000_000, "cut_after": 100_000}),
        json!({"body_size": 20_000_000, "chunked": true, "cut_after": 17_000_000}),
    ] {
        s.h.control(
            "script",
            json!({"model_id": s.model, "endpoint": "download", "responses": [cut]}),
        )
        .await;
        let (t, m) = s.save(&job).await.unwrap_err();
        assert_eq!(t, "ResultsUnavailable", "{cut}: {m}");
        let listed =
            s.h.s3
                .list_objects_v2()
                .bucket(&s.bucket)
                .prefix("retrain-results/")
                .send()
                .await
                .unwrap();
        let saved: Vec<&str> = listed
            .contents()
            .iter()
            .filter_map(|o| o.key())
            .filter(|k| !k.starts_with("retrain-results/.starts/"))
            .collect();
        assert!(saved.is_empty(), "{cut}: nothing saved: {saved:?}");
        let open =
            s.h.s3
                .list_multipart_uploads()
                .bucket(&s.bucket)
                .send()
                .await
                .unwrap();
        assert!(open.uploads().is_empty(), "{cut}: the parts were aborted");
    }
}

#[tokio::test]
async fn the_s3_event_fixture_starts_a_retraining() {
    let s = setup("", json!({})).await;
    let key = s.data_key("new-data.csv");
    s.h.put_object(&s.bucket, &key, b"a,b\n1,2\n".to_vec())
        .await;
    let mut event = fixture("s3-object-created.json");
    event["detail"]["bucket"]["name"] = json!(s.bucket);
    event["detail"]["object"]["key"] = json!(key);
    let out = run(&s.app, event).await.unwrap();
    assert_eq!(out["model_id"], s.model.as_str());
    assert_eq!(out["bytes"], 8);
    // The action fixtures are requests the runner accepts as they are
    // (their job does not exist here).
    for name in ["retrain-status.json", "retrain-switch-model.json"] {
        let (t, _) = run(&s.app, fixture(name)).await.unwrap_err();
        assert!(t.starts_with("PredictionOne."), "{name}: {t}");
    }
}

#[tokio::test]
async fn every_action_works_over_tls() {
    // The vendor API and its pre-signed URLs over https, under a test CA
    // the function trusts through SSL_CERT_FILE (as a deployment would
    // trust a private CA).
    let h = Harness::over_tls().await;
    assert!(h.standin.starts_with("https://"));
    let s = setup_with(h, "", json!({"running_polls": 0, "results_size": 100_000})).await;
    let (body, job) = s.start(250_000).await;
    assert_eq!(s.job().await["upload"]["sha256"], sha256_hex(&body));
    assert_eq!(s.action("status", &job).await.unwrap()["state"], "finished");
    let saved = s.save(&job).await.unwrap();
    let (bytes, _) =
        s.h.get_object(&s.bucket, saved["key"].as_str().unwrap())
            .await;
    assert_eq!(sha256_hex(&bytes), s.job().await["results_sha256"]);
    assert_eq!(
        s.action("switch_model", &job).await.unwrap()["switched"],
        true
    );
}

#[tokio::test]
async fn an_upload_url_that_is_not_http_is_refused_unsent_as_malformed() {
    // Local mode (the stand-in is on loopback) accepts http and https to
    // any address (SPEC section 11); outside it, only https to a public
    // host (unit tests in src/net.rs). Any other scheme, never.
    let s = setup("", json!({})).await;
    s.h.control(
        "script",
        json!({"model_id": s.model, "endpoint": "upload_url", "responses": [
            {"json": {"retrain_job_id": "rj-plain", "upload_url": "ftp://192.0.2.1/_upload/abc?X-Amz-Signature=0f"}}
        ]}),
    )
    .await;
    s.h.put_object(&s.bucket, &s.data_key("a.csv"), b"a\n1\n".to_vec())
        .await;
    let (t, m) = run(
        &s.app,
        json!({"action": "start", "bucket": s.bucket, "key": s.data_key("a.csv")}),
    )
    .await
    .unwrap_err();
    // The vendor's answer is unusable: not an upload failure to retry
    // with a new job.
    assert_eq!(t, "PredictionOne.MalformedResponse", "{m}");
    assert!(m.contains("not http or https"), "{m}");
    assert!(!m.contains("192.0.2.1") && !m.contains("_upload"), "{m}");
}

#[tokio::test]
async fn an_sqs_batch_lists_only_its_failed_records() {
    use std::time::Duration;

    use p1_key_broker::deadline::Deadline;

    let s = setup("", json!({"running_polls": 5})).await;
    let (_, job) = s.start(10).await;
    let record = |id: &str, body: Value| json!({"messageId": id, "eventSource": "aws:sqs", "body": body.to_string()});
    let batch = json!({"Records": [
        record("ok", json!({"action": "status", "model_id": s.model, "retrain_job_id": job})),
        record("bad", json!({"action": "status", "model_id": s.model})),
        record("gone", json!({"action": "status", "model_id": s.model, "retrain_job_id": "rj-nope"})),
        {"messageId": "junk", "eventSource": "aws:sqs", "body": "not json"},
    ]});
    let out = run(&s.app, batch.clone()).await.unwrap();
    let mut failed: Vec<&str> = out["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap())
        .collect();
    failed.sort();
    assert_eq!(failed, ["bad", "gone", "junk"]);

    // No time to start: every record is listed, and nothing is called.
    let before = s.h.retrain_calls(&s.model).await.len();
    let deadline = Deadline::after(Duration::from_millis(500), Duration::from_secs(1));
    let out = Box::pin(p1_key_broker::retrain::handler::handle(
        &s.app, batch, &deadline,
    ))
    .await
    .unwrap();
    assert_eq!(
        out["batchItemFailures"].as_array().unwrap().len(),
        4,
        "{out}"
    );
    assert_eq!(s.h.retrain_calls(&s.model).await.len(), before);
}

#[tokio::test]
async fn a_task_step_functions_no_longer_waits_for_is_skipped() {
    // As when SQS delivers a message again after its task timed out: the
    // token is unknown to Step Functions (moto: InvalidToken).
    let s = setup("", json!({})).await;
    let key = s.data_key("a.csv");
    s.h.put_object(&s.bucket, &key, b"a\n1\n".to_vec()).await;
    let body =
        json!({"action": "start", "bucket": s.bucket, "key": key, "task_token": "tt-long-gone"});
    let out = run(
        &s.app,
        json!({"Records": [{"messageId": "m1", "eventSource": "aws:sqs", "body": body.to_string()}]}),
    )
    .await
    .unwrap();
    assert_eq!(
        out,
        json!({"batchItemFailures": []}),
        "the record is done with"
    );
    assert!(
        s.h.jobs(&s.model).await.is_empty(),
        "no vendor job for nobody"
    );
    assert!(s.h.calls(&s.sk).await.is_empty(), "no key issued");
    let direct = run(&s.app, body).await.unwrap();
    assert_eq!(direct["skipped"], true, "{direct}");
    assert!(
        direct["reason"].as_str().unwrap().contains("InvalidToken"),
        "{direct}"
    );
}

/// SPEC section 11: outside local runs (the vendor's base URL is not on
/// loopback), a pre-signed URL that is plain http or points at loopback
/// (the Lambda Runtime API, an extension), a link-local or a private
/// address is refused unsent, upload and download alike; in local runs the
/// same loopback URL is used.
#[tokio::test]
async fn presigned_urls_inside_the_sandbox_are_refused_unsent_outside_local_runs() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use p1_key_broker::deadline::Deadline;
    use p1_key_broker::prediction_one::{PredictionOneClient, RetrainApi};
    use p1_key_broker::sensitive::PresignedUrl;
    use p1_key_broker::tls::SharedTrust;
    use p1_key_broker::transfer::Payload;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // A sink on loopback that counts connections and answers 200.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    let sink = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    let client = |base: &str| {
        PredictionOneClient::new(
            &url::Url::parse(base).unwrap(),
            Duration::from_secs(2),
            1,
            SharedTrust::default(),
        )
        .unwrap()
    };
    let deadline = || Deadline::after(Duration::from_secs(10), Duration::from_secs(1));
    let remote = client("https://vendor.invalid");
    for url in [
        format!("http://127.0.0.1:{port}/u?X-Amz-Signature=s"),
        format!("https://127.0.0.1:{port}/u"),
        format!("https://localhost:{port}/u"),
        format!("https://[::ffff:127.0.0.1]:{port}/u"),
        "https://169.254.169.254/latest/meta-data/".to_string(),
        "https://10.0.0.7/u".to_string(),
        "https://192.168.0.7/u".to_string(),
        "http://uploads.example.com/u".to_string(),
    ] {
        let presigned = PresignedUrl::new(url.clone());
        let up = remote
            .upload(&presigned, Payload::from_bytes(&b"a\n1\n"[..]), &deadline())
            .await
            .unwrap_err();
        assert!(
            matches!(
                &up,
                p1_key_broker::prediction_one::retrain::TransferError::Unusable(_)
            ),
            "{url}: {up:?}"
        );
        assert!(!up.detail().contains("127.0.0.1"), "{up:?}");
        let down = remote.download(&presigned, &deadline()).await.unwrap_err();
        assert!(
            matches!(
                &down,
                p1_key_broker::prediction_one::retrain::TransferError::Unusable(_)
            ),
            "{url}: {down:?}"
        );
    }
    assert_eq!(connections.load(Ordering::SeqCst), 0, "nothing was sent");

    // In a local run the loopback sink is where the data goes.
    let local = client(&format!("http://127.0.0.1:{port}"));
    local
        .upload(
            &PresignedUrl::new(format!("http://127.0.0.1:{port}/u")),
            Payload::from_bytes(&b"a\n1\n"[..]),
            &deadline(),
        )
        .await
        .unwrap();
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    sink.abort();
}

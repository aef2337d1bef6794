//! Exactly one retraining per uploaded object (SPEC section 11, issue 16):
//! the retrain runner's `start` against moto's S3 (versioned or not) and the
//! vendor stand-in. A second `start` of one object version, one after the
//! other or at the same time, answers the first one's job with no new job
//! and no second upload; new content, or another version, is a new job;
//! keys are found as S3's events write them.

use serde_json::{Value, json};

use crate::common::{Harness, data, run, sha256_hex};

struct Setup {
    h: Harness,
    app: p1_key_broker::RetrainApp,
    bucket: String,
    model: String,
}

async fn setup() -> Setup {
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let app = h.runner(&sk, &[]).await;
    let bucket = h.create_bucket().await;
    let model = h.model("");
    h.control("retrain", json!({"model_id": model})).await;
    Setup {
        h,
        app,
        bucket,
        model,
    }
}

impl Setup {
    fn key(&self, file: &str) -> String {
        format!("retrain/{}/{file}", self.model)
    }

    async fn start(&self, key: &str, version_id: Option<&str>) -> Result<Value, (String, String)> {
        run(
            &self.app,
            json!({"action": "start", "bucket": self.bucket, "key": key, "version_id": version_id}),
        )
        .await
    }

    /// The start records' keys.
    async fn records(&self) -> Vec<String> {
        self.h
            .s3
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix("retrain-results/.starts/")
            .send()
            .await
            .unwrap()
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_string))
            .collect()
    }

    async fn jobs(&self) -> Vec<Value> {
        self.h.jobs(&self.model).await
    }

    async fn job(&self, id: &Value) -> Value {
        self.h.job(&self.model, id.as_str().unwrap()).await
    }

    async fn versioned(&self) {
        self.h
            .s3
            .put_bucket_versioning()
            .bucket(&self.bucket)
            .versioning_configuration(
                aws_sdk_s3::types::VersioningConfiguration::builder()
                    .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
                    .build(),
            )
            .send()
            .await
            .expect("versioning on");
    }

    /// Puts an object; its version id (in a versioned bucket).
    async fn put(&self, key: &str, body: &[u8]) -> Option<String> {
        self.h
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(body.to_vec().into())
            .send()
            .await
            .expect("put_object")
            .version_id()
            .map(str::to_string)
    }
}

#[tokio::test]
async fn a_second_start_of_one_object_answers_the_first_job() {
    let s = setup().await;
    let body = data(300_000, 1);
    let key = s.key("new.csv");
    s.put(&key, &body).await;
    let first = s.start(&key, None).await.unwrap();
    let again = s.start(&key, None).await.unwrap();
    assert_eq!(again, first, "the same job, bytes and model");
    let jobs = s.jobs().await;
    assert_eq!(jobs.len(), 1, "one vendor job: {jobs:?}");
    assert_eq!(jobs[0]["upload_puts"], 1, "one upload");
    assert_eq!(jobs[0]["upload"]["sha256"], sha256_hex(&body));

    // New content under the same key is another object: a new job.
    let newer = data(1000, 2);
    s.put(&key, &newer).await;
    let second = s.start(&key, None).await.unwrap();
    assert_ne!(second["retrain_job_id"], first["retrain_job_id"]);
    assert_eq!(
        s.job(&second["retrain_job_id"]).await["upload"]["sha256"],
        sha256_hex(&newer)
    );
    assert_eq!(s.jobs().await.len(), 2);
}

#[tokio::test]
async fn starts_of_one_object_at_the_same_time_make_one_job() {
    let s = setup().await;
    let body = data(2_000_000, 3);
    let key = s.key("at-once.csv");
    s.put(&key, &body).await;
    let starts = futures_util::future::join_all((0..4).map(|_| s.start(&key, None))).await;
    let jobs: Vec<Value> = starts
        .into_iter()
        .map(|r| r.expect("every start answers")["retrain_job_id"].clone())
        .collect();
    assert!(jobs.iter().all(|j| *j == jobs[0]), "{jobs:?}");
    let at_vendor = s.jobs().await;
    assert_eq!(at_vendor.len(), 1, "{at_vendor:?}");
    assert_eq!(at_vendor[0]["upload_puts"], 1);
}

#[tokio::test]
async fn each_version_trains_itself() {
    let s = setup().await;
    s.versioned().await;
    let key = s.key("versions.csv");
    let (v1_body, v2_body) = (data(5000, 4), data(7000, 5));
    let v1 = s.put(&key, &v1_body).await.expect("a version id");
    let v2 = s.put(&key, &v2_body).await.expect("a version id");
    assert_ne!(v1, v2);
    // The older version, named, after the newer one replaced it.
    let old = s.start(&key, Some(&v1)).await.unwrap();
    assert_eq!(old["bytes"], 5000);
    assert_eq!(
        s.job(&old["retrain_job_id"]).await["upload"]["sha256"],
        sha256_hex(&v1_body)
    );
    let new = s.start(&key, Some(&v2)).await.unwrap();
    assert_ne!(new["retrain_job_id"], old["retrain_job_id"]);
    assert_eq!(
        s.job(&new["retrain_job_id"]).await["upload"]["sha256"],
        sha256_hex(&v2_body)
    );
    // Each again: its own job, nothing new.
    assert_eq!(s.start(&key, Some(&v1)).await.unwrap(), old);
    assert_eq!(s.start(&key, Some(&v2)).await.unwrap(), new);
    // No version named: the current one, the same object as v2.
    assert_eq!(s.start(&key, None).await.unwrap(), new);
    assert_eq!(s.jobs().await.len(), 2);
    // A version that is not one of this key's is not data.
    let (t, m) = s
        .start(&key, Some("not-a-version-of-it"))
        .await
        .unwrap_err();
    assert_eq!(t, "DataUnavailable", "{m}");
}

/// S3 writes keys in its events URL-encoded ("red flower.csv" as
/// "red+flower.csv", or "red%20flower.csv" in EventBridge's events): the
/// object is found either way, once per object, and the vendor gets the
/// file's own name.
#[tokio::test]
async fn keys_are_found_as_s3_events_write_them() {
    let s = setup().await;
    let cases: &[(&str, &[&str])] = &[
        ("red flower.csv", &["red+flower.csv", "red%20flower.csv"]),
        ("a+b.csv", &["a%2Bb.csv"]),
        ("100%.csv", &["100%25.csv"]),
        (
            "売上 データ+1.zip",
            &[
                "%E5%A3%B2%E4%B8%8A%20%E3%83%87%E3%83%BC%E3%82%BF%2B1.zip",
                "%E5%A3%B2%E4%B8%8A+%E3%83%87%E3%83%BC%E3%82%BF%2B1.zip",
            ],
        ),
    ];
    for (i, (name, encoded)) in cases.iter().enumerate() {
        let body = data(100 + i, 10 + i as u64);
        let key = s.key(name);
        s.put(&key, &body).await;
        let first = s
            .start(&key, None)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        let job = s.job(&first["retrain_job_id"]).await;
        assert_eq!(job["filename"], *name, "the vendor gets the decoded name");
        assert_eq!(job["upload"]["sha256"], sha256_hex(&body), "{name}");
        for form in *encoded {
            let again = s
                .start(&s.key(form), None)
                .await
                .unwrap_or_else(|e| panic!("{form}: {e:?}"));
            assert_eq!(again["retrain_job_id"], first["retrain_job_id"], "{form}");
        }
    }
    assert_eq!(s.jobs().await.len(), cases.len(), "one job per object");
    // A key that exists as given is taken as given, even when its decoded
    // form exists too.
    let (plus, space) = (data(11, 20), data(12, 21));
    s.put(&s.key("x+y.csv"), &plus).await;
    s.put(&s.key("x y.csv"), &space).await;
    let out = s.start(&s.key("x+y.csv"), None).await.unwrap();
    assert_eq!(out["bytes"], 11);
    // And a key found neither way is DataUnavailable naming it as given.
    let (t, m) = s.start(&s.key("no+such.csv"), None).await.unwrap_err();
    assert_eq!(t, "DataUnavailable");
    assert!(m.contains("no+such.csv"), "{m}");
}

/// A start that failed releases its claim: the next one starts afresh
/// (the first job got no data). A claim whose owner died mid-upload (its
/// lease passed) is taken over.
#[tokio::test]
async fn a_failed_or_abandoned_start_does_not_block_the_next() {
    let s = setup().await;
    let key = s.key("flaky.csv");
    s.put(&key, &data(1000, 30)).await;
    s.h.control(
        "script",
        json!({"model_id": s.model, "endpoint": "upload", "responses": [{"status": 503}, {"status": 503}, {"status": 503}]}),
    )
    .await;
    let (t, m) = s.start(&key, None).await.unwrap_err();
    assert_eq!(t, "PredictionOne.UploadFailed", "{m}");
    let retried = s.start(&key, None).await.unwrap();
    assert_eq!(s.jobs().await.len(), 2);
    assert_eq!(s.job(&retried["retrain_job_id"]).await["upload_puts"], 1);

    // A claim left by a start that died (lease in the past).
    let key = s.key("abandoned.csv");
    s.put(&key, &data(1000, 31)).await;
    let before = s.records().await;
    // The record's name is the runner's business: start once, then rewrite
    // its record as the claim of a runner that died mid-upload.
    let done = s.start(&key, None).await.unwrap();
    let after = s.records().await;
    let record_key = after
        .iter()
        .find(|k| !before.contains(k))
        .expect("a start record")
        .clone();
    let (bytes, _) = s.h.get_object(&s.bucket, &record_key).await;
    let mut record: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(record["state"], "started");
    assert_eq!(record["retrain_job_id"], done["retrain_job_id"]);
    assert!(
        !String::from_utf8_lossy(&bytes).contains("http"),
        "no URL in a record"
    );
    record["state"] = json!("uploading");
    record["owner"] = json!("a-runner-that-died");
    record["lease_until_ms"] = json!(chrono::Utc::now().timestamp_millis() - 1000);
    s.h.put_object(&s.bucket, &record_key, serde_json::to_vec(&record).unwrap())
        .await;
    let taken_over = s.start(&key, None).await.unwrap();
    assert_ne!(taken_over["retrain_job_id"], done["retrain_job_id"]);
    assert_eq!(s.start(&key, None).await.unwrap(), taken_over);
}

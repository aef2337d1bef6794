//! Memory stays bounded whatever the file's size (SPEC section 11): the
//! retrain runner's own binary, under AWS's runtime emulator, moves an
//! object many times larger than the memory this test allows it, from S3
//! (moto) to the upload URL (the stand-in) and a results file of the same
//! size back into S3, once with a length (one streamed PutObject) and once
//! chunked (a multipart upload). The peak resident memory of the function's
//! process (`VmHWM`) must stay under [`MAX_PEAK_MIB`].
//!
//! It prints the sizes, times and peak; those are figures, not goals
//! (`scripts/bench_transfer.sh` runs it larger, on the release binary).
//! `P1_TRANSFER_MIB` sets the size, `P1_RETRAIN_BINARY` the binary (default:
//! the debug build of this test run).

use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{Harness, sha256_hex};
use crate::runtime_deadline::{Answer, RETRAIN_FUNCTION, Rie};

const DEFAULT_MIB: usize = 192;
/// A quarter of the default object: the runner holds neither file (it
/// holds one 8 MiB part of a chunked download, on top of the ~30 MiB a
/// debug build of the runner takes with no transfer at all).
const MAX_PEAK_MIB: u64 = 48;

/// The function process started with `P1_TEST_RUN=<marker>` in its
/// environment.
fn function_pid(marker: &str) -> Option<u32> {
    let needle = format!("P1_TEST_RUN={marker}");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
            (exe.ends_with("p1-retrain")
                && environ.split(|b| *b == 0).any(|v| v == needle.as_bytes()))
            .then_some(pid)
        })
}

/// `VmHWM` (peak resident set) of a process, in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

/// `len` bytes of cheap, non-repeating data.
fn big_data(len: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(len);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while data.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    data.truncate(len);
    data
}

fn mib_per_s(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / 1_048_576.0 / took.as_secs_f64()
}

#[tokio::test(flavor = "multi_thread")]
async fn large_transfers_stay_in_bounded_memory() {
    let mib: usize = std::env::var("P1_TRANSFER_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_MIB);
    let size = mib * 1_048_576;
    let h = Harness::new().await;
    let sk = h.secret_key("");
    let config = h.config(&sk, &[]).await;
    let bucket = h.create_bucket().await;
    let model = h.model("");
    // One object per pass: a second start of the same object answers the
    // first one's job (exactly once per object) and uploads nothing.
    let keys = [
        format!("retrain/{model}/large.csv"),
        format!("retrain/{model}/large-2.csv"),
    ];
    let body = big_data(size);
    let data_sha = sha256_hex(&body);
    h.put_object(&bucket, &keys[0], body.clone()).await;
    h.put_object(&bucket, &keys[1], body).await;

    let marker = h.id.clone();
    let env = [
        (
            "P1_SECRET_KEY_SECRET_ID",
            config.secret_key_secret_id.as_str(),
        ),
        (
            "P1_RETRAIN_SECRET_PREFIX",
            config.retrain_secret_prefix.as_str(),
        ),
        ("P1_API_BASE_URL", h.standin.as_str()),
        ("P1_TEST_RUN", marker.as_str()),
    ];
    let binary = std::env::var("P1_RETRAIN_BINARY").unwrap_or_else(|_| RETRAIN_FUNCTION.into());
    let rie = Rie::start_binary(&binary, "large", Duration::from_secs(110), &env);
    let mut peaks = Vec::new();
    let mut jobs: Vec<String> = Vec::new();
    for (key, chunked) in keys.iter().zip([false, true]) {
        h.control(
            "retrain",
            json!({"model_id": model, "running_polls": 0, "results_size": size, "results_chunked": chunked}),
        )
        .await;
        let started = Instant::now();
        let call = rie
            .invoke(&json!({"action": "start", "bucket": bucket, "key": key}))
            .await;
        let uploaded = started.elapsed();
        let Answer::Result(out) = &call.answer else {
            panic!("{:?}\n{}", call.answer, rie.logs());
        };
        assert_eq!(out["bytes"], size);
        let job = out["retrain_job_id"].as_str().unwrap().to_string();
        assert!(!jobs.contains(&job), "a new job for each object: {job}");
        jobs.push(job.clone());
        let standin = h.job(&model, &job).await;
        assert_eq!(standin["upload"]["sha256"], data_sha.as_str());
        // The stand-in made this job's results as asked: chunked or not.
        assert_eq!(standin["settings"]["results_chunked"], chunked, "{standin}");

        let request = json!({"action": "status", "model_id": model, "retrain_job_id": job});
        let status = rie.invoke(&request).await;
        assert!(
            matches!(&status.answer, Answer::Result(v) if v["state"] == "finished"),
            "{:?}",
            status.answer
        );
        let results_key = format!("retrain-results/{model}/{job}/results");
        let started = Instant::now();
        let call = rie
            .invoke(&json!({"action": "save_results", "model_id": model, "retrain_job_id": job, "bucket": bucket, "key": results_key}))
            .await;
        let saved = started.elapsed();
        let Answer::Result(out) = &call.answer else {
            panic!("{:?}\n{}", call.answer, rie.logs());
        };
        assert_eq!(out["bytes"], size);
        let (stored, _) = h.get_object(&bucket, &results_key).await;
        let standin = h.job(&model, &job).await;
        assert_eq!(sha256_hex(&stored), standin["results_sha256"]);

        let pid = function_pid(&marker).expect("the function's process");
        let peak = peak_kib(pid);
        peaks.push(peak);
        eprintln!(
            "large transfer ({}): {mib} MiB uploaded S3 -> upload URL in {:.2} s ({:.0} MiB/s); \
             results {mib} MiB download URL -> S3 in {:.2} s ({:.0} MiB/s); function peak RSS {:.1} MiB",
            if chunked {
                "results chunked: multipart"
            } else {
                "results with length: one PutObject"
            },
            uploaded.as_secs_f64(),
            mib_per_s(size, uploaded),
            saved.as_secs_f64(),
            mib_per_s(size, saved),
            peak as f64 / 1024.0
        );
    }
    let peak = peaks.iter().max().copied().unwrap_or_default();
    assert!(
        peak < MAX_PEAK_MIB * 1024,
        "the function's peak RSS was {} MiB moving {mib} MiB each way",
        peak / 1024
    );
}

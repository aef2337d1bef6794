//! How long healthy Secrets Manager calls take from this crate's SDK set-up:
//! the numbers behind `crate::aws::MIN_ATTEMPT` (the shortest an AWS attempt
//! is ever cut to), so that the bound never cuts a healthy call.
//!
//!   scripts/bench_aws_calls.sh [N]
//!
//! starts moto on loopback and runs this against it; against real AWS, run
//! `cargo run --release --example aws_calls -- N` with credentials, a region
//! and no `AWS_ENDPOINT_URL` (it creates and deletes one secret,
//! `p1-key-broker-bench-<random>`). Prints the first call (a new connection)
//! and percentiles of N calls of each operation. A benchmark: no test
//! judges its figures.

use std::time::{Duration, Instant};

fn percentiles(mut samples: Vec<Duration>) -> String {
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    format!(
        "p50 {:>6.1} ms  p90 {:>6.1} ms  p99 {:>6.1} ms  max {:>6.1} ms",
        at(0.5).as_secs_f64() * 1e3,
        at(0.9).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3,
    )
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let sm = aws_sdk_secretsmanager::Client::new(&aws);
    let name = format!("p1-key-broker-bench-{:016x}", fastrand::u64(..));
    // A value the size of a key record.
    let value = format!(
        "{{\"api_key\":\"{}\",\"end_date\":\"2099-01-01 00:00:00\",\"expires_at\":\"2099-01-01T00:00:00Z\",\"credential_type\":\"train\",\"model_id\":null,\"issued_at\":\"2026-12-03T00:00:00Z\"}}",
        "k".repeat(64)
    );
    let started = Instant::now();
    sm.create_secret()
        .name(&name)
        .secret_string(&value)
        .send()
        .await
        .expect("CreateSecret");
    println!(
        "CreateSecret, first call (new connection): {:.1} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    let (mut put, mut get, mut describe) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        sm.put_secret_value()
            .secret_id(&name)
            .secret_string(&value)
            .send()
            .await
            .expect("PutSecretValue");
        put.push(t.elapsed());
        let t = Instant::now();
        sm.get_secret_value()
            .secret_id(&name)
            .send()
            .await
            .expect("GetSecretValue");
        get.push(t.elapsed());
        let t = Instant::now();
        sm.describe_secret()
            .secret_id(&name)
            .send()
            .await
            .expect("DescribeSecret");
        describe.push(t.elapsed());
    }
    println!("PutSecretValue  x{n}: {}", percentiles(put));
    println!("GetSecretValue  x{n}: {}", percentiles(get));
    println!("DescribeSecret  x{n}: {}", percentiles(describe));
    let _ = sm
        .delete_secret()
        .secret_id(&name)
        .force_delete_without_recovery(true)
        .send()
        .await;
}

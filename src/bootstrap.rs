//! What both functions' `main` share: the invocation's deadline, and
//! telling the Runtime API why init failed.

use std::time::Duration;

use lambda_runtime::LambdaEvent;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::deadline::Deadline;
use crate::error::Error;

/// The invocation's budget: the runtime's deadline less `margin`.
pub fn deadline_of(event: &LambdaEvent<Value>, margin: Duration) -> Deadline {
    let deadline = Deadline::from_epoch_millis(event.context.deadline, margin);
    tracing::debug!(
        deadline_ms = event.context.deadline,
        work_left_ms = deadline.work_left().as_millis() as u64,
        "invocation budget"
    );
    deadline
}

/// Logs an init failure, reports it to the Runtime API (so the invocation
/// shows `ConfigError` with the variable named instead of a bare exit
/// status), and gives the error for `main` to return.
pub async fn init_failed(error: Error) -> lambda_runtime::Error {
    tracing::error!(
        error_type = error.error_type(),
        "init failed: {}",
        error.report()
    );
    if let Err(problem) = report_init_error(&error).await {
        tracing::warn!("could not report the init error to the Runtime API: {problem}");
    }
    error.into()
}

/// Tells the Lambda Runtime API why init failed, so the invocation reports
/// `ConfigError` with the variable named instead of a bare exit status.
///
/// Written by hand over a plain TCP stream: the Runtime API is plain HTTP on
/// the host, and an HTTP client library would also set up TLS, which can
/// itself fail (a host whose trust store yields no certificates) and then
/// hide the very error being reported.
async fn report_init_error(error: &Error) -> Result<(), String> {
    let api =
        std::env::var("AWS_LAMBDA_RUNTIME_API").map_err(|_| "AWS_LAMBDA_RUNTIME_API is not set")?;
    // Lambda gives host:port; local emulators may give a base URL with a
    // scheme and a path prefix (cargo lambda: `127.0.0.1:9000/.rt/_`).
    let base = api.trim_start_matches("http://").trim_end_matches('/');
    let (host, prefix) = base.split_once('/').map_or((base, ""), |(h, p)| (h, p));
    let path = if prefix.is_empty() {
        "/2018-06-01/runtime/init/error".to_string()
    } else {
        format!("/{prefix}/2018-06-01/runtime/init/error")
    };
    let body = serde_json::json!({"errorType": error.error_type(), "errorMessage": error.report()})
        .to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nLambda-Runtime-Function-Error-Type: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        error.error_type(),
        body.len()
    );
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(host).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut head = [0u8; 32];
        let n = stream.read(&mut head).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&head[..n]).into_owned())
    };
    let head = tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .map_err(|_| format!("no answer from {host}"))?
        .map_err(|e| format!("{host}: {e}"))?;
    match head.split_whitespace().nth(1) {
        Some(status) if status.starts_with('2') => Ok(()),
        _ => Err(format!(
            "unexpected answer: {:?}",
            head.lines().next().unwrap_or_default()
        )),
    }
}

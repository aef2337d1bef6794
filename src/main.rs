//! Bootstrap: logging, configuration, clients, then the Lambda runtime loop.

use std::time::Duration;

use lambda_runtime::{LambdaEvent, service_fn};
use p1_key_broker::deadline::Deadline;
use p1_key_broker::{App, Config, Error, handle, logging};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One thread: an invocation is a few network calls, and a Lambda instance
/// serves one invocation at a time; worker threads would only cost start-up
/// time and memory. (SQS batches still run their targets concurrently, as
/// tasks on this thread.)
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    logging::init();
    let app = match Config::from_env() {
        Ok(config) => App::from_config(config).await,
        Err(e) => Err(e),
    };
    let app = match app {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error_type = e.error_type(), "init failed: {}", e.report());
            if let Err(problem) = report_init_error(&e).await {
                tracing::warn!("could not report the init error to the Runtime API: {problem}");
            }
            return Err(e.into());
        }
    };
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline =
            Deadline::from_epoch_millis(event.context.deadline, app.config().deadline_margin);
        tracing::debug!(
            deadline_ms = event.context.deadline,
            work_left_ms = deadline.work_left().as_millis() as u64,
            "invocation budget"
        );
        // Boxed: the handler's future is deeply nested (batches run
        // groups of requests through the use case), and its layout would
        // otherwise sit at the compiler's query-depth limit.
        Box::pin(handle(app, event.payload, &deadline)).await
    }))
    .await
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

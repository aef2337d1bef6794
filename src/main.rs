//! Bootstrap: logging, configuration, clients, then the Lambda runtime loop.

use lambda_runtime::{LambdaEvent, service_fn};
use p1_key_broker::{App, Config, Error, handle, logging};
use serde_json::Value;

#[tokio::main]
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
            report_init_error(&e).await;
            return Err(e.into());
        }
    };
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle(app, event.payload).await
    }))
    .await
}

/// Tells the Lambda Runtime API why init failed, so the invocation reports
/// `ConfigError` with the variable named instead of a bare exit status.
async fn report_init_error(error: &Error) {
    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        return;
    };
    // Lambda gives host:port; local emulators may give a full base URL.
    let base = if api.starts_with("http") {
        api
    } else {
        format!("http://{api}")
    };
    let body = serde_json::json!({"errorType": error.error_type(), "errorMessage": error.report()});
    let sent = reqwest::Client::new()
        .post(format!(
            "{}/2018-06-01/runtime/init/error",
            base.trim_end_matches('/')
        ))
        .header("Lambda-Runtime-Function-Error-Type", error.error_type())
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await;
    if let Err(e) = sent {
        tracing::warn!("could not report the init error to the Runtime API: {e}");
    }
}

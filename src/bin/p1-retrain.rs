//! The retrain runner's bootstrap (SPEC section 11): logging,
//! configuration, clients, then the Lambda runtime loop. Its own binary, so
//! that the key broker's package never carries the S3 client.

use lambda_runtime::{LambdaEvent, service_fn};
use p1_key_broker::{Config, RetrainApp, bootstrap, logging, retrain};
use serde_json::Value;

/// One thread, as the key broker: an invocation is a few network calls and
/// two streams, and Lambda serves one invocation at a time per instance.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    logging::init();
    let app = match Config::from_env() {
        Ok(config) => RetrainApp::from_config(config).await,
        Err(e) => Err(e),
    };
    let app = match app {
        Ok(app) => app,
        Err(e) => return Err(bootstrap::init_failed(e).await),
    };
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = bootstrap::deadline_of(&event, app.config().deadline_margin);
        Box::pin(retrain::handler::handle(app, event.payload, &deadline)).await
    }))
    .await
}

//! The key broker's bootstrap: logging, configuration, clients, then the
//! Lambda runtime loop.

use lambda_runtime::{LambdaEvent, service_fn};
use p1_key_broker::{App, Config, bootstrap, handle, logging};
use serde_json::Value;

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
        Err(e) => return Err(bootstrap::init_failed(e).await),
    };
    let app = &app;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let deadline = bootstrap::deadline_of(&event, app.config().deadline_margin);
        // Boxed: the handler's future is deeply nested (batches run
        // groups of requests through the use case), and its layout would
        // otherwise sit at the compiler's query-depth limit.
        Box::pin(handle(app, event.payload, &deadline)).await
    }))
    .await
}

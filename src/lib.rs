//! # p1-key-broker
//!
//! An AWS Lambda function that keeps Prediction One API keys fresh in AWS
//! Secrets Manager and hands them to pipelines by reference. The contract is
//! `SPEC.md`; this is the map of the code.
//!
//! ```text
//!  payload ──> trigger ──> handler ──> broker ──> vendor (Get API Key, HTTP)
//!  (any of     (which of    (thin:       (fresh?     secrets (Secrets Manager:
//!   four        the four     parse,       issue,      secret key + key store)
//!   shapes)     triggers)    shape,       store,     handoff (Step Functions,
//!                            report)      announce)   EventBridge)
//!                 └──────────> rotation (Secrets Manager's four steps, same ports)
//! ```
//!
//! - [`config`]: the environment, validated once at start-up.
//! - [`trigger`]: any payload to one of the contract's triggers.
//! - [`request`]: the request and result objects and their validation.
//! - [`handler`]: the entry point; SQS batches and task-token reporting.
//! - [`broker`]: the use case, over three ports (traits):
//!   [`vendor::Vendor`], [`secrets::SecretStore`], [`handoff::Handoff`].
//! - [`rotation`]: the Secrets Manager rotation protocol.
//! - [`vendor`], [`secrets`], [`handoff`]: the ports and their AWS/HTTP adapters.
//! - [`error`]: one error enum mapped to the contract's `errorType`s.
//! - [`sensitive`]: redacting types for every secret-bearing value.
//! - [`expiry`], [`metrics`], [`logging`]: end_date parsing, EMF, tracing.
//!
//! Clients are built once in [`App::from_config`] and reused by every warm
//! invocation; nothing touches the network before the first event.

pub mod broker;
pub mod config;
pub mod error;
pub mod expiry;
pub mod handler;
pub mod handoff;
pub mod logging;
pub mod metrics;
pub mod request;
pub mod rotation;
pub mod secrets;
pub mod sensitive;
pub mod trigger;
pub mod vendor;

pub use broker::Broker;
pub use config::Config;
pub use error::Error;
pub use handler::handle;

/// The function as deployed: the broker on its real adapters.
pub type App = Broker<vendor::HttpVendor, secrets::aws::SecretsManager, handoff::AwsHandoff>;

impl App {
    /// Builds the SDK and HTTP clients from the standard AWS configuration
    /// chain (`AWS_REGION`, `AWS_ENDPOINT_URL`, credentials). No network call
    /// is made here: credentials and endpoints resolve on first use.
    pub async fn from_config(config: Config) -> Result<App, Error> {
        let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        let vendor = vendor::HttpVendor::new(&config)?;
        let store = secrets::aws::SecretsManager::new(aws_sdk_secretsmanager::Client::new(&aws));
        let handoff = handoff::AwsHandoff::new(
            aws_sdk_sfn::Client::new(&aws),
            aws_sdk_eventbridge::Client::new(&aws),
        );
        Ok(Broker::new(config, vendor, store, handoff))
    }
}

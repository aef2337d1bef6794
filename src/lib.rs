//! # p1-key-broker
//!
//! An AWS Lambda function that keeps Prediction One API keys fresh in AWS
//! Secrets Manager and hands them to pipelines by reference, and a second
//! one, the retrain runner (`p1-retrain`), that turns new data in S3 into a
//! retrained model with those keys. The contract is `SPEC.md`; this is the
//! map of the code.
//!
//! ```text
//!  payload ─> trigger ─> handler ─┬─────────────> broker (the use case)
//!             (which      (thin)  └─> batch ───>  serve · answer · rotate
//!              shape)                 (SQS)            │ ports (traits)
//!                                        ┌─────────────┼──────────────┐
//!                                  prediction_one   secrets        handoff
//!                                  (Get API Key,    (Secrets       (Step Functions,
//!                                   HTTP)            Manager)       EventBridge)
//! ```
//!
//! Entry:
//! - [`handler`]: any payload to use-case calls and an answer.
//! - [`trigger`]: which of the contract's four triggers a payload is; reads
//!   SQS records one by one.
//! - [`batch`]: SQS batches: grouping by target, in-batch reuse, the
//!   partial-batch response.
//!
//! The use case:
//! - [`broker`]: [`Broker`], closed behind `serve`, `answer` /
//!   `answer_rejected` (reporting to Step Functions, announcing on
//!   EventBridge) and `rotate` (Secrets Manager's four steps); its adapters
//!   are named by one [`broker::Ports`] type.
//! - [`retrain`]: the retrain runner's [`retrain::Runner`]: the four actions
//!   of a retraining on the broker's key use case, its requests and its
//!   entry point (requests, S3 events, SQS batches).
//! - [`report`]: reporting an outcome to Step Functions, for both.
//! - [`app`]: [`App`] and [`RetrainApp`], the broker and the runner on their
//!   real adapters; [`bootstrap`]: what both `main`s share.
//!
//! The words and rules they share, each in one place:
//! - [`credential`]: `CredentialType`, `ModelId`, `Credential`, `Status`.
//! - [`request`]: the request (the list of its fields, validation) and the
//!   result; `Served::output` is the only way an API key leaves.
//! - [`config`]: the environment, validated once at start-up.
//! - [`secret_id`]: what may name a secret, and whether two ids name the
//!   same one (the guard that keeps API keys off the secret-key secret).
//! - [`secret_key`]: the Prediction One secret key, cached per instance.
//! - [`error`]: one error enum, variants named like the contract's
//!   `errorType`s, causes kept as sources.
//! - [`sensitive`]: redacting types for every secret-bearing value.
//! - [`expiry`], [`metrics`], [`logging`]: end_date parsing, EMF lines
//!   (`SecondsUntilExpiry`, `Failures`), tracing.
//!
//! The ports and adapters (no one of them imports `error` or `config`):
//! - [`prediction_one`]: `KeyIssuer`, `RetrainApi`, `PredictionOneClient`,
//!   the response reader, backoff, the pre-signed transfers.
//! - [`objects`]: `ObjectStore`, its S3 adapter (the runner's only).
//! - [`transfer`]: a streamed file between S3 and a pre-signed URL.
//! - [`net`]: what counts as loopback.
//! - [`secrets`]: `SecretStore`, its Secrets Manager adapter, the stored
//!   record.
//! - [`handoff`]: `Handoff`, its Step Functions and EventBridge adapter.
//! - [`aws`]: what the AWS adapters share (reading SDK errors).
//! - [`tls`]: the trust store, read once and shared by both HTTPS clients.
//!
//! Clients are built once in [`App::from_config`] (and
//! `RetrainApp::from_config`) and reused by every warm invocation; nothing
//! touches the network before the first event.

pub mod app;
pub mod aws;
pub mod batch;
pub mod bootstrap;
pub mod broker;
pub mod config;
pub mod credential;
pub mod deadline;
pub mod error;
pub mod expiry;
pub mod handler;
pub mod handoff;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod objects;
pub mod prediction_one;
pub mod report;
pub mod request;
pub mod retrain;
pub mod secret_id;
pub mod secret_key;
pub mod secrets;
pub mod sensitive;
pub mod tls;
pub mod transfer;
pub mod trigger;

#[cfg(test)]
mod fakes;

pub use app::{App, RetrainApp};
pub use broker::Broker;
pub use config::Config;
pub use error::Error;
pub use handler::handle;

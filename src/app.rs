//! The function as deployed: the use case on its real adapters, the
//! Prediction One HTTP client and the AWS SDK clients.

use crate::broker::{Broker, Ports};
use crate::config::Config;
use crate::error::Error;
use crate::handoff::AwsHandoff;
use crate::prediction_one::PredictionOneClient;
use crate::secrets::aws::SecretsManager;

/// The real adapters.
pub struct Aws;

impl Ports for Aws {
    type Issuer = PredictionOneClient;
    type Store = SecretsManager;
    type Handoff = AwsHandoff;
}

/// The broker on the real adapters.
pub type App = Broker<Aws>;

impl Broker<Aws> {
    /// Builds the SDK and HTTP clients from the standard AWS configuration
    /// chain (`AWS_REGION`, `AWS_ENDPOINT_URL`, credentials). No network call
    /// is made here: credentials and endpoints resolve on first use.
    pub async fn from_config(config: Config) -> Result<App, Error> {
        let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
        Self::with_aws(config, &aws)
    }

    /// The same with a given AWS configuration (tests point one app at a
    /// fault-injecting proxy this way).
    pub fn with_aws(config: Config, aws: &aws_config::SdkConfig) -> Result<App, Error> {
        let issuer = PredictionOneClient::new(
            &config.api_base_url,
            config.http_timeout,
            config.max_attempts,
        )
        .map_err(|e| Error::ConfigError(format!("P1_API_BASE_URL: {e}")))?;
        let store = SecretsManager::new(aws_sdk_secretsmanager::Client::new(aws));
        let handoff = AwsHandoff::new(
            aws_sdk_sfn::Client::new(aws),
            aws_sdk_eventbridge::Client::new(aws),
        );
        Ok(Broker::new(config, issuer, store, handoff))
    }
}

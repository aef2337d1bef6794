//! The functions as deployed: the use cases on their real adapters, the
//! Prediction One HTTP client and the AWS SDK clients. [`App`] is the key
//! broker; [`RetrainApp`] the retrain runner, the same broker plus S3.

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_smithy_runtime_api::client::http::SharedHttpClient;

use crate::broker::{Broker, Ports};
use crate::config::Config;
use crate::error::Error;
use crate::handoff::AwsHandoff;
use crate::objects::S3Objects;
use crate::prediction_one::PredictionOneClient;
use crate::retrain::{Runner, RunnerPorts};
use crate::secrets::aws::SecretsManager;
use crate::tls::{LazySdkHttpClient, SharedTrust};

/// Secrets Manager, Step Functions and EventBridge answer in tens of
/// milliseconds; a connection that takes longer than this is not coming.
const AWS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One attempt of one AWS call.
const AWS_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// The instance's one trust store and the SDK's HTTP client on it (built on
/// first use), which every client of the instance shares.
struct Shared {
    trust: SharedTrust,
    http: SharedHttpClient,
}

impl Shared {
    fn new() -> Self {
        let trust = SharedTrust::default();
        let http = SharedHttpClient::new(LazySdkHttpClient::new(trust.clone()));
        Shared { trust, http }
    }

    /// The standard AWS configuration chain (`AWS_REGION`,
    /// `AWS_ENDPOINT_URL`, credentials). The loader builds the credential
    /// providers' clients (STS for web identity, IMDS, ...), and validating
    /// those builds an HTTPS connector: given the lazy client, none reads the
    /// trust store before the first connection.
    async fn load(&self) -> aws_config::SdkConfig {
        aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(self.http.clone())
            .load()
            .await
    }

    /// `aws` on the shared HTTP client, with the connect timeout, the given
    /// per-attempt timeout, and the SDK's standard retry (3 attempts).
    fn sdk(
        &self,
        aws: &aws_config::SdkConfig,
        attempt_timeout: Option<Duration>,
    ) -> aws_config::SdkConfig {
        let mut timeouts = TimeoutConfig::builder().connect_timeout(AWS_CONNECT_TIMEOUT);
        if let Some(attempt) = attempt_timeout {
            timeouts = timeouts.operation_attempt_timeout(attempt);
        }
        aws.to_builder()
            .http_client(self.http.clone())
            .timeout_config(timeouts.build())
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .build()
    }
}

/// The real adapters.
pub struct Aws;

impl Ports for Aws {
    type Issuer = PredictionOneClient;
    type Store = SecretsManager;
    type Handoff = AwsHandoff;
}

/// The broker on the real adapters.
pub type App = Broker<Aws>;

impl RunnerPorts for Aws {
    type Objects = S3Objects;
}

/// The retrain runner on the real adapters.
pub type RetrainApp = Runner<Aws>;

impl Runner<Aws> {
    /// The broker's clients (one vendor client serves both its key calls
    /// and the retraining calls) and an S3 client, all on the SDK's one HTTP
    /// client. No network call is made here.
    pub async fn from_config(config: Config) -> Result<RetrainApp, Error> {
        let shared = Shared::new();
        let aws = shared.load().await;
        Self::build(config, &aws, shared)
    }

    /// The same with a given AWS configuration (tests).
    pub fn with_aws(config: Config, aws: &aws_config::SdkConfig) -> Result<RetrainApp, Error> {
        Self::build(config, aws, Shared::new())
    }

    fn build(
        config: Config,
        aws: &aws_config::SdkConfig,
        shared: Shared,
    ) -> Result<RetrainApp, Error> {
        // Transfers stream for minutes: no per-attempt timeout on S3 (the
        // deadline bounds each call instead).
        let s3 = S3Objects::new(&shared.sdk(aws, None));
        let broker = Broker::build(config, aws, shared)?;
        Ok(Runner::new(broker, s3))
    }
}

impl Broker<Aws> {
    /// Builds the SDK and HTTP clients from the standard AWS configuration
    /// chain (`AWS_REGION`, `AWS_ENDPOINT_URL`, credentials). No network call
    /// is made here: credentials and endpoints resolve on first use.
    pub async fn from_config(config: Config) -> Result<App, Error> {
        let shared = Shared::new();
        let aws = shared.load().await;
        Self::build(config, &aws, shared)
    }

    /// The same with a given AWS configuration (tests point one app at a
    /// fault-injecting proxy this way).
    ///
    /// Every AWS call is bounded twice: by the invocation's deadline, in the
    /// use case (SPEC section 10), and here by the SDK's own connect and
    /// per-attempt timeouts, so that one stuck connection is retried by the
    /// SDK's standard retry (3 attempts) instead of using up the deadline.
    pub fn with_aws(config: Config, aws: &aws_config::SdkConfig) -> Result<App, Error> {
        Self::build(config, aws, Shared::new())
    }

    fn build(config: Config, aws: &aws_config::SdkConfig, shared: Shared) -> Result<App, Error> {
        let aws = &shared.sdk(aws, Some(AWS_ATTEMPT_TIMEOUT));
        let trust = shared.trust;
        let issuer = PredictionOneClient::new(
            &config.api_base_url,
            config.http_timeout,
            config.max_attempts,
            trust,
        )
        .map_err(|e| Error::ConfigError(format!("P1_API_BASE_URL: {e}")))?;
        let store = SecretsManager::new(aws_sdk_secretsmanager::Client::new(aws));
        let handoff = AwsHandoff::new(
            aws_sdk_sfn::Client::new(aws),
            aws_sdk_eventbridge::Client::new(aws),
            aws_sdk_sqs::Client::new(aws),
        );
        Ok(Broker::new(config, issuer, store, handoff))
    }
}

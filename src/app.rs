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

/// The SDK's HTTP client on the instance's one trust store, built on first use.
fn lazy_http_client(trust: &SharedTrust) -> SharedHttpClient {
    SharedHttpClient::new(LazySdkHttpClient::new(trust.clone()))
}

/// The SDK configuration for the small calls (Secrets Manager, Step
/// Functions, EventBridge): connect and per-attempt timeouts, standard
/// retries.
fn bounded(aws: &aws_config::SdkConfig, http: SharedHttpClient) -> aws_config::SdkConfig {
    aws.to_builder()
        .http_client(http)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(AWS_CONNECT_TIMEOUT)
                .operation_attempt_timeout(AWS_ATTEMPT_TIMEOUT)
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .build()
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
        let trust = SharedTrust::default();
        let http = lazy_http_client(&trust);
        let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http.clone())
            .load()
            .await;
        Self::with_aws_parts(config, &aws, trust, http)
    }

    /// The same with a given AWS configuration (tests).
    pub fn with_aws(config: Config, aws: &aws_config::SdkConfig) -> Result<RetrainApp, Error> {
        let trust = SharedTrust::default();
        let http = lazy_http_client(&trust);
        Self::with_aws_parts(config, aws, trust, http)
    }

    fn with_aws_parts(
        config: Config,
        aws: &aws_config::SdkConfig,
        trust: SharedTrust,
        http: SharedHttpClient,
    ) -> Result<RetrainApp, Error> {
        let sdk = bounded(aws, http.clone());
        // Transfers stream for minutes: no per-attempt timeout on S3 (the
        // deadline bounds each call instead), the same connect timeout.
        let s3 = aws
            .to_builder()
            .http_client(http.clone())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(AWS_CONNECT_TIMEOUT)
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .build();
        let broker = Broker::build(config, &sdk, trust, http)?;
        Ok(Runner::new(broker, S3Objects::new(&s3)))
    }
}

impl Broker<Aws> {
    /// Builds the SDK and HTTP clients from the standard AWS configuration
    /// chain (`AWS_REGION`, `AWS_ENDPOINT_URL`, credentials). No network call
    /// is made here: credentials and endpoints resolve on first use.
    pub async fn from_config(config: Config) -> Result<App, Error> {
        let trust = SharedTrust::default();
        let http = lazy_http_client(&trust);
        // The loader builds the credential providers' clients (STS for web
        // identity, IMDS, ...), and validating those builds an HTTPS
        // connector: given the lazy client, none reads the trust store
        // before the first connection. The service clients share it.
        let aws = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http.clone())
            .load()
            .await;
        Self::build(config, &aws, trust, http)
    }

    /// The same with a given AWS configuration (tests point one app at a
    /// fault-injecting proxy this way).
    ///
    /// Every AWS call is bounded twice: by the invocation's deadline, in the
    /// use case (SPEC section 10), and here by the SDK's own connect and
    /// per-attempt timeouts, so that one stuck connection is retried by the
    /// SDK's standard retry (3 attempts) instead of using up the deadline.
    pub fn with_aws(config: Config, aws: &aws_config::SdkConfig) -> Result<App, Error> {
        let trust = SharedTrust::default();
        let http = lazy_http_client(&trust);
        Self::build(config, aws, trust, http)
    }

    fn build(
        config: Config,
        aws: &aws_config::SdkConfig,
        trust: SharedTrust,
        http: SharedHttpClient,
    ) -> Result<App, Error> {
        let aws = &bounded(aws, http);
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
        );
        Ok(Broker::new(config, issuer, store, handoff))
    }
}

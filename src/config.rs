//! The environment, read and validated once at start-up (SPEC section 2).
//!
//! A missing or invalid value is a `ConfigError` that names the variable, so a
//! misconfigured deployment fails its init instead of its first invocation.
//! An empty value counts as unset: infrastructure templates often pass `""`
//! for an optional parameter. AWS settings (region, endpoint, credentials)
//! are left to the SDK's own configuration chain.

use std::ops::RangeInclusive;
use std::time::Duration;

use reqwest::Url;

use crate::credential::{Credential, CredentialType, ModelId};
use crate::error::Error;
use crate::secret_id;

pub const DEFAULT_API_BASE_URL: &str = "https://developer-api.predictionone.sony.biz";

#[derive(Debug, Clone)]
pub struct Config {
    pub secret_key_secret_id: String,
    pub secret_key_field: String,
    pub api_base_url: Url,
    pub train_secret_id: String,
    pub deploy_secret_id: String,
    pub retrain_secret_prefix: String,
    pub create_missing_secret: bool,
    pub target_kms_key_id: Option<String>,
    pub renew_before: Duration,
    pub secret_key_cache_ttl: Duration,
    pub http_timeout: Duration,
    pub max_attempts: u32,
    pub event_bus_name: Option<String>,
    pub allow_key_in_output: bool,
    /// How many targets of one SQS batch are served at once.
    pub batch_concurrency: usize,
    /// Kept back from each invocation's deadline for storing a fetched key,
    /// handing it off and answering (SPEC section 10).
    pub deadline_margin: Duration,
    /// Retrain runner only: S3 keys under this prefix name their model in
    /// the next segment (`retrain/42/new.csv` is model 42).
    pub retrain_data_prefix: String,
    /// Retrain runner only: where the start records live in the data's
    /// bucket (`retrain::starts`; the workflow saves results here too).
    pub retrain_results_prefix: String,
    /// The renewal sweep (SPEC section 12) hands due keys to this SQS queue
    /// instead of renewing them itself.
    pub renew_queue_url: Option<String>,
    /// Credentials whose targets the sweep creates when missing.
    pub sweep_ensure: Vec<Credential>,
    /// Most renewals one sweep starts or hands off (default 200, or 10,000
    /// with the queue hand-off).
    pub sweep_max_renewals: usize,
    /// The sweep's BatchGetSecretValue calls in flight at once.
    pub sweep_read_concurrency: usize,
    /// Keys issued together are renewed up to this much before their
    /// renewal point, each by a stable share of it (SPEC section 12).
    pub sweep_jitter: Duration,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| match std::env::var(name) {
            Ok(value) => Ok(Some(value)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(config_error(name, "is not valid UTF-8")),
        })
    }

    /// Reads variables through `lookup`, so tests need not touch the process
    /// environment.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Result<Option<String>, Error>,
    ) -> Result<Self, Error> {
        let var = |name: &str| -> Result<Option<String>, Error> {
            Ok(lookup(name)?
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty()))
        };
        let or_default = |name: &str, default: &str| -> Result<String, Error> {
            Ok(var(name)?.unwrap_or_else(|| default.to_string()))
        };
        let int = |name: &str, default: u64, range: RangeInclusive<u64>| -> Result<u64, Error> {
            parse_int(name, var(name)?, default, range)
        };

        let secret_key_secret_id = var("P1_SECRET_KEY_SECRET_ID")?.ok_or_else(|| {
            config_error(
                "P1_SECRET_KEY_SECRET_ID",
                "is required: the name or ARN of the secret holding the Prediction One secret key",
            )
        })?;
        check_secret_id("P1_SECRET_KEY_SECRET_ID", &secret_key_secret_id)?;

        let train_secret_id = or_default("P1_TRAIN_SECRET_ID", "prediction-one/api-key/train")?;
        check_secret_id("P1_TRAIN_SECRET_ID", &train_secret_id)?;
        let deploy_secret_id = or_default("P1_DEPLOY_SECRET_ID", "prediction-one/api-key/deploy")?;
        check_secret_id("P1_DEPLOY_SECRET_ID", &deploy_secret_id)?;
        for (name, target) in [
            ("P1_TRAIN_SECRET_ID", &train_secret_id),
            ("P1_DEPLOY_SECRET_ID", &deploy_secret_id),
        ] {
            if secret_id::same_secret(target, &secret_key_secret_id) {
                return Err(config_error(
                    name,
                    "must not be P1_SECRET_KEY_SECRET_ID: storing an API key there would overwrite the secret key",
                ));
            }
        }
        // Two credentials sharing one secret would overwrite each other and
        // never be fresh.
        if secret_id::same_secret(&train_secret_id, &deploy_secret_id) {
            return Err(config_error(
                "P1_DEPLOY_SECRET_ID",
                "must not be P1_TRAIN_SECRET_ID: train and deploy keys would overwrite each other",
            ));
        }
        let retrain_secret_prefix = or_default(
            "P1_RETRAIN_SECRET_PREFIX",
            "prediction-one/api-key/retrain/",
        )?;
        if !secret_id::is_valid_prefix(&retrain_secret_prefix, ModelId::MAX_LEN) {
            return Err(config_error(
                "P1_RETRAIN_SECRET_PREFIX",
                &format!(
                    "must be a secret-name prefix (A-Z a-z 0-9 / _ + = . @ -, no ARN) that leaves room for a {}-character model_id in a {}-character secret name",
                    ModelId::MAX_LEN,
                    secret_id::MAX_NAME_LEN
                ),
            ));
        }
        for (name, target) in [
            ("P1_TRAIN_SECRET_ID", &train_secret_id),
            ("P1_DEPLOY_SECRET_ID", &deploy_secret_id),
        ] {
            if secret_id::name_of(target).starts_with(retrain_secret_prefix.as_str()) {
                return Err(config_error(
                    name,
                    "must not start with P1_RETRAIN_SECRET_PREFIX: a retrain key would overwrite it",
                ));
            }
        }

        let retrain_data_prefix = s3_prefix(
            "P1_RETRAIN_DATA_PREFIX",
            &or_default("P1_RETRAIN_DATA_PREFIX", "retrain/")?,
        )?;
        let retrain_results_prefix = s3_prefix(
            "P1_RETRAIN_RESULTS_PREFIX",
            &or_default("P1_RETRAIN_RESULTS_PREFIX", "retrain-results/")?,
        )?;
        // Anything written under the data prefix would start a retraining.
        if retrain_results_prefix.starts_with(&retrain_data_prefix)
            || retrain_data_prefix.starts_with(&retrain_results_prefix)
        {
            return Err(config_error(
                "P1_RETRAIN_RESULTS_PREFIX",
                "must not contain P1_RETRAIN_DATA_PREFIX or lie under it: results and start records written under the data prefix would start retrainings of their own",
            ));
        }

        let renew_queue_url = var("P1_RENEW_QUEUE_URL")?
            .map(|u| queue_url("P1_RENEW_QUEUE_URL", &u))
            .transpose()?;
        let hands_off = renew_queue_url.is_some();

        Ok(Config {
            secret_key_secret_id,
            secret_key_field: or_default("P1_SECRET_KEY_FIELD", "secret_key")?,
            api_base_url: parse_base_url(&or_default("P1_API_BASE_URL", DEFAULT_API_BASE_URL)?)?,
            train_secret_id,
            deploy_secret_id,
            retrain_secret_prefix,
            create_missing_secret: env_bool(
                "P1_CREATE_MISSING_SECRET",
                var("P1_CREATE_MISSING_SECRET")?,
                true,
            )?,
            target_kms_key_id: var("P1_TARGET_KMS_KEY_ID")?,
            renew_before: Duration::from_secs(int(
                "P1_RENEW_BEFORE_SECONDS",
                86_400,
                0..=31_536_000,
            )?),
            secret_key_cache_ttl: Duration::from_secs(int(
                "P1_SECRET_KEY_CACHE_TTL_SECONDS",
                300,
                0..=86_400,
            )?),
            http_timeout: Duration::from_millis(int("P1_HTTP_TIMEOUT_MS", 10_000, 1..=900_000)?),
            max_attempts: int("P1_MAX_ATTEMPTS", 3, 1..=10)? as u32,
            event_bus_name: var("P1_EVENT_BUS_NAME")?,
            allow_key_in_output: env_bool(
                "P1_ALLOW_KEY_IN_OUTPUT",
                var("P1_ALLOW_KEY_IN_OUTPUT")?,
                false,
            )?,
            batch_concurrency: int("P1_BATCH_CONCURRENCY", 8, 1..=64)? as usize,
            // At least enough to store a fetched key and answer (section 10).
            deadline_margin: Duration::from_millis(int(
                "P1_DEADLINE_MARGIN_MS",
                2_000,
                500..=60_000,
            )?),
            retrain_data_prefix,
            retrain_results_prefix,
            renew_queue_url,
            sweep_ensure: sweep_ensure(&or_default("P1_SWEEP_ENSURE", "train")?)?,
            // The queue's consumers spread renewals over many invocations:
            // a sweep may hand off far more than it could renew itself.
            sweep_max_renewals: int(
                "P1_SWEEP_MAX_RENEWALS",
                if hands_off { 10_000 } else { 200 },
                1..=100_000,
            )? as usize,
            sweep_read_concurrency: int("P1_SWEEP_READ_CONCURRENCY", 8, 1..=32)? as usize,
            sweep_jitter: Duration::from_secs(int("P1_SWEEP_JITTER_SECONDS", 3_600, 0..=86_400)?),
        })
    }

    /// The secret a request's key is stored in when it names none.
    pub fn default_target(
        &self,
        credential_type: CredentialType,
        model_id: Option<&ModelId>,
    ) -> String {
        match (credential_type, model_id) {
            (CredentialType::Retrain, Some(id)) => {
                format!("{}{}", self.retrain_secret_prefix, id.as_str())
            }
            (CredentialType::Deploy, _) => self.deploy_secret_id.clone(),
            _ => self.train_secret_id.clone(),
        }
    }

    /// Whose configured target `id` (a name or ARN) is, when it is not the
    /// target of `credential_type` (and `model_id`) itself: the train or
    /// deploy target of the other credentials, or a secret under the retrain
    /// prefix other than this model's own (SPEC section 3). Two credentials
    /// writing one secret would overwrite each other, and every reader of
    /// that secret would get the wrong key.
    pub fn crossed_target(
        &self,
        credential_type: CredentialType,
        model_id: Option<&ModelId>,
        id: &str,
    ) -> Option<String> {
        if credential_type != CredentialType::Train
            && secret_id::same_secret(id, &self.train_secret_id)
        {
            return Some("the train key's target (P1_TRAIN_SECRET_ID)".into());
        }
        if credential_type != CredentialType::Deploy
            && secret_id::same_secret(id, &self.deploy_secret_id)
        {
            return Some("the deploy key's target (P1_DEPLOY_SECRET_ID)".into());
        }
        let name = secret_id::name_of(id);
        let model = name.strip_prefix(self.retrain_secret_prefix.as_str())?;
        match (credential_type, model_id) {
            (CredentialType::Retrain, Some(own)) if own.as_str() == model => None,
            _ => Some(format!(
                "under P1_RETRAIN_SECRET_PREFIX ({:?}), the retrain key target of model {model:?}",
                self.retrain_secret_prefix
            )),
        }
    }

    /// The value of the owner tag (`broker::OWNER_TAG`) on the secrets this
    /// function creates: the secret-key secret's name (a tag value holds at
    /// most 256 characters).
    pub fn owner_tag_value(&self) -> String {
        secret_id::name_of(&self.secret_key_secret_id)
            .chars()
            .take(256)
            .collect()
    }

    /// Whether `id` (a name or ARN) is the secret that holds the secret key,
    /// which no API key may ever be written over.
    pub fn is_secret_key_secret(&self, id: &str) -> bool {
        secret_id::same_secret(id, &self.secret_key_secret_id)
    }
}

fn config_error(name: &str, problem: &str) -> Error {
    Error::ConfigError(format!("{name} {problem}"))
}

fn check_secret_id(name: &str, value: &str) -> Result<(), Error> {
    if !secret_id::is_valid(value) {
        return Err(config_error(name, &format!("must be {}", secret_id::RULE)));
    }
    Ok(())
}

/// A boolean environment variable (JSON booleans in requests are read in
/// `request`).
fn env_bool(name: &str, value: Option<String>, default: bool) -> Result<bool, Error> {
    match value.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None => Ok(default),
        Some("true" | "1" | "yes") => Ok(true),
        Some("false" | "0" | "no") => Ok(false),
        Some(_) => Err(config_error(name, "must be true or false")),
    }
}

fn parse_int(
    name: &str,
    value: Option<String>,
    default: u64,
    range: RangeInclusive<u64>,
) -> Result<u64, Error> {
    let Some(value) = value else {
        return Ok(default);
    };
    let parsed: u64 = value
        .parse()
        .map_err(|_| config_error(name, &format!("must be a whole number, got {value:?}")))?;
    if !range.contains(&parsed) {
        return Err(config_error(
            name,
            &format!(
                "must be between {} and {}, got {parsed}",
                range.start(),
                range.end()
            ),
        ));
    }
    Ok(parsed)
}

/// An SQS queue URL: https, or http on loopback (local stand-ins).
fn queue_url(name: &str, value: &str) -> Result<String, Error> {
    let url =
        Url::parse(value).map_err(|e| config_error(name, &format!("is not a valid URL ({e})")))?;
    if !crate::net::is_secure_or_loopback(&url) || url.host().is_none() {
        return Err(config_error(
            name,
            "must be an SQS queue URL (https://sqs.<region>.amazonaws.com/<account>/<queue>; plain http only on loopback)",
        ));
    }
    Ok(value.to_string())
}

/// `P1_SWEEP_ENSURE`: comma-separated `train`, `deploy`, `retrain:<model_id>`;
/// `none` for none (an empty value counts as unset, which is `train`).
fn sweep_ensure(value: &str) -> Result<Vec<Credential>, Error> {
    const NAME: &str = "P1_SWEEP_ENSURE";
    if value.trim().eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let mut out: Vec<Credential> = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let credential = match item.split_once(':') {
            None if item == "train" => Credential::new(CredentialType::Train, None),
            None if item == "deploy" => Credential::new(CredentialType::Deploy, None),
            Some(("retrain", id)) => match ModelId::parse(id) {
                Some(id) => Credential::new(CredentialType::Retrain, Some(id)),
                None => {
                    return Err(config_error(
                        NAME,
                        &format!("has {item:?}: a model id is 1 to 64 of A-Z a-z 0-9 _ -"),
                    ));
                }
            },
            _ => {
                return Err(config_error(
                    NAME,
                    &format!(
                        "has {item:?}; expected a comma-separated list of train, deploy and retrain:<model_id>, or none"
                    ),
                ));
            }
        };
        if !out.contains(&credential) {
            out.push(credential);
        }
    }
    Ok(out)
}

/// An S3 key prefix that ends a path segment (so that the model is the
/// whole next segment of a data key).
fn s3_prefix(name: &str, value: &str) -> Result<String, Error> {
    if !value.ends_with('/') || value.starts_with('/') {
        return Err(config_error(
            name,
            "must be an S3 key prefix ending in '/' and not starting with one (such as \"retrain/\")",
        ));
    }
    if value.len() > 512 || value.chars().any(char::is_control) {
        return Err(config_error(
            name,
            "must be at most 512 bytes without control characters",
        ));
    }
    Ok(value.to_string())
}

/// `https://host[:port]`, or `http://` for a loopback host only: the secret
/// key travels in a header, so it must never cross a network in clear text.
fn parse_base_url(value: &str) -> Result<Url, Error> {
    const NAME: &str = "P1_API_BASE_URL";
    let url =
        Url::parse(value).map_err(|e| config_error(NAME, &format!("is not a valid URL ({e})")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(config_error(NAME, "must not carry credentials"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        return Err(config_error(
            NAME,
            "must be scheme, host and optional port only (no path, query or fragment)",
        ));
    }
    if url.host().is_none() {
        return Err(config_error(NAME, "has no host"));
    }
    let loopback = crate::net::is_loopback(&url);
    match url.scheme() {
        "https" => Ok(url),
        "http" if loopback => Ok(url),
        "http" => Err(config_error(
            NAME,
            "must use https (plain http is accepted only for localhost, 127.0.0.0/8 and [::1])",
        )),
        other => Err(config_error(
            NAME,
            &format!("has unsupported scheme {other:?}; use https"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)]) -> Result<Config, Error> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|name| Ok(map.get(name).cloned()))
    }

    fn err_of(vars: &[(&str, &str)]) -> String {
        let err = load(vars).unwrap_err();
        assert_eq!(err.error_type(), "ConfigError");
        err.to_string()
    }

    #[test]
    fn defaults_follow_the_contract() {
        let c = load(&[("P1_SECRET_KEY_SECRET_ID", "p1/secret-key")]).unwrap();
        assert_eq!(c.secret_key_field, "secret_key");
        assert_eq!(
            c.api_base_url.as_str(),
            "https://developer-api.predictionone.sony.biz/"
        );
        assert_eq!(c.train_secret_id, "prediction-one/api-key/train");
        assert_eq!(c.deploy_secret_id, "prediction-one/api-key/deploy");
        assert_eq!(c.retrain_secret_prefix, "prediction-one/api-key/retrain/");
        assert!(c.create_missing_secret);
        assert_eq!(c.target_kms_key_id, None);
        assert_eq!(c.renew_before, Duration::from_secs(86_400));
        assert_eq!(c.secret_key_cache_ttl, Duration::from_secs(300));
        assert_eq!(c.http_timeout, Duration::from_millis(10_000));
        assert_eq!(c.max_attempts, 3);
        assert_eq!(c.event_bus_name, None);
        assert!(!c.allow_key_in_output);
        assert_eq!(c.batch_concurrency, 8);
        assert_eq!(c.deadline_margin, Duration::from_millis(2_000));
        assert_eq!(c.retrain_data_prefix, "retrain/");
        assert_eq!(c.retrain_results_prefix, "retrain-results/");
        assert_eq!(c.renew_queue_url, None);
        assert_eq!(
            c.sweep_ensure,
            [Credential::new(CredentialType::Train, None)]
        );
        assert_eq!(c.sweep_max_renewals, 200);
        assert_eq!(c.sweep_read_concurrency, 8);
        assert_eq!(c.sweep_jitter, Duration::from_secs(3_600));
    }

    #[test]
    fn sweep_settings() {
        let base = ("P1_SECRET_KEY_SECRET_ID", "s");
        let c = load(&[
            base,
            ("P1_SWEEP_ENSURE", " deploy, retrain:42 ,train,deploy"),
            ("P1_SWEEP_MAX_RENEWALS", "10000"),
            (
                "P1_RENEW_QUEUE_URL",
                "https://sqs.eu-west-1.amazonaws.com/123456789012/p1-requests",
            ),
        ])
        .unwrap();
        assert_eq!(
            c.sweep_ensure,
            [
                Credential::new(CredentialType::Deploy, None),
                Credential::new(CredentialType::Retrain, ModelId::parse("42")),
                Credential::new(CredentialType::Train, None),
            ]
        );
        assert_eq!(c.sweep_max_renewals, 10_000);
        assert!(c.renew_queue_url.is_some());
        // With the queue, the cap's default is 10,000; set, it is what is set.
        let queue = (
            "P1_RENEW_QUEUE_URL",
            "https://sqs.eu-west-1.amazonaws.com/123456789012/p1-requests",
        );
        assert_eq!(load(&[base, queue]).unwrap().sweep_max_renewals, 10_000);
        let c = load(&[
            base,
            queue,
            ("P1_SWEEP_MAX_RENEWALS", "100000"),
            ("P1_SWEEP_READ_CONCURRENCY", "32"),
            ("P1_SWEEP_JITTER_SECONDS", "0"),
        ])
        .unwrap();
        assert_eq!(c.sweep_max_renewals, 100_000);
        assert_eq!(c.sweep_read_concurrency, 32);
        assert_eq!(c.sweep_jitter, Duration::ZERO);
        let none = load(&[base, ("P1_SWEEP_ENSURE", "none")]).unwrap();
        assert!(none.sweep_ensure.is_empty());
        for (name, value) in [
            ("P1_SWEEP_ENSURE", "retrain"),
            ("P1_SWEEP_ENSURE", "retrain:4/2"),
            ("P1_SWEEP_ENSURE", "train,predict"),
            ("P1_SWEEP_MAX_RENEWALS", "0"),
            ("P1_SWEEP_MAX_RENEWALS", "100001"),
            ("P1_SWEEP_READ_CONCURRENCY", "0"),
            ("P1_SWEEP_READ_CONCURRENCY", "33"),
            ("P1_SWEEP_JITTER_SECONDS", "86401"),
            ("P1_SWEEP_JITTER_SECONDS", "-1"),
            ("P1_RENEW_QUEUE_URL", "http://sqs.example.com/1/q"),
            ("P1_RENEW_QUEUE_URL", "not a url"),
        ] {
            let msg = err_of(&[base, (name, value)]);
            assert!(msg.starts_with(name), "{name}={value}: {msg}");
        }
    }

    #[test]
    fn section_two_rules_each_fail_the_init_naming_the_variable() {
        let base = ("P1_SECRET_KEY_SECRET_ID", "p1/secret-key");
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:p1/secret-key-AbCdEf";
        let cases: &[(&[(&str, &str)], &str)] = &[
            // Three different secrets, by name or by ARN.
            (
                &[("P1_DEPLOY_SECRET_ID", "prediction-one/api-key/train")],
                "P1_DEPLOY_SECRET_ID",
            ),
            (&[("P1_TRAIN_SECRET_ID", arn)], "P1_TRAIN_SECRET_ID"),
            // Neither target under the retrain prefix.
            (
                &[("P1_TRAIN_SECRET_ID", "prediction-one/api-key/retrain/train")],
                "P1_TRAIN_SECRET_ID",
            ),
            (
                &[
                    ("P1_RETRAIN_SECRET_PREFIX", "k/"),
                    ("P1_DEPLOY_SECRET_ID", "k/deploy"),
                ],
                "P1_DEPLOY_SECRET_ID",
            ),
            // Secret names: Secrets Manager's characters and lengths.
            (&[("P1_TRAIN_SECRET_ID", "train key")], "P1_TRAIN_SECRET_ID"),
            (&[("P1_DEPLOY_SECRET_ID", "arn:")], "P1_DEPLOY_SECRET_ID"),
            (
                &[("P1_RETRAIN_SECRET_PREFIX", "retrain keys/")],
                "P1_RETRAIN_SECRET_PREFIX",
            ),
            (
                &[(
                    "P1_RETRAIN_SECRET_PREFIX",
                    "arn:aws:secretsmanager:x:1:secret:r/",
                )],
                "P1_RETRAIN_SECRET_PREFIX",
            ),
            // Numbers in range.
            (&[("P1_BATCH_CONCURRENCY", "0")], "P1_BATCH_CONCURRENCY"),
            (&[("P1_BATCH_CONCURRENCY", "65")], "P1_BATCH_CONCURRENCY"),
            (&[("P1_BATCH_CONCURRENCY", "eight")], "P1_BATCH_CONCURRENCY"),
            (
                &[("P1_DEADLINE_MARGIN_MS", "60001")],
                "P1_DEADLINE_MARGIN_MS",
            ),
            (&[("P1_DEADLINE_MARGIN_MS", "-1")], "P1_DEADLINE_MARGIN_MS"),
            (&[("P1_DEADLINE_MARGIN_MS", "0")], "P1_DEADLINE_MARGIN_MS"),
            (&[("P1_DEADLINE_MARGIN_MS", "499")], "P1_DEADLINE_MARGIN_MS"),
            // A data prefix ends a path segment.
            (
                &[("P1_RETRAIN_DATA_PREFIX", "retrain")],
                "P1_RETRAIN_DATA_PREFIX",
            ),
            (
                &[("P1_RETRAIN_DATA_PREFIX", "/retrain/")],
                "P1_RETRAIN_DATA_PREFIX",
            ),
            (
                &[("P1_RETRAIN_RESULTS_PREFIX", "retrain/results/")],
                "P1_RETRAIN_RESULTS_PREFIX",
            ),
            (
                &[("P1_RETRAIN_RESULTS_PREFIX", "results")],
                "P1_RETRAIN_RESULTS_PREFIX",
            ),
        ];
        for (vars, name) in cases {
            let mut all = vec![base];
            all.extend_from_slice(vars);
            let msg = err_of(&all);
            assert!(msg.starts_with(name), "{vars:?}: {msg}");
        }
        let secret_key_by_arn = [("P1_SECRET_KEY_SECRET_ID", arn)];
        assert!(
            err_of(&[
                secret_key_by_arn[0],
                ("P1_DEPLOY_SECRET_ID", "p1/secret-key")
            ])
            .starts_with("P1_DEPLOY_SECRET_ID")
        );
        let ok = load(&[
            base,
            ("P1_BATCH_CONCURRENCY", "64"),
            ("P1_DEADLINE_MARGIN_MS", "500"),
            ("P1_RETRAIN_SECRET_PREFIX", "k/"),
            ("P1_RETRAIN_DATA_PREFIX", "data/new/"),
        ])
        .unwrap();
        assert_eq!(ok.retrain_data_prefix, "data/new/");
        assert_eq!(ok.batch_concurrency, 64);
        assert_eq!(ok.deadline_margin, Duration::from_millis(500));
    }

    #[test]
    fn missing_secret_id_names_the_variable() {
        assert!(err_of(&[]).contains("P1_SECRET_KEY_SECRET_ID"));
        assert!(err_of(&[("P1_SECRET_KEY_SECRET_ID", "  ")]).contains("P1_SECRET_KEY_SECRET_ID"));
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let base = ("P1_SECRET_KEY_SECRET_ID", "s");
        for (name, value) in [
            ("P1_CREATE_MISSING_SECRET", "maybe"),
            ("P1_ALLOW_KEY_IN_OUTPUT", "yes please"),
            ("P1_RENEW_BEFORE_SECONDS", "-1"),
            ("P1_RENEW_BEFORE_SECONDS", "1d"),
            ("P1_SECRET_KEY_CACHE_TTL_SECONDS", "abc"),
            ("P1_HTTP_TIMEOUT_MS", "0"),
            ("P1_MAX_ATTEMPTS", "0"),
            ("P1_MAX_ATTEMPTS", "11"),
            ("P1_API_BASE_URL", "not a url"),
            ("P1_API_BASE_URL", "http://example.com"),
            ("P1_API_BASE_URL", "http://10.0.0.1:8080"),
            ("P1_API_BASE_URL", "ftp://localhost"),
            ("P1_API_BASE_URL", "https://example.com/v1"),
            ("P1_API_BASE_URL", "https://user:pw@example.com"),
        ] {
            let msg = err_of(&[base, (name, value)]);
            assert!(msg.starts_with(name), "{name}={value}: {msg}");
        }
        for name in ["P1_TRAIN_SECRET_ID", "P1_DEPLOY_SECRET_ID"] {
            assert!(err_of(&[base, (name, "s")]).starts_with(name));
        }
        let long_prefix = "p/".repeat(250);
        assert!(
            err_of(&[base, ("P1_RETRAIN_SECRET_PREFIX", &long_prefix)])
                .starts_with("P1_RETRAIN_SECRET_PREFIX")
        );
    }

    #[test]
    fn http_only_for_loopback() {
        let base = ("P1_SECRET_KEY_SECRET_ID", "s");
        for ok in [
            "http://localhost:9000",
            "http://127.0.0.1:9000",
            "http://127.1.2.3",
            "http://[::1]:9000/",
            "https://example.com:8443",
        ] {
            load(&[base, ("P1_API_BASE_URL", ok)]).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn parses_explicit_values_and_treats_empty_as_unset() {
        let c = load(&[
            (
                "P1_SECRET_KEY_SECRET_ID",
                "arn:aws:secretsmanager:eu-west-1:1:secret:sk",
            ),
            ("P1_CREATE_MISSING_SECRET", "FALSE"),
            ("P1_ALLOW_KEY_IN_OUTPUT", "true"),
            ("P1_RENEW_BEFORE_SECONDS", "0"),
            ("P1_MAX_ATTEMPTS", "5"),
            ("P1_EVENT_BUS_NAME", ""),
            ("P1_TARGET_KMS_KEY_ID", "alias/p1"),
        ])
        .unwrap();
        assert!(!c.create_missing_secret);
        assert!(c.allow_key_in_output);
        assert_eq!(c.renew_before, Duration::ZERO);
        assert_eq!(c.max_attempts, 5);
        assert_eq!(c.event_bus_name, None);
        assert_eq!(c.target_kms_key_id.as_deref(), Some("alias/p1"));
    }
}

//! The Secrets Manager adapter: the AWS SDK client behind [`SecretStore`].
//!
//! SDK errors become typed [`StoreError`]s here, keeping the service's code
//! and message but never the raw response (see [`crate::aws`]); secret
//! values travel only in [`SecretString`], whose `Debug` redacts.

use aws_sdk_secretsmanager::Client;
use aws_sdk_secretsmanager::config::Builder as Override;
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType, Tag};

use super::store::{
    BatchValues, ListFilter, ListedSecret, NewSecret, NewVersion, SecretDescription, SecretPage,
    SecretStore, SecretValue, StoreError, VersionRef,
};
use crate::aws::{describe_sdk_error, error_code, is_throttling, outcome_unknown};
use crate::sensitive::SecretString;

pub struct SecretsManager {
    client: Client,
}

impl SecretsManager {
    pub fn new(client: Client) -> Self {
        SecretsManager { client }
    }
}

/// Each call's attempts sized to the time it has (`crate::aws`).
fn sized() -> Override {
    crate::aws::sized_override!(Override)
}

fn store_error<E>(err: SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let text = describe_sdk_error(&err);
    if matches!(err, SdkError::TimeoutError(_)) {
        return StoreError::TimedOut(text);
    }
    let unknown = outcome_unknown(&err);
    match error_code(&err) {
        Some("ResourceNotFoundException") => StoreError::NotFound(text),
        Some("ResourceExistsException") => StoreError::Exists(text),
        // KMS refusals reach Secrets Manager callers as these two.
        Some("AccessDeniedException" | "AccessDenied" | "DecryptionFailure") => {
            StoreError::AccessDenied(text)
        }
        Some(code) if is_throttling(code) => StoreError::Throttled(text),
        _ if unknown => StoreError::Unavailable(text),
        _ => StoreError::Other(text),
    }
}

fn version_ref(arn: Option<&str>, version_id: Option<&str>) -> Result<VersionRef, StoreError> {
    match (arn, version_id) {
        (Some(arn), Some(version_id)) => Ok(VersionRef {
            arn: arn.into(),
            version_id: version_id.into(),
        }),
        _ => Err(StoreError::Other(
            "Secrets Manager did not return the ARN and version id".into(),
        )),
    }
}

impl SecretStore for SecretsManager {
    async fn get_value(
        &self,
        secret_id: &str,
        stage: &str,
        version_id: Option<&str>,
    ) -> Result<SecretValue, StoreError> {
        let request = self.client.get_secret_value().secret_id(secret_id);
        let request = request
            .version_stage(stage)
            .set_version_id(version_id.map(str::to_string));
        let out = request
            .customize()
            .config_override(sized())
            .send()
            .await
            .map_err(store_error)?;
        let r = version_ref(out.arn(), out.version_id())?;
        Ok(SecretValue {
            arn: r.arn,
            version_id: r.version_id,
            secret_string: out.secret_string().map(SecretString::new),
            stages: out.version_stages().to_vec(),
        })
    }

    async fn put_value(
        &self,
        secret_id: &str,
        version: &NewVersion<'_>,
    ) -> Result<VersionRef, StoreError> {
        let out = self
            .client
            .put_secret_value()
            .secret_id(secret_id)
            .secret_string(version.value.expose())
            .set_client_request_token(version.client_request_token.map(str::to_string))
            .set_version_stages(Some(version.stages.iter().map(|s| s.to_string()).collect()))
            .set_rotation_token(version.rotation_token.map(|t| t.expose().to_string()))
            .customize()
            .config_override(sized())
            .send()
            .await
            .map_err(store_error)?;
        version_ref(out.arn(), out.version_id())
    }

    async fn create(
        &self,
        name: &str,
        value: &SecretString,
        new: &NewSecret,
    ) -> Result<VersionRef, StoreError> {
        let tags = new
            .tags
            .iter()
            .map(|(k, v)| Tag::builder().key(k).value(v).build())
            .collect();
        let out = self
            .client
            .create_secret()
            .name(name)
            .secret_string(value.expose())
            .set_kms_key_id(new.kms_key_id.clone())
            .set_client_request_token(new.client_request_token.clone())
            .set_tags(Some(tags))
            .description("Prediction One API key, kept fresh by p1-key-broker")
            .customize()
            .config_override(sized())
            .send()
            .await
            .map_err(store_error)?;
        version_ref(out.arn(), out.version_id())
    }

    async fn describe(&self, secret_id: &str) -> Result<SecretDescription, StoreError> {
        let out = self
            .client
            .describe_secret()
            .secret_id(secret_id)
            .customize()
            .config_override(sized())
            .send()
            .await
            .map_err(store_error)?;
        Ok(SecretDescription {
            arn: out.arn().unwrap_or_default().to_string(),
            rotation_enabled: out.rotation_enabled().unwrap_or(false),
            versions: out.version_ids_to_stages().cloned().unwrap_or_default(),
            tags: out
                .tags()
                .iter()
                .filter_map(|t| {
                    Some((
                        t.key()?.to_string(),
                        t.value().unwrap_or_default().to_string(),
                    ))
                })
                .collect(),
        })
    }

    async fn list(
        &self,
        filter: &ListFilter,
        next_token: Option<&str>,
    ) -> Result<SecretPage, StoreError> {
        let by = |key: FilterNameStringType, value: &str| {
            Filter::builder().key(key).values(value).build()
        };
        let mut filters = Vec::new();
        if let Some(prefix) = &filter.name_prefix {
            filters.push(by(FilterNameStringType::Name, prefix));
        }
        if let Some((key, value)) = &filter.tag {
            filters.push(by(FilterNameStringType::TagKey, key));
            filters.push(by(FilterNameStringType::TagValue, value));
        }
        // Secrets Manager negates a filter value that starts with "!".
        if let Some(prefix) = &filter.exclude_name_prefix {
            filters.push(by(FilterNameStringType::Name, &format!("!{prefix}")));
        }
        let out = self
            .client
            .list_secrets()
            .set_filters(Some(filters))
            .max_results(100)
            .set_next_token(next_token.map(str::to_string))
            .customize()
            .config_override(sized())
            .send()
            .await
            .map_err(store_error)?;
        let secrets = out
            .secret_list()
            .iter()
            .filter_map(|entry| {
                Some(ListedSecret {
                    arn: entry.arn()?.to_string(),
                    name: entry.name()?.to_string(),
                    rotation_enabled: entry.rotation_enabled().unwrap_or(false),
                    tags: entry
                        .tags()
                        .iter()
                        .filter_map(|t| {
                            Some((
                                t.key()?.to_string(),
                                t.value().unwrap_or_default().to_string(),
                            ))
                        })
                        .collect(),
                })
            })
            .collect();
        Ok(SecretPage {
            secrets,
            next_token: out.next_token().map(str::to_string),
        })
    }

    async fn batch_get(&self, ids: &[String]) -> Result<BatchValues, StoreError> {
        let out = self
            .client
            .batch_get_secret_value()
            .set_secret_id_list(Some(ids.to_vec()))
            .customize()
            .config_override(sized())
            .send()
            .await
            .map_err(store_error)?;
        let values = out
            .secret_values()
            .iter()
            .filter_map(|v| {
                Some(SecretValue {
                    arn: v.arn()?.to_string(),
                    version_id: v.version_id()?.to_string(),
                    secret_string: v.secret_string().map(SecretString::new),
                    stages: v.version_stages().to_vec(),
                })
            })
            .collect();
        let errors = out
            .errors()
            .iter()
            .map(|e| {
                (
                    e.secret_id().unwrap_or_default().to_string(),
                    e.error_code().unwrap_or("Unknown").to_string(),
                )
            })
            .collect();
        Ok(BatchValues { values, errors })
    }

    async fn tag(&self, secret_id: &str, key: &str, value: &str) -> Result<(), StoreError> {
        self.client
            .tag_resource()
            .secret_id(secret_id)
            .tags(Tag::builder().key(key).value(value).build())
            .customize()
            .config_override(sized())
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn untag(&self, secret_id: &str, key: &str) -> Result<(), StoreError> {
        self.client
            .untag_resource()
            .secret_id(secret_id)
            .tag_keys(key)
            .customize()
            .config_override(sized())
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }

    async fn move_stage(
        &self,
        secret_id: &str,
        stage: &str,
        to_version: Option<&str>,
        from_version: Option<&str>,
    ) -> Result<(), StoreError> {
        self.client
            .update_secret_version_stage()
            .secret_id(secret_id)
            .version_stage(stage)
            .set_move_to_version_id(to_version.map(str::to_string))
            .set_remove_from_version_id(from_version.map(str::to_string))
            .customize()
            .config_override(sized())
            .send()
            .await
            .map_err(store_error)?;
        Ok(())
    }
}

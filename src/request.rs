//! The request and result objects of SPEC section 3, and their validation.
//!
//! Requests are parsed by hand from a JSON value rather than with
//! `#[serde(deny_unknown_fields)]`: the contract wants errors that name the
//! field and say what was expected, and a `model_id` that may be a string or
//! an integer. Everything here runs before any network call.

use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::Config;
use crate::error::Error;
use crate::sensitive::{ApiKey, TaskToken};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialType {
    Train,
    Retrain,
    Deploy,
}

impl CredentialType {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialType::Train => "train",
            CredentialType::Retrain => "retrain",
            CredentialType::Deploy => "deploy",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "train" => Some(CredentialType::Train),
            "retrain" => Some(CredentialType::Retrain),
            "deploy" => Some(CredentialType::Deploy),
            _ => None,
        }
    }
}

/// The model API a retrain key is for: 1–64 characters of `[A-Za-z0-9_-]`.
/// The pattern is what keeps a model_id from steering a write outside the
/// retrain prefix (no `/`, `..`, or ARN syntax can pass it).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ModelId(String);

impl ModelId {
    pub const MAX_LEN: usize = 64;

    pub fn parse(value: &str) -> Option<Self> {
        let ok = !value.is_empty()
            && value.len() <= Self::MAX_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        ok.then(|| ModelId(value.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What a key is for: the two query parameters of the vendor call.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Credential {
    pub credential_type: CredentialType,
    pub model_id: Option<ModelId>,
}

impl Credential {
    pub fn new(credential_type: CredentialType, model_id: Option<ModelId>) -> Self {
        Credential {
            credential_type,
            model_id,
        }
    }
}

/// A validated request.
#[derive(Debug, Clone)]
pub struct KeyRequest {
    pub credential: Credential,
    pub target_secret_id: String,
    pub force: bool,
    pub task_token: Option<TaskToken>,
    pub include_key: bool,
}

const FIELDS: &str = "credential_type, model_id, target_secret_id, force, task_token, include_key";
const MAX_SECRET_ID_LEN: usize = 2048;
const MAX_SECRET_NAME_LEN: usize = 512;
const MAX_TASK_TOKEN_LEN: usize = 2048;

impl KeyRequest {
    /// Validates a request object against the contract and the configuration.
    pub fn from_value(value: &Value, config: &Config) -> Result<Self, Error> {
        let Value::Object(fields) = value else {
            return Err(Error::invalid(format!(
                "a request must be a JSON object with {FIELDS}; got {}",
                json_kind(value)
            )));
        };
        if let Some(unknown) = fields
            .keys()
            .find(|k| !FIELDS.split(", ").any(|f| f == k.as_str()))
        {
            return Err(Error::invalid(format!(
                "unknown field `{unknown}`; a request has only {FIELDS}"
            )));
        }

        let credential_type = match present(fields, "credential_type") {
            None => {
                return Err(Error::invalid(
                    "credential_type is required: \"train\", \"retrain\" or \"deploy\"",
                ));
            }
            Some(Value::String(s)) => CredentialType::parse(s).ok_or_else(|| {
                Error::invalid(format!(
                    "credential_type must be \"train\", \"retrain\" or \"deploy\"; got {s:?}"
                ))
            })?,
            Some(other) => {
                return Err(Error::invalid(format!(
                    "credential_type must be a string; got {}",
                    json_kind(other)
                )));
            }
        };

        let model_id = match present(fields, "model_id") {
            None => None,
            Some(v) => Some(parse_model_id(v)?),
        };
        match (credential_type, &model_id) {
            (CredentialType::Retrain, None) => {
                return Err(Error::invalid(
                    "model_id is required when credential_type is \"retrain\"",
                ));
            }
            (CredentialType::Train | CredentialType::Deploy, Some(_)) => {
                return Err(Error::invalid(format!(
                    "model_id is only accepted when credential_type is \"retrain\", not {:?}",
                    credential_type.as_str()
                )));
            }
            _ => {}
        }

        let target_secret_id = match present(fields, "target_secret_id") {
            None => config.default_target(credential_type, model_id.as_ref()),
            Some(Value::String(s)) if is_secret_id(s) => s.clone(),
            Some(_) => {
                return Err(Error::invalid(format!(
                    "target_secret_id must be a secret name (1 to {MAX_SECRET_NAME_LEN} of A-Z a-z 0-9 / _ + = . @ -) or a secret ARN of at most {MAX_SECRET_ID_LEN} characters"
                )));
            }
        };
        // Writing an API key record over the secret key would destroy it.
        if target_secret_id == config.secret_key_secret_id {
            return Err(Error::invalid(
                "target_secret_id must not be the secret that holds the Prediction One secret key",
            ));
        }

        let task_token = match present(fields, "task_token") {
            None => None,
            Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_TASK_TOKEN_LEN => {
                Some(TaskToken::new(s.clone()))
            }
            Some(_) => {
                return Err(Error::invalid(format!(
                    "task_token must be a Step Functions task token (a string of 1 to {MAX_TASK_TOKEN_LEN} characters)"
                )));
            }
        };

        let force = parse_bool(fields, "force")?;
        let include_key = parse_bool(fields, "include_key")?;
        if include_key && !config.allow_key_in_output {
            return Err(Error::invalid(
                "include_key is refused: this function is not configured to return API keys (P1_ALLOW_KEY_IN_OUTPUT=false)",
            ));
        }

        Ok(KeyRequest {
            credential: Credential::new(credential_type, model_id),
            target_secret_id,
            force,
            task_token,
            include_key,
        })
    }
}

/// A Secrets Manager secret name, or an ARN of one (the characters
/// Secrets Manager allows; anything else could only fail later, or name the
/// same secret in a way the secret-key check would not recognise).
fn is_secret_id(s: &str) -> bool {
    let name_char = |b: u8| b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b);
    if let Some(rest) = s.strip_prefix("arn:") {
        s.len() <= MAX_SECRET_ID_LEN
            && !rest.is_empty()
            && rest.bytes().all(|b| name_char(b) || b == b':')
    } else {
        !s.is_empty() && s.len() <= MAX_SECRET_NAME_LEN && s.bytes().all(name_char)
    }
}

/// A field that is present and not `null` (Step Functions templates often
/// pass `null` for an unused field).
fn present<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    fields.get(name).filter(|v| !v.is_null())
}

fn parse_bool(fields: &Map<String, Value>, name: &str) -> Result<bool, Error> {
    match present(fields, name) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(Error::invalid(format!(
            "{name} must be true or false; got {}",
            json_kind(other)
        ))),
    }
}

/// Integers above this lose precision as JSON floats.
const MAX_EXACT_FLOAT: f64 = 9_007_199_254_740_992.0;

fn parse_model_id(value: &Value) -> Result<ModelId, Error> {
    let text = match value {
        Value::String(s) => s.clone(),
        // The vendor's model ids are non-negative integers; a template
        // engine may render one as 42.0.
        Value::Number(n) if n.is_u64() => n.to_string(),
        Value::Number(n)
            if n.as_f64()
                .is_some_and(|f| f >= 0.0 && f.fract() == 0.0 && f <= MAX_EXACT_FLOAT) =>
        {
            format!("{}", n.as_f64().unwrap_or_default() as u64)
        }
        Value::Number(_) => {
            return Err(Error::invalid(
                "model_id must be a non-negative integer or a string",
            ));
        }
        other => {
            return Err(Error::invalid(format!(
                "model_id must be a string or an integer; got {}",
                json_kind(other)
            )));
        }
    };
    ModelId::parse(&text).ok_or_else(|| {
        Error::invalid(format!(
            "model_id must be 1 to {} characters of A-Z, a-z, 0-9, '_' or '-'",
            ModelId::MAX_LEN
        ))
    })
}

pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// A new key was fetched and stored.
    Issued,
    /// The stored key is still valid; nothing was fetched.
    Fresh,
}

/// The result object: a reference to the stored key, never the key itself
/// (but under an allowed `include_key`).
#[derive(Debug, Clone, Serialize)]
pub struct KeyResult {
    pub status: Status,
    pub credential_type: CredentialType,
    pub model_id: Option<ModelId>,
    pub secret_arn: String,
    pub version_id: String,
    pub end_date: String,
    pub expires_at: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "expose_api_key"
    )]
    pub api_key: Option<ApiKey>,
}

fn expose_api_key<S: serde::Serializer>(key: &Option<ApiKey>, s: S) -> Result<S::Ok, S::Error> {
    match key {
        Some(k) => s.serialize_str(k.expose()),
        None => s.serialize_none(),
    }
}

impl KeyResult {
    /// The same result as it may be published: without the API key.
    pub fn without_key(&self) -> KeyResult {
        KeyResult {
            api_key: None,
            ..self.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(allow_key: bool) -> Config {
        Config::from_lookup(|name| {
            Ok(match name {
                "P1_SECRET_KEY_SECRET_ID" => Some("p1/secret-key".into()),
                "P1_ALLOW_KEY_IN_OUTPUT" => Some(allow_key.to_string()),
                _ => None,
            })
        })
        .unwrap()
    }

    fn parse(v: Value) -> Result<KeyRequest, Error> {
        KeyRequest::from_value(&v, &config(false))
    }

    fn rejected(v: Value) -> String {
        let e = parse(v).unwrap_err();
        assert_eq!(e.error_type(), "InvalidRequest");
        e.to_string()
    }

    #[test]
    fn defaults_pick_the_configured_targets() {
        let r = parse(json!({"credential_type": "train"})).unwrap();
        assert_eq!(r.target_secret_id, "prediction-one/api-key/train");
        assert!(!r.force && !r.include_key && r.task_token.is_none());
        let r = parse(json!({"credential_type": "deploy"})).unwrap();
        assert_eq!(r.target_secret_id, "prediction-one/api-key/deploy");
        for (given, want) in [
            (json!(42), "42"),
            (json!(42.0), "42"),
            (json!("0042"), "0042"),
        ] {
            let r = parse(json!({"credential_type": "retrain", "model_id": given})).unwrap();
            assert_eq!(r.credential.model_id.unwrap().as_str(), want);
        }
        for bad in [json!(-7), json!(4.5), json!(1e300)] {
            assert!(
                rejected(json!({"credential_type": "retrain", "model_id": bad}))
                    .contains("model_id")
            );
        }
        let r = parse(json!({"credential_type": "retrain", "model_id": 42})).unwrap();
        assert_eq!(r.target_secret_id, "prediction-one/api-key/retrain/42");
        assert_eq!(r.credential.model_id.unwrap().as_str(), "42");
    }

    #[test]
    fn unknown_fields_are_named() {
        assert!(rejected(json!({"credentialType": "train"})).contains("`credentialType`"));
        assert!(rejected(json!({"credential_type": "train", "forse": true})).contains("`forse`"));
    }

    #[test]
    fn credential_type_and_model_id_rules() {
        assert!(rejected(json!({})).contains("credential_type is required"));
        assert!(rejected(json!({"credential_type": "Train"})).contains("\"Train\""));
        assert!(rejected(json!({"credential_type": 1})).contains("a number"));
        assert!(rejected(json!({"credential_type": "retrain"})).contains("model_id is required"));
        assert!(
            rejected(json!({"credential_type": "train", "model_id": "1"}))
                .contains("only accepted")
        );
        for bad in [
            json!("../train"),
            json!("a/b"),
            json!(""),
            json!("x".repeat(65)),
            json!(1.5),
            json!(true),
            json!("arn:aws:x"),
        ] {
            let msg = rejected(json!({"credential_type": "retrain", "model_id": bad}));
            assert!(msg.contains("model_id"), "{msg}");
        }
        let r = parse(json!({"credential_type": "retrain", "model_id": "A-z_09".to_string() + &"x".repeat(58)})).unwrap();
        assert_eq!(r.credential.model_id.unwrap().as_str().len(), 64);
    }

    #[test]
    fn nulls_count_as_absent() {
        let r = parse(json!({"credential_type": "train", "model_id": null, "force": null, "task_token": null})).unwrap();
        assert!(r.credential.model_id.is_none() && !r.force);
    }

    #[test]
    fn include_key_needs_the_switch() {
        assert!(
            rejected(json!({"credential_type": "train", "include_key": true}))
                .contains("P1_ALLOW_KEY_IN_OUTPUT")
        );
        let r = KeyRequest::from_value(
            &json!({"credential_type": "train", "include_key": true}),
            &config(true),
        )
        .unwrap();
        assert!(r.include_key);
    }

    #[test]
    fn other_fields_are_typed() {
        assert!(rejected(json!({"credential_type": "train", "force": "yes"})).contains("force"));
        assert!(
            rejected(json!({"credential_type": "train", "task_token": 5})).contains("task_token")
        );
        assert!(
            rejected(json!({"credential_type": "train", "target_secret_id": ""}))
                .contains("target_secret_id")
        );
        assert!(
            rejected(json!({"credential_type": "train", "target_secret_id": "x".repeat(2049)}))
                .contains("target_secret_id")
        );
        assert!(
            rejected(json!({"credential_type": "train", "target_secret_id": "p1/secret-key"}))
                .contains("secret key")
        );
        for bad in [
            "p1/secret-key ",
            " p1/x",
            "a b",
            &"x".repeat(513),
            "arn:",
            "arn:aws:secretsmanager:x:1:secret:a b",
        ] {
            assert!(
                rejected(json!({"credential_type": "train", "target_secret_id": bad}))
                    .contains("target_secret_id"),
                "{bad:?}"
            );
        }
        let arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:team/p1-key-AbCdEf";
        assert_eq!(
            parse(json!({"credential_type": "train", "target_secret_id": arn}))
                .unwrap()
                .target_secret_id,
            arn
        );
        assert!(rejected(json!(["train"])).contains("an array"));
        let r = parse(
            json!({"credential_type": "train", "target_secret_id": "team/p1", "force": true}),
        )
        .unwrap();
        assert_eq!(r.target_secret_id, "team/p1");
        assert!(r.force);
    }

    #[test]
    fn task_token_is_never_printed() {
        let r = parse(json!({"credential_type": "train", "task_token": "TOKEN-SENTINEL"})).unwrap();
        assert!(!format!("{r:?}").contains("TOKEN-SENTINEL"));
    }

    #[test]
    fn result_carries_the_key_only_when_set() {
        let mut result = KeyResult {
            status: Status::Issued,
            credential_type: CredentialType::Retrain,
            model_id: ModelId::parse("42"),
            secret_arn: "arn".into(),
            version_id: "v1".into(),
            end_date: "2030-01-01".into(),
            expires_at: None,
            api_key: None,
        };
        let v = serde_json::to_value(&result).unwrap();
        assert_eq!(
            v,
            json!({"status": "issued", "credential_type": "retrain", "model_id": "42",
            "secret_arn": "arn", "version_id": "v1", "end_date": "2030-01-01", "expires_at": null})
        );
        result.api_key = Some(ApiKey::new("AK-SENTINEL"));
        assert_eq!(
            serde_json::to_value(&result).unwrap()["api_key"],
            "AK-SENTINEL"
        );
        assert!(!format!("{result:?}").contains("AK-SENTINEL"));
        assert!(
            serde_json::to_value(result.without_key())
                .unwrap()
                .get("api_key")
                .is_none()
        );
    }
}

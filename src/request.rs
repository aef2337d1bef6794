//! The request and result objects of SPEC section 3, and their validation.
//!
//! Requests are parsed by hand from a JSON value rather than with
//! `#[serde(deny_unknown_fields)]`: the contract wants errors that name the
//! field and say what was expected, and a `model_id` that may be a string or
//! an integer. Everything here runs before any network call.
//!
//! [`Served`] is the one place an API key can leave the function: its
//! [`Served::output`] adds the key only under an allowed `include_key`.

use serde_json::{Map, Value, json};

use crate::config::Config;
use crate::credential::{Credential, CredentialType, ModelId, Status};
use crate::error::Error;
use crate::secret_id;
use crate::sensitive::{ApiKey, TaskToken};

/// The fields of a request object; anything else is refused by name.
pub const FIELDS: &[&str] = &[
    "credential_type",
    "model_id",
    "target_secret_id",
    "force",
    "task_token",
    "include_key",
];

const MAX_TASK_TOKEN_LEN: usize = 2048;

/// A validated request.
#[derive(Debug, Clone)]
pub struct KeyRequest {
    pub credential: Credential,
    pub target_secret_id: String,
    pub force: bool,
    pub task_token: Option<TaskToken>,
    pub include_key: bool,
}

/// A request that failed validation, with what could still be read from it:
/// its task token, so Step Functions hears about the failure instead of
/// waiting for its timeout, and its credential type, for the metric.
pub struct Rejected {
    pub error: Error,
    pub task_token: Option<TaskToken>,
    pub credential_type: Option<CredentialType>,
}

impl Rejected {
    /// A failure of the (unvalidated) request `raw`: keeps its task token
    /// and credential type when they can be read.
    pub fn of(error: Error, raw: &Value) -> Self {
        Rejected {
            error,
            task_token: raw_str(raw, "task_token")
                .filter(|t| !t.is_empty())
                .map(TaskToken::new),
            credential_type: raw_str(raw, "credential_type").and_then(CredentialType::parse),
        }
    }

    /// A failure that has no request to read anything from.
    pub fn bare(error: Error) -> Self {
        Rejected {
            error,
            task_token: None,
            credential_type: None,
        }
    }
}

impl KeyRequest {
    /// Validates a request object against the contract and the configuration.
    pub fn parse(value: &Value, config: &Config) -> Result<Self, Rejected> {
        Self::validate(value, config).map_err(|error| Rejected::of(error, value))
    }

    fn validate(value: &Value, config: &Config) -> Result<Self, Error> {
        // Only an error message needs the list in words.
        let listed = || FIELDS.join(", ");
        let Value::Object(fields) = value else {
            return Err(Error::invalid(format!(
                "a request must be a JSON object with {}; got {}",
                listed(),
                json_kind(value)
            )));
        };
        if let Some(unknown) = fields.keys().find(|k| !FIELDS.contains(&k.as_str())) {
            return Err(Error::invalid(format!(
                "unknown field `{unknown}`; a request has only {}",
                listed()
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
            Some(Value::String(s)) if secret_id::is_valid(s) => {
                if let Some(whose) = config.crossed_target(credential_type, model_id.as_ref(), s) {
                    return Err(Error::invalid(format!(
                        "target_secret_id {s:?} is {whose}; a {} key may not be written there (leave target_secret_id out for the configured target)",
                        credential_type.as_str()
                    )));
                }
                s.clone()
            }
            Some(_) => {
                return Err(Error::invalid(format!(
                    "target_secret_id must be {}",
                    secret_id::RULE
                )));
            }
        };
        // Writing an API key record over the secret key would destroy it.
        if config.is_secret_key_secret(&target_secret_id) {
            return Err(Error::invalid(
                "target_secret_id must not be the secret that holds the Prediction One secret key",
            ));
        }

        let task_token = parse_task_token(fields)?;

        let force = json_flag(fields, "force")?;
        let include_key = json_flag(fields, "include_key")?;
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

/// The optional `task_token` field.
pub(crate) fn parse_task_token(fields: &Map<String, Value>) -> Result<Option<TaskToken>, Error> {
    match present(fields, "task_token") {
        None => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= MAX_TASK_TOKEN_LEN => {
            Ok(Some(TaskToken::new(s.clone())))
        }
        Some(_) => Err(Error::invalid(format!(
            "task_token must be a Step Functions task token (a string of 1 to {MAX_TASK_TOKEN_LEN} characters)"
        ))),
    }
}

/// A field that is present and not `null` (Step Functions templates often
/// pass `null` for an unused field).
pub(crate) fn present<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    fields.get(name).filter(|v| !v.is_null())
}

/// A JSON boolean field (boolean environment variables are read in
/// `config`).
pub(crate) fn json_flag(fields: &Map<String, Value>, name: &str) -> Result<bool, Error> {
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

pub(crate) fn parse_model_id(value: &Value) -> Result<ModelId, Error> {
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

/// A string field of an unvalidated request, or of an envelope's detail.
fn raw_str<'a>(request: &'a Value, name: &str) -> Option<&'a str> {
    request
        .get("detail")
        .unwrap_or(request)
        .get(name)
        .and_then(Value::as_str)
}

/// The result object: a reference to the stored key, never the key itself.
#[derive(Debug, Clone)]
pub struct KeyResult {
    pub status: Status,
    pub credential_type: CredentialType,
    pub model_id: Option<ModelId>,
    pub secret_arn: String,
    pub version_id: String,
    pub end_date: String,
    pub expires_at: Option<String>,
    /// A key was issued for this request, but another renewal of the target
    /// stored first: this answer names the winner's version (`fresh`), and
    /// says that its own key was discarded.
    pub discarded: bool,
}

impl KeyResult {
    /// The result object as published (results, task output, announcements).
    pub fn to_json(&self) -> Value {
        let mut out = json!({
            "status": self.status.as_str(),
            "credential_type": self.credential_type.as_str(),
            "model_id": self.model_id.as_ref().map(ModelId::as_str),
            "secret_arn": self.secret_arn,
            "version_id": self.version_id,
            "end_date": self.end_date,
            "expires_at": self.expires_at,
        });
        if self.discarded {
            out["discarded"] = Value::Bool(true);
        }
        out
    }
}

/// A served request: the result, and the key it refers to, which only
/// [`Served::output`] may let out.
#[derive(Debug, Clone)]
pub struct Served {
    pub result: KeyResult,
    pub api_key: ApiKey,
    /// Time spent in vendor calls, when the key was fetched now.
    pub vendor_latency_ms: Option<u64>,
}

impl Served {
    /// The result object as the caller asked for it: with `api_key` only
    /// under an allowed `include_key` (validated in [`KeyRequest::parse`]).
    pub fn output(&self, include_key: bool) -> Value {
        let mut output = self.result.to_json();
        if include_key {
            output["api_key"] = Value::String(self.api_key.expose().to_string());
        }
        output
    }

    /// Counts it (`KeysIssued` or `KeysFresh`, `SecondsUntilExpiry`,
    /// `VendorLatencyMs`).
    pub fn count(&self) {
        crate::metrics::key_served(
            self.result.credential_type,
            self.result.status,
            self.result.expires_at.as_deref(),
            self.vendor_latency_ms,
        );
    }

    /// The same key served again, as `fresh`: nothing fetched.
    pub fn as_fresh(&self) -> Served {
        Served {
            result: KeyResult {
                status: Status::Fresh,
                ..self.result.clone()
            },
            api_key: self.api_key.clone(),
            vendor_latency_ms: None,
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
        KeyRequest::parse(&v, &config(false)).map_err(|r| r.error)
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
        let Ok(r) = KeyRequest::parse(
            &json!({"credential_type": "train", "include_key": true}),
            &config(true),
        ) else {
            panic!("include_key refused although allowed")
        };
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
    fn a_target_of_another_credential_is_refused() {
        let arn = |name: &str| {
            format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbCdEf")
        };
        for (request, whose) in [
            (
                json!({"credential_type": "deploy", "target_secret_id": "prediction-one/api-key/train"}),
                "train key's target",
            ),
            (
                json!({"credential_type": "deploy", "target_secret_id": arn("prediction-one/api-key/train")}),
                "train key's target",
            ),
            (
                json!({"credential_type": "train", "target_secret_id": "prediction-one/api-key/deploy"}),
                "deploy key's target",
            ),
            (
                json!({"credential_type": "retrain", "model_id": 7, "target_secret_id": "prediction-one/api-key/train"}),
                "train key's target",
            ),
            (
                json!({"credential_type": "retrain", "model_id": 7, "target_secret_id": "prediction-one/api-key/retrain/42"}),
                "model \"42\"",
            ),
            (
                json!({"credential_type": "retrain", "model_id": 7, "target_secret_id": arn("prediction-one/api-key/retrain/42")}),
                "model \"42\"",
            ),
            (
                json!({"credential_type": "train", "target_secret_id": "prediction-one/api-key/retrain/7"}),
                "model \"7\"",
            ),
            (
                json!({"credential_type": "retrain", "model_id": 7, "target_secret_id": "prediction-one/api-key/retrain/7/x"}),
                "retrain key target",
            ),
        ] {
            let msg = rejected(request.clone());
            assert!(msg.contains(whose), "{request}: {msg}");
        }
        for (request, target) in [
            (
                json!({"credential_type": "train", "target_secret_id": arn("prediction-one/api-key/train")}),
                arn("prediction-one/api-key/train"),
            ),
            (
                json!({"credential_type": "retrain", "model_id": "7", "target_secret_id": "prediction-one/api-key/retrain/7"}),
                "prediction-one/api-key/retrain/7".to_string(),
            ),
            (
                json!({"credential_type": "retrain", "model_id": 7, "target_secret_id": arn("prediction-one/api-key/retrain/7")}),
                arn("prediction-one/api-key/retrain/7"),
            ),
            (
                json!({"credential_type": "deploy", "target_secret_id": "team/deploy-key"}),
                "team/deploy-key".to_string(),
            ),
        ] {
            assert_eq!(parse(request).unwrap().target_secret_id, target);
        }
    }

    #[test]
    fn task_token_is_never_printed() {
        let r = parse(json!({"credential_type": "train", "task_token": "TOKEN-SENTINEL"})).unwrap();
        assert!(!format!("{r:?}").contains("TOKEN-SENTINEL"));
    }

    #[test]
    fn a_rejected_request_keeps_its_token_and_credential_type() {
        let Err(r) = KeyRequest::parse(
            &json!({"credential_type": "deploy", "task_token": "TT", "forse": true}),
            &config(false),
        ) else {
            panic!("accepted an unknown field")
        };
        assert_eq!(r.error.error_type(), "InvalidRequest");
        assert_eq!(r.task_token.unwrap().expose(), "TT");
        assert_eq!(r.credential_type, Some(CredentialType::Deploy));
    }

    #[test]
    fn result_carries_the_key_only_when_asked() {
        let served = Served {
            result: KeyResult {
                status: Status::Issued,
                credential_type: CredentialType::Retrain,
                model_id: ModelId::parse("42"),
                secret_arn: "arn".into(),
                version_id: "v1".into(),
                end_date: "2030-01-01".into(),
                expires_at: None,
                discarded: false,
            },
            api_key: ApiKey::new("AK-SENTINEL"),
            vendor_latency_ms: None,
        };
        assert_eq!(
            served.output(false),
            json!({"status": "issued", "credential_type": "retrain", "model_id": "42",
            "secret_arn": "arn", "version_id": "v1", "end_date": "2030-01-01", "expires_at": null})
        );
        assert_eq!(served.output(true)["api_key"], "AK-SENTINEL");
        assert!(!served.result.to_json().to_string().contains("AK-SENTINEL"));
        assert!(!format!("{served:?}").contains("AK-SENTINEL"));
        assert_eq!(served.as_fresh().output(false)["status"], "fresh");
    }
}

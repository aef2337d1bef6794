//! The retrain runner's requests (SPEC section 11) and their validation.
//!
//! One object per action; each may carry `task_token`; a field that its
//! action does not take is refused by name, as the key broker's requests
//! are. Everything here runs before any network call, including the
//! checks on the data file's name (`DataUnavailable`) and on where its
//! model comes from.

use serde_json::{Map, Value};

use crate::config::Config;
use crate::credential::ModelId;
use crate::error::{Context, Error};
use crate::request::{Rejected, json_kind, parse_model_id, parse_task_token, present};
use crate::sensitive::TaskToken;

/// The extensions Prediction One takes for retraining data.
const DATA_EXTENSIONS: &[&str] = &[".csv", ".zip"];
const MAX_JOB_ID_LEN: usize = 256;
/// S3's limit for a key.
const MAX_KEY_LEN: usize = 1024;

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create a job and upload `s3://bucket/key` (of `version_id`, else the
    /// current version; the key as given, or URL-decoded as S3 events
    /// write keys) to it, once per object version.
    Start {
        bucket: String,
        key: String,
        version_id: Option<String>,
        model_id: ModelId,
    },
    Status {
        model_id: ModelId,
        retrain_job_id: String,
    },
    /// Save a finished job's results as `s3://bucket/key`.
    SaveResults {
        model_id: ModelId,
        retrain_job_id: String,
        bucket: String,
        key: String,
    },
    SwitchModel {
        model_id: ModelId,
        retrain_job_id: String,
    },
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Start { .. } => "start",
            Action::Status { .. } => "status",
            Action::SaveResults { .. } => "save_results",
            Action::SwitchModel { .. } => "switch_model",
        }
    }

    /// What the action is about, for a log line: the model and the object
    /// or the job (names and ids only: never data, never a URL).
    pub fn subject(&self) -> String {
        match self {
            Action::Start {
                bucket,
                key,
                version_id,
                model_id,
            } => format!(
                "model {} object s3://{bucket}/{key}{}",
                model_id.as_str(),
                version_id
                    .as_deref()
                    .map(|v| format!(" version {v}"))
                    .unwrap_or_default()
            ),
            Action::SaveResults {
                model_id,
                retrain_job_id,
                bucket,
                key,
            } => format!(
                "model {} job {retrain_job_id} results s3://{bucket}/{key}",
                model_id.as_str()
            ),
            Action::Status {
                model_id,
                retrain_job_id,
            }
            | Action::SwitchModel {
                model_id,
                retrain_job_id,
            } => format!("model {} job {retrain_job_id}", model_id.as_str()),
        }
    }

    /// Whether the action moves a file (and heartbeats while it does).
    pub fn is_transfer(&self) -> bool {
        matches!(self, Action::Start { .. } | Action::SaveResults { .. })
    }

    pub fn model_id(&self) -> &ModelId {
        match self {
            Action::Start { model_id, .. }
            | Action::Status { model_id, .. }
            | Action::SaveResults { model_id, .. }
            | Action::SwitchModel { model_id, .. } => model_id,
        }
    }
}

/// A validated request.
#[derive(Debug, Clone)]
pub struct RetrainRequest {
    pub action: Action,
    pub task_token: Option<TaskToken>,
}

/// The fields each action takes, besides `action` and `task_token`.
fn fields_of(action: &str) -> Option<&'static [&'static str]> {
    Some(match action {
        "start" => &["bucket", "key", "model_id", "version_id"],
        "status" | "switch_model" => &["model_id", "retrain_job_id"],
        "save_results" => &["model_id", "retrain_job_id", "bucket", "key"],
        _ => return None,
    })
}

const ACTIONS: &str = "\"start\", \"status\", \"save_results\" or \"switch_model\"";

impl RetrainRequest {
    pub fn parse(value: &Value, config: &Config) -> Result<Self, Rejected> {
        Self::validate(value, config).map_err(|error| Rejected::of(error, value))
    }

    fn validate(value: &Value, config: &Config) -> Result<Self, Error> {
        let Value::Object(fields) = value else {
            return Err(Error::invalid(format!(
                "a retrain request must be a JSON object with an action ({ACTIONS}); got {}",
                json_kind(value)
            )));
        };
        let action = match present(fields, "action") {
            Some(Value::String(a)) => a.as_str(),
            Some(other) => {
                return Err(Error::invalid(format!(
                    "action must be a string ({ACTIONS}); got {}",
                    json_kind(other)
                )));
            }
            None => return Err(Error::invalid(format!("action is required: {ACTIONS}"))),
        };
        let Some(allowed) = fields_of(action) else {
            return Err(Error::invalid(format!(
                "action must be {ACTIONS}; got {action:?}"
            )));
        };
        if let Some(unknown) = fields.keys().find(|k| {
            !matches!(k.as_str(), "action" | "task_token") && !allowed.contains(&k.as_str())
        }) {
            return Err(Error::invalid(format!(
                "unknown field `{unknown}`; action {action:?} takes {}, and task_token",
                allowed.join(", ")
            )));
        }
        let task_token = parse_task_token(fields)?;
        let action = match action {
            "start" => start(fields, config)?,
            "status" => Action::Status {
                model_id: required_model(fields)?,
                retrain_job_id: job_id(fields)?,
            },
            "switch_model" => Action::SwitchModel {
                model_id: required_model(fields)?,
                retrain_job_id: job_id(fields)?,
            },
            _ => {
                let key = object_key(fields)?;
                // Results written under the data prefix would start another
                // retraining of their own, and another, ...
                if key.starts_with(&config.retrain_data_prefix) {
                    return Err(Error::invalid(format!(
                        "key must not be under P1_RETRAIN_DATA_PREFIX ({:?}): the results would trigger another retraining",
                        config.retrain_data_prefix
                    )));
                }
                Action::SaveResults {
                    model_id: required_model(fields)?,
                    retrain_job_id: job_id(fields)?,
                    bucket: bucket(fields)?,
                    key,
                }
            }
        };
        Ok(RetrainRequest { action, task_token })
    }
}

fn start(fields: &Map<String, Value>, config: &Config) -> Result<Action, Error> {
    let bucket = bucket(fields)?;
    let key = object_key(fields)?;
    let version_id = version_id(fields)?;
    let given = present(fields, "model_id")
        .map(parse_model_id)
        .transpose()?;
    let prefix = &config.retrain_data_prefix;
    // The key as S3's events write it may be URL-encoded: its model and
    // its name are read from the decoded key when the key as given does
    // not say them (the object itself is found in `objects`).
    let decoded = crate::objects::decoded_key(&key);
    let named = match &decoded {
        Some(d) if !key.starts_with(prefix.as_str()) && d.starts_with(prefix.as_str()) => d,
        _ => &key,
    };
    let from_key = match named.strip_prefix(prefix.as_str()) {
        Some(rest) => {
            let segment = rest.split('/').next().unwrap_or_default();
            if rest.contains('/') {
                Some(ModelId::parse(segment).ok_or_else(|| {
                    Error::invalid(format!(
                        "the key's segment after {prefix:?} must be a model_id (1 to {} characters of A-Z, a-z, 0-9, '_' or '-'); got {segment:?}",
                        ModelId::MAX_LEN
                    ))
                })?)
            } else {
                None
            }
        }
        None => None,
    };
    let model_id = match (given, from_key) {
        (Some(given), Some(from_key)) if given != from_key => {
            return Err(Error::invalid(format!(
                "model_id {:?} does not match the model {:?} that the key names (the segment after {prefix:?})",
                given.as_str(),
                from_key.as_str()
            )));
        }
        (Some(model_id), _) | (None, Some(model_id)) => model_id,
        (None, None) => {
            return Err(Error::invalid(format!(
                "model_id is required when the key is not {prefix}<model_id>/<file>"
            )));
        }
    };
    if !is_data_file(&key) && !decoded.as_deref().is_some_and(is_data_file) {
        return Err(not_data(&bucket, &key));
    }
    Ok(Action::Start {
        bucket,
        key,
        version_id,
        model_id,
    })
}

/// Whether a key names a file Prediction One retrains from: its last
/// segment ends in `.csv` or `.zip` (any case) and is more than that.
pub fn is_data_file(key: &str) -> bool {
    let lower = file_name(key).to_ascii_lowercase();
    DATA_EXTENSIONS
        .iter()
        .any(|ext| lower.len() > ext.len() && lower.ends_with(ext))
}

/// The last segment of a key: the file name the vendor is given.
pub fn file_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or_default()
}

/// The error for a key that names no data file.
pub fn not_data(bucket: &str, key: &str) -> Error {
    Error::DataUnavailable(Context::new(
        format!(
            "s3://{bucket}/{key} is not a .csv or .zip file: Prediction One retrains from one CSV, or a zip of train_src/ and eval_src/ CSVs"
        ),
        None,
    ))
}

/// S3's limit for a version id.
const MAX_VERSION_LEN: usize = 1024;

/// The optional `version_id`: an S3 object version id (S3's "null" is the
/// version of an object in a bucket without versioning: no version).
fn version_id(fields: &Map<String, Value>) -> Result<Option<String>, Error> {
    match present(fields, "version_id") {
        None => Ok(None),
        Some(Value::String(v)) if v == "null" => Ok(None),
        Some(Value::String(v))
            if !v.is_empty()
                && v.len() <= MAX_VERSION_LEN
                && !v.chars().any(|c| c.is_control() || c.is_whitespace()) =>
        {
            Ok(Some(v.clone()))
        }
        Some(_) => Err(Error::invalid(format!(
            "version_id must be an S3 object version id (1 to {MAX_VERSION_LEN} characters without spaces or control characters)"
        ))),
    }
}

fn required_model(fields: &Map<String, Value>) -> Result<ModelId, Error> {
    match present(fields, "model_id") {
        Some(v) => parse_model_id(v),
        None => Err(Error::invalid("model_id is required")),
    }
}

fn job_id(fields: &Map<String, Value>) -> Result<String, Error> {
    let text = match present(fields, "retrain_job_id") {
        None => return Err(Error::invalid("retrain_job_id is required")),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) if n.is_u64() => n.to_string(),
        Some(other) => {
            return Err(Error::invalid(format!(
                "retrain_job_id must be a string; got {}",
                json_kind(other)
            )));
        }
    };
    // `.` and `..` would vanish from the URL path they go into.
    if text.is_empty()
        || text.len() > MAX_JOB_ID_LEN
        || text.chars().any(char::is_control)
        || text == "."
        || text == ".."
    {
        return Err(Error::invalid(format!(
            "retrain_job_id must be 1 to {MAX_JOB_ID_LEN} characters without control characters (and not \".\" or \"..\")"
        )));
    }
    Ok(text)
}

/// An S3 bucket name: 3 to 63 of `a-z 0-9 . -`, starting and ending with a
/// letter or digit.
fn bucket(fields: &Map<String, Value>) -> Result<String, Error> {
    let rule = "bucket must be an S3 bucket name (3 to 63 characters of a-z, 0-9, '.' and '-', starting and ending with a letter or digit)";
    match present(fields, "bucket") {
        Some(Value::String(b))
            if (3..=63).contains(&b.len())
                && b.bytes().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-'
                })
                && b.starts_with(|c: char| c.is_ascii_alphanumeric())
                && b.ends_with(|c: char| c.is_ascii_alphanumeric()) =>
        {
            Ok(b.clone())
        }
        None => Err(Error::invalid("bucket is required")),
        Some(_) => Err(Error::invalid(rule)),
    }
}

fn object_key(fields: &Map<String, Value>) -> Result<String, Error> {
    match present(fields, "key") {
        Some(Value::String(k))
            if !k.is_empty() && k.len() <= MAX_KEY_LEN && !k.chars().any(char::is_control) =>
        {
            Ok(k.clone())
        }
        None => Err(Error::invalid("key is required")),
        Some(_) => Err(Error::invalid(format!(
            "key must be an S3 object key (1 to {MAX_KEY_LEN} bytes without control characters)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn config() -> Config {
        Config::from_lookup(|name| {
            Ok((name == "P1_SECRET_KEY_SECRET_ID").then(|| "p1/secret-key".to_string()))
        })
        .unwrap()
    }

    fn parse(v: Value) -> Result<RetrainRequest, Error> {
        RetrainRequest::parse(&v, &config()).map_err(|r| r.error)
    }

    fn start_of(v: Value) -> (String, ModelId) {
        match parse(v).unwrap().action {
            Action::Start { key, model_id, .. } => (file_name(&key).to_string(), model_id),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn start_takes_its_model_from_the_key() {
        let (file, model) =
            start_of(json!({"action": "start", "bucket": "data-1", "key": "retrain/42/new.csv"}));
        assert_eq!((file.as_str(), model.as_str()), ("new.csv", "42"));
        let (file, model) = start_of(
            json!({"action": "start", "bucket": "data-1", "key": "retrain/m-7/2026/11/all.ZIP", "model_id": "m-7"}),
        );
        assert_eq!((file.as_str(), model.as_str()), ("all.ZIP", "m-7"));
        // Outside the prefix, a given model_id says which model.
        let (_, model) = start_of(
            json!({"action": "start", "bucket": "data-1", "key": "elsewhere/x.csv", "model_id": 9}),
        );
        assert_eq!(model.as_str(), "9");
        // Keys as S3 events write them: the model and the file name are
        // read through the encoding.
        for key in [
            "retrain/42/red+flower.csv",
            "retrain%2F42%2Fred%20flower.csv",
            "retrain/42/%E5%A3%B2%E4%B8%8A.CSV",
        ] {
            let (_, model) = start_of(json!({"action": "start", "bucket": "data-1", "key": key}));
            assert_eq!(model.as_str(), "42", "{key}");
        }
        match parse(json!({"action": "start", "bucket": "data-1", "key": "retrain/42/a.csv", "version_id": "3HL4kqtJlcpXroDTDmJ"})).unwrap().action {
            Action::Start { version_id, .. } => assert_eq!(version_id.as_deref(), Some("3HL4kqtJlcpXroDTDmJ")),
            other => panic!("{other:?}"),
        }
        for absent in [json!(null), json!("null")] {
            match parse(json!({"action": "start", "bucket": "data-1", "key": "retrain/42/a.csv", "version_id": absent})).unwrap().action {
                Action::Start { version_id, .. } => assert_eq!(version_id, None),
                other => panic!("{other:?}"),
            }
        }
        assert!(
            parse(json!({"action": "start", "bucket": "data-1", "key": "retrain/42/a.csv", "version_id": "a b"}))
                .unwrap_err()
                .report()
                .contains("version_id")
        );
    }

    #[test]
    fn bad_requests_are_refused_by_name_before_any_call() {
        for (request, error_type, says) in [
            (
                json!({"action": "start", "bucket": "data-1", "key": "retrain/42/new.csv", "model_id": "7"}),
                "InvalidRequest",
                "does not match",
            ),
            (
                json!({"action": "start", "bucket": "data-1", "key": "elsewhere/new.csv"}),
                "InvalidRequest",
                "model_id is required",
            ),
            (
                json!({"action": "start", "bucket": "data-1", "key": "retrain/new.csv"}),
                "InvalidRequest",
                "model_id is required",
            ),
            (
                json!({"action": "start", "bucket": "data-1", "key": "retrain/../x/new.csv"}),
                "InvalidRequest",
                "segment",
            ),
            (
                json!({"action": "start", "bucket": "data-1", "key": "retrain/42/new.parquet"}),
                "DataUnavailable",
                ".csv or .zip",
            ),
            (
                json!({"action": "start", "bucket": "data-1", "key": "retrain/42/"}),
                "DataUnavailable",
                ".csv or .zip",
            ),
            (
                json!({"action": "start", "bucket": "data-1", "key": "retrain/42/.csv"}),
                "DataUnavailable",
                ".csv or .zip",
            ),
            (
                json!({"action": "start", "bucket": "Data_1", "key": "retrain/42/a.csv"}),
                "InvalidRequest",
                "bucket",
            ),
            (
                json!({"action": "start", "key": "retrain/42/a.csv"}),
                "InvalidRequest",
                "bucket is required",
            ),
            (
                json!({"action": "start", "bucket": "data-1", "key": "retrain/42/a.csv", "retrain_job_id": "j"}),
                "InvalidRequest",
                "unknown field `retrain_job_id`",
            ),
            (
                json!({"action": "status", "model_id": "42"}),
                "InvalidRequest",
                "retrain_job_id is required",
            ),
            (
                json!({"action": "status", "model_id": "42", "retrain_job_id": ".."}),
                "InvalidRequest",
                "retrain_job_id must be",
            ),
            (
                json!({"action": "status", "model_id": "4/2", "retrain_job_id": "j"}),
                "InvalidRequest",
                "model_id",
            ),
            (
                json!({"action": "switch_model", "model_id": "42", "retrain_job_id": "j", "force": true}),
                "InvalidRequest",
                "unknown field `force`",
            ),
            (
                json!({"action": "save_results", "model_id": "42", "retrain_job_id": "j", "bucket": "data-1", "key": "retrain/42/results"}),
                "InvalidRequest",
                "another retraining",
            ),
            (
                json!({"action": "retrain"}),
                "InvalidRequest",
                "action must be",
            ),
            (
                json!({"credential_type": "retrain"}),
                "InvalidRequest",
                "action is required",
            ),
            (
                json!({"action": "status", "model_id": "42", "retrain_job_id": "j", "task_token": 5}),
                "InvalidRequest",
                "task_token",
            ),
        ] {
            let err = parse(request.clone()).unwrap_err();
            assert_eq!(err.error_type(), error_type, "{request}");
            assert!(err.report().contains(says), "{request}: {}", err.report());
        }
    }

    #[test]
    fn a_rejected_request_keeps_its_task_token() {
        let rejected = RetrainRequest::parse(
            &json!({"action": "status", "task_token": "tt-1"}),
            &config(),
        )
        .unwrap_err();
        assert_eq!(rejected.task_token.unwrap().expose(), "tt-1");
    }

    #[test]
    fn every_action_parses() {
        for (request, name) in [
            (
                json!({"action": "status", "model_id": 42, "retrain_job_id": "rj-1"}),
                "status",
            ),
            (
                json!({"action": "switch_model", "model_id": "42", "retrain_job_id": 17, "task_token": "t"}),
                "switch_model",
            ),
            (
                json!({"action": "save_results", "model_id": "42", "retrain_job_id": "rj-1", "bucket": "data-1", "key": "retrain-results/42/rj-1/results"}),
                "save_results",
            ),
        ] {
            let parsed = parse(request).unwrap();
            assert_eq!(parsed.action.name(), name);
            assert_eq!(parsed.action.model_id().as_str(), "42");
        }
    }
}

//! Any payload to one of the contract's triggers (SPEC section 3).
//!
//! One function serves them all, so the payload's shape decides: an SQS
//! batch has `Records`, a rotation event has `SecretId`/`ClientRequestToken`/
//! `Step`, an EventBridge envelope has `detail-type`, a renewal sweep has
//! `sweep`; anything else with a request field is a direct request, and the
//! rest is refused by name.

use serde_json::{Map, Value, json};

use crate::error::Error;
use crate::request::{self, Rejected, json_kind};

/// Not `Debug`: requests and SQS bodies may carry task tokens.
pub enum Trigger {
    /// A request object: Lambda invoke, Step Functions, Scheduler input.
    Direct(Value),
    /// An EventBridge event; holds the request taken from `detail`.
    EventBridge(Value),
    Sqs(Vec<SqsMessage>),
    Rotation(RotationEvent),
    /// The renewal sweep: `{"sweep": "due"}` (SPEC section 12).
    Sweep(Value),
}

/// The rotation event. Not `aws_lambda_events`' type: that one drops the
/// `RotationToken` field unless a catch-all feature is on.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RotationEvent {
    pub secret_id: String,
    /// The version id of the new secret value (not a credential).
    pub client_request_token: String,
    pub step: String,
    #[serde(default)]
    pub rotation_token: Option<crate::sensitive::RotationToken>,
}

/// One record of an SQS batch: its id, and the request object its body
/// holds (a request or an EventBridge envelope's detail), or why it holds
/// none. A record is read alone, so a malformed one fails alone.
pub struct SqsMessage {
    pub message_id: String,
    pub request: Result<Value, Rejected>,
}

const EXPECTED: &str = "expected a request object (credential_type, ...), an EventBridge event (detail-type, source, detail), an SQS batch (Records), a Secrets Manager rotation event (SecretId, ClientRequestToken, Step) or a renewal sweep ({\"sweep\": \"due\"})";

impl Trigger {
    pub fn from_payload(payload: Value) -> Result<Trigger, Error> {
        let Value::Object(fields) = &payload else {
            return Err(Error::invalid(format!(
                "unrecognised payload ({}); {EXPECTED}",
                json_kind(&payload)
            )));
        };
        if let Some(records) = fields.get("Records") {
            return sqs_records(records, request_of_body).map(Trigger::Sqs);
        }
        let has_request_field = fields.keys().any(|k| request::FIELDS.contains(&k.as_str()));
        // A request with a stray `sweep` is a request with an unknown field.
        if !has_request_field && fields.contains_key("sweep") {
            return Ok(Trigger::Sweep(payload));
        }
        // A request with a stray `Step` is a request with an unknown field.
        if !has_request_field
            && ["SecretId", "ClientRequestToken", "Step"]
                .iter()
                .any(|k| fields.contains_key(*k))
        {
            return serde_json::from_value(payload)
                .map(Trigger::Rotation)
                .map_err(|e| {
                    Error::invalid(format!(
                        "malformed Secrets Manager rotation event: {}",
                        serde_error(&e)
                    ))
                });
        }
        if fields.contains_key("detail-type") {
            return request_from_envelope(fields).map(Trigger::EventBridge);
        }
        if has_request_field || fields.is_empty() {
            return Ok(Trigger::Direct(payload));
        }
        let names: Vec<&str> = fields.keys().take(5).map(String::as_str).collect();
        Err(Error::invalid(format!(
            "unrecognised payload with fields {names:?}; {EXPECTED}"
        )))
    }
}

/// An EventBridge envelope's request: its `detail`, where an empty (or
/// absent) detail, as in a rule's `Scheduled Event`, means a train key.
fn request_from_envelope(fields: &Map<String, Value>) -> Result<Value, Error> {
    if !fields.get("source").is_some_and(Value::is_string) {
        return Err(Error::invalid("an EventBridge event needs a string source"));
    }
    match fields.get("detail") {
        None | Some(Value::Null) => Ok(json!({"credential_type": "train"})),
        Some(Value::Object(d)) if d.is_empty() => Ok(json!({"credential_type": "train"})),
        Some(d @ Value::Object(_)) => Ok(d.clone()),
        Some(other) => Err(Error::invalid(format!(
            "an EventBridge event's detail must be a request object; got {}",
            json_kind(other)
        ))),
    }
}

/// An SQS batch's records, each body read by `read_body`.
///
/// Records are read one by one rather than as `aws_lambda_events`'
/// `SqsEvent`: one malformed record must fail alone, not the whole batch
/// (and with it every good record that SQS would then deliver again).
pub fn sqs_records(
    records: &Value,
    read_body: fn(&str) -> Result<Value, Rejected>,
) -> Result<Vec<SqsMessage>, Error> {
    let Value::Array(list) = records else {
        return Err(Error::invalid("Records must be an array of SQS messages"));
    };
    let source = |r: &Value| {
        r.get("eventSource")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    if !list.is_empty() && !list.iter().any(|r| source(r).as_deref() == Some("aws:sqs")) {
        let other = list
            .iter()
            .find_map(source)
            .unwrap_or_else(|| "(none)".into());
        return Err(Error::invalid(format!(
            "Records from eventSource {other:?} are not supported; expected an SQS batch (eventSource \"aws:sqs\")"
        )));
    }
    let records = list
        .iter()
        .map(|r| SqsMessage {
            message_id: r
                .get("messageId")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            request: match (source(r).as_deref(), r.get("body")) {
                (Some("aws:sqs"), Some(Value::String(body))) => read_body(body),
                (Some("aws:sqs"), _) => Err(Rejected::bare(Error::invalid(
                    "the SQS record has no string body",
                ))),
                _ => Err(Rejected::bare(Error::invalid(
                    "the record is not an SQS message (eventSource is not \"aws:sqs\")",
                ))),
            },
        })
        .collect();
    Ok(records)
}

/// A message body: a request object, or an EventBridge envelope whose
/// detail is one. A failed envelope keeps what its detail says (the task
/// token) so that the failure can still be reported.
fn request_of_body(body: &str) -> Result<Value, Rejected> {
    let value: Value = serde_json::from_str(body).map_err(|_| {
        Rejected::bare(Error::invalid(
            "the SQS message body is not a JSON request object",
        ))
    })?;
    match &value {
        Value::Object(fields) if fields.contains_key("detail-type") => {
            request_from_envelope(fields).map_err(|e| Rejected::of(e, &value))
        }
        _ => Ok(value),
    }
}

/// serde's message without a payload excerpt (it could quote a token).
fn serde_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.find(" at line ") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(v: Value) -> &'static str {
        match Trigger::from_payload(v) {
            Ok(Trigger::Direct(_)) => "direct",
            Ok(Trigger::EventBridge(_)) => "eventbridge",
            Ok(Trigger::Sqs(_)) => "sqs",
            Ok(Trigger::Rotation(_)) => "rotation",
            Ok(Trigger::Sweep(_)) => "sweep",
            Err(e) => {
                assert_eq!(e.error_type(), "InvalidRequest");
                "invalid"
            }
        }
    }

    #[test]
    fn recognises_each_shape() {
        assert_eq!(kind(json!({"credential_type": "train"})), "direct");
        assert_eq!(kind(json!({"credentialType": "train"})), "invalid");
        assert_eq!(
            kind(json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": {}})),
            "eventbridge"
        );
        assert_eq!(
            kind(json!({"Records": [{"eventSource": "aws:sqs", "messageId": "1", "body": "{}"}]})),
            "sqs"
        );
        assert_eq!(
            kind(json!({"Records": [{"eventSource": "aws:sns"}]})),
            "invalid"
        );
        assert_eq!(
            kind(json!({"SecretId": "s", "ClientRequestToken": "t", "Step": "createSecret"})),
            "rotation"
        );
        assert_eq!(kind(json!({"SecretId": "s"})), "invalid");
        assert_eq!(
            kind(json!({"credential_type": "train", "Step": 1})),
            "direct"
        );
        assert_eq!(kind(json!({"Records": []})), "sqs");
        assert_eq!(kind(json!({"sweep": "due"})), "sweep");
        assert_eq!(kind(json!({"sweep": "due", "dry_run": true})), "sweep");
        assert_eq!(
            kind(json!({"credential_type": "train", "sweep": "due"})),
            "direct"
        );
        assert_eq!(kind(json!("train")), "invalid");
        assert_eq!(kind(json!(null)), "invalid");
    }

    #[test]
    fn a_malformed_sqs_record_fails_alone() {
        let Ok(Trigger::Sqs(records)) = Trigger::from_payload(json!({"Records": [
            {"eventSource": "aws:sqs", "messageId": "good", "body": "{}"},
            {"eventSource": "aws:sqs", "messageId": "object-body", "body": {}},
            {"eventSource": "aws:sqs", "messageId": "no-body"},
            {"messageId": "no-source", "body": "{}"},
            {"eventSource": "aws:sqs", "messageId": 7, "body": "{}"},
        ]})) else {
            panic!("not read as an SQS batch")
        };
        let read: Vec<(&str, bool)> = records
            .iter()
            .map(|r| (r.message_id.as_str(), r.request.is_ok()))
            .collect();
        assert_eq!(
            read,
            [
                ("good", true),
                ("object-body", false),
                ("no-body", false),
                ("no-source", false),
                ("", true)
            ]
        );
    }

    #[test]
    fn scheduled_event_means_train() {
        for detail in [json!({}), Value::Null] {
            let Ok(Trigger::EventBridge(r)) = Trigger::from_payload(
                json!({"detail-type": "Scheduled Event", "source": "aws.events", "detail": detail}),
            ) else {
                panic!()
            };
            assert_eq!(r, json!({"credential_type": "train"}));
        }
        assert_eq!(
            kind(json!({"detail-type": "x", "source": "s", "detail": "train"})),
            "invalid"
        );
    }

    #[test]
    fn rotation_tokens_stay_redacted() {
        let Ok(Trigger::Rotation(e)) = Trigger::from_payload(
            json!({"SecretId": "s", "ClientRequestToken": "version-1", "Step": "createSecret", "RotationToken": "RT-SENTINEL"}),
        ) else {
            panic!()
        };
        assert!(!format!("{e:?}").contains("RT-SENTINEL"));
        assert_eq!(e.rotation_token.unwrap().expose(), "RT-SENTINEL");
    }

    mod hostile {
        //! Any payload gives a trigger or a contract error, never a panic;
        //! and every request a trigger yields gives a request or an
        //! `InvalidRequest`.

        use proptest::prelude::*;
        use serde_json::{Map, Value, json};

        use super::super::Trigger;
        use crate::config::Config;
        use crate::request::KeyRequest;

        /// Field names the parsers look for besides a request's own
        /// (`request::FIELDS`), and some they do not.
        const KEYS: &[&str] = &[
            "Records",
            "eventSource",
            "messageId",
            "body",
            "detail-type",
            "source",
            "detail",
            "SecretId",
            "ClientRequestToken",
            "Step",
            "RotationToken",
            "credentialType",
            "",
        ];

        fn key() -> impl Strategy<Value = String> {
            let known: Vec<&str> = crate::request::FIELDS.iter().chain(KEYS).copied().collect();
            prop_oneof![
                prop::sample::select(known).prop_map(str::to_string),
                "\\PC{0,6}",
            ]
        }
        const WORDS: &[&str] = &[
            "train",
            "retrain",
            "deploy",
            "aws:sqs",
            "aws:sns",
            "createSecret",
            "42",
            "../x",
            "arn:aws:secretsmanager:us-east-1:1:secret:x-AbCdEf",
            "p1/secret-key",
        ];

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|n| json!(n)),
                any::<f64>().prop_map(
                    |f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)
                ),
                "\\PC{0,12}".prop_map(Value::String),
                prop::sample::select(WORDS).prop_map(|w| json!(w)),
            ];
            leaf.prop_recursive(4, 48, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    prop::collection::vec((key(), inner.clone()), 0..6)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect::<Map<_, _>>())),
                    // An SQS record whose body is itself JSON text.
                    inner.prop_map(|body| json!({"Records": [{"eventSource": "aws:sqs", "messageId": "m", "body": body.to_string()}]})),
                ]
            })
        }

        fn config() -> Config {
            Config::from_lookup(|n| {
                Ok((n == "P1_SECRET_KEY_SECRET_ID").then(|| "p1/secret-key".to_string()))
            })
            .expect("config")
        }

        fn check_request(request: &Value, config: &Config) {
            if let Err(rejected) = KeyRequest::parse(request, config) {
                assert_eq!(rejected.error.error_type(), "InvalidRequest");
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 768, ..ProptestConfig::default() })]

            #[test]
            fn any_payload_is_a_trigger_or_a_contract_error(payload in json_value()) {
                let config = config();
                match Trigger::from_payload(payload) {
                    Ok(Trigger::Direct(r) | Trigger::EventBridge(r)) => check_request(&r, &config),
                    Ok(Trigger::Sqs(messages)) => {
                        for m in messages {
                            match m.request {
                                Ok(r) => check_request(&r, &config),
                                Err(rejected) => prop_assert_eq!(rejected.error.error_type(), "InvalidRequest"),
                            }
                        }
                    }
                    Ok(Trigger::Rotation(_)) => {}
                    Ok(Trigger::Sweep(v)) => {
                        if let Err(e) = crate::broker::sweep::SweepRequest::parse(&v) {
                            prop_assert_eq!(e.error_type(), "InvalidRequest");
                        }
                    }
                    Err(e) => prop_assert_eq!(e.error_type(), "InvalidRequest"),
                }
            }

            #[test]
            fn any_sqs_body_text_fails_alone(body in "\\PC{0,64}") {
                let payload = json!({"Records": [{"eventSource": "aws:sqs", "messageId": "m", "body": body}]});
                let Ok(Trigger::Sqs(messages)) = Trigger::from_payload(payload) else {
                    panic!("not an SQS batch")
                };
                prop_assert_eq!(messages.len(), 1);
            }
        }
    }
}

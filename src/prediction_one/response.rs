//! Reading one Get API Key response (SPEC section 1).
//!
//! The manual documents the success body and six error messages, but not the
//! HTTP status, the error body's exact shape, or what gateways in front of
//! the API send. So: `code` may be a number or a string, messages match
//! case-insensitively without their trailing dot, a non-JSON body is fine,
//! and a documented error message is recognised whatever the status.

use serde_json::Value;

use super::{IssuedKey, PredictionOneError};
use crate::sensitive::{ApiKey, SecretKey};

/// What to do with a response.
#[derive(Debug)]
pub enum Outcome<T> {
    Done(T),
    /// Worth another attempt: 429, 408 or 5xx.
    Retry(Transient),
    Fail(PredictionOneError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transient {
    Throttled,
    Timeout,
    ServerError(u16),
}

/// Longest vendor message kept in an error text.
const MAX_MESSAGE: usize = 200;

/// A Get API Key response.
pub fn classify(status: u16, body: &[u8], secret_key: &SecretKey) -> Outcome<IssuedKey> {
    match classify_json(status, body, secret_key.expose(), "api_key") {
        Outcome::Done(json) => match parse_key(&json) {
            Ok(key) => Outcome::Done(key),
            Err(problem) => Outcome::Fail(PredictionOneError::MalformedResponse(problem)),
        },
        Outcome::Retry(t) => Outcome::Retry(t),
        Outcome::Fail(e) => Outcome::Fail(e),
    }
}

/// Any call's response: its JSON body on success, else a retry or a
/// contract error. `credential` (the key the call was made with) is
/// scrubbed from any vendor text kept in an error. `success_field` is the
/// field a success body always has (`api_key`, `status`, ...).
pub fn classify_json(
    status: u16,
    body: &[u8],
    credential: &str,
    success_field: &str,
) -> Outcome<Value> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let message = json.as_ref().and_then(error_message);

    // A documented message wins whatever the status, even a 200 or a 500
    // (`Not found configuration_file.` comes as a 500 and is not worth
    // retrying), unless the body is a success: a job status carries a
    // `message` of its own, which may read like an error.
    let success = (200..300).contains(&status)
        && json
            .as_ref()
            .is_some_and(|j| j.get(success_field).is_some());
    if !success && let Some(known) = message.as_deref().and_then(documented) {
        return Outcome::Fail(known);
    }
    match status {
        200..=299 => match json {
            Some(json) => Outcome::Done(json),
            None => Outcome::Fail(PredictionOneError::MalformedResponse(format!(
                "HTTP {status} with a body that is not JSON"
            ))),
        },
        429 => Outcome::Retry(Transient::Throttled),
        408 => Outcome::Retry(Transient::Timeout),
        500..=599 => Outcome::Retry(Transient::ServerError(status)),
        _ => Outcome::Fail(PredictionOneError::BadRequest {
            status,
            message: message
                .map(|m| scrub(&m, credential))
                .unwrap_or_else(|| "no error message in the response".to_string()),
        }),
    }
}

pub fn parse_key(body: &Value) -> Result<IssuedKey, String> {
    let api_key = match body.get("api_key") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_string(),
        Some(_) => return Err("api_key is empty or not a string".into()),
        None => return Err("no api_key in the response".into()),
    };
    let end_date = match body.get("end_date") {
        Some(Value::String(s)) => s.clone(),
        // Not the documented type, but still the vendor's own statement of expiry.
        Some(Value::Number(n)) => n.to_string(),
        Some(_) => return Err("end_date is not a string".into()),
        None => return Err("no end_date in the response".into()),
    };
    Ok(IssuedKey {
        api_key: ApiKey::new(api_key),
        end_date,
    })
}

/// The `message` of an error body (`{"code", "error", "message"}`, or a
/// gateway's `{"message"}` / `{"Message"}`).
fn error_message(body: &Value) -> Option<String> {
    ["message", "Message", "error_message"]
        .iter()
        .find_map(|k| body.get(*k).and_then(Value::as_str))
        .map(str::to_string)
}

fn documented(message: &str) -> Option<PredictionOneError> {
    let normalized = message
        .trim()
        .trim_end_matches('.')
        .trim()
        .to_ascii_lowercase();
    Some(match normalized.as_str() {
        "invalid_api_key" => PredictionOneError::InvalidSecretKey,
        "inactive_credential" => PredictionOneError::InactiveCredential,
        "not_found_credential" => PredictionOneError::CredentialNotFound,
        "this user may be deleted" => PredictionOneError::UserDeleted,
        "this model may be deleted" => PredictionOneError::ModelDeleted,
        "model id is required" => PredictionOneError::ModelIdRequired,
        "not found retrain job" => PredictionOneError::RetrainJobNotFound,
        "this job may be deleted" => PredictionOneError::JobDeleted,
        "not found configuration_file" => PredictionOneError::ConfigurationFileMissing,
        "not found classifier" => PredictionOneError::ClassifierNotFound,
        "retrain job is not finished" => PredictionOneError::RetrainNotFinished,
        _ => return None,
    })
}

/// Vendor text goes into our error messages; make sure it cannot carry the
/// secret key or API key back out, and keep it short.
pub fn scrub(message: &str, credential: &str) -> String {
    let mut text = message.trim().to_string();
    if !credential.is_empty() {
        text = text.replace(credential, "<redacted>");
    }
    if text.chars().count() > MAX_MESSAGE {
        text = text.chars().take(MAX_MESSAGE).collect::<String>() + "…";
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sk() -> SecretKey {
        SecretKey::new("sk-SENTINEL")
    }

    fn fail(status: u16, body: &str) -> PredictionOneError {
        match classify(status, body.as_bytes(), &sk()) {
            Outcome::Fail(e) => e,
            other => panic!("{status} {body}: {other:?}"),
        }
    }

    fn vendor_error(message: &str, code: Value) -> String {
        json!({"code": code, "error": "PREDA_EXTERNAL_BAD_REQUEST", "message": message}).to_string()
    }

    #[test]
    fn documented_errors_map_to_their_types() {
        let table = [
            ("invalid_api_key.", "PredictionOne.InvalidSecretKey"),
            ("Inactive_credential.", "PredictionOne.InactiveCredential"),
            ("Not_found_credential.", "PredictionOne.CredentialNotFound"),
            ("This user may be deleted.", "PredictionOne.UserDeleted"),
            ("This model may be deleted.", "PredictionOne.ModelDeleted"),
            ("Model id is required.", "PredictionOne.ModelIdRequired"),
            ("Not found retrain job.", "PredictionOne.RetrainJobNotFound"),
            ("This job may be deleted.", "PredictionOne.JobDeleted"),
            (
                "Not found configuration_file.",
                "PredictionOne.ConfigurationFileMissing",
            ),
            ("Not found classifier.", "PredictionOne.ClassifierNotFound"),
            (
                "Retrain job is not finished.",
                "PredictionOne.RetrainNotFinished",
            ),
        ];
        for (message, error_type) in table {
            for variant in [
                message.to_string(),
                message.to_uppercase(),
                format!("  {} ", message.trim_end_matches('.')),
            ] {
                for code in [json!(4001000204u64), json!("4001000204")] {
                    assert_eq!(
                        fail(400, &vendor_error(&variant, code)).error_type(),
                        error_type,
                        "{variant}"
                    );
                }
            }
        }
        // Even under a status the manual does not promise.
        assert_eq!(
            fail(401, &vendor_error("invalid_api_key.", json!(1))).error_type(),
            "PredictionOne.InvalidSecretKey"
        );
        assert_eq!(
            fail(200, &vendor_error("Model id is required.", json!(1))).error_type(),
            "PredictionOne.ModelIdRequired"
        );
        // The vendor sends this one as an internal server error: not retried.
        assert_eq!(
            fail(
                500,
                &vendor_error("Not found configuration_file.", json!(5001000201u64))
            )
            .error_type(),
            "PredictionOne.ConfigurationFileMissing"
        );
    }

    #[test]
    fn a_success_body_with_a_message_of_its_own_is_a_success() {
        let body =
            json!({"status": "running", "message": "Retrain job is not finished."}).to_string();
        match classify_json(200, body.as_bytes(), "ak", "status") {
            Outcome::Done(v) => assert_eq!(v["status"], "running"),
            other => panic!("{other:?}"),
        }
        // Without the success field the message is the answer.
        let body = json!({"message": "Retrain job is not finished."}).to_string();
        assert!(matches!(
            classify_json(200, body.as_bytes(), "ak", "status"),
            Outcome::Fail(PredictionOneError::RetrainNotFinished)
        ));
    }

    #[test]
    fn unknown_and_non_json_errors_are_bad_requests() {
        let e = fail(
            400,
            &vendor_error("Invalid credential_type.", json!(4001000204u64)),
        );
        assert_eq!(
            e,
            PredictionOneError::BadRequest {
                status: 400,
                message: "Invalid credential_type.".into()
            }
        );
        let e = fail(403, r#"{"message": "Forbidden"}"#);
        assert!(
            e.to_string().contains("HTTP 403") && e.to_string().contains("Forbidden"),
            "{e}"
        );
        let e = fail(404, "<html>not here</html>");
        assert_eq!(e.error_type(), "PredictionOne.BadRequest");
        let e = fail(400, &vendor_error("bad key sk-SENTINEL given", json!(1)));
        assert!(!e.to_string().contains("SENTINEL"), "{e}");
        let e = fail(400, &vendor_error(&"x".repeat(5000), json!(1)));
        assert!(e.to_string().len() < 400);
    }

    #[test]
    fn transient_statuses_are_retried() {
        for (status, want) in [
            (429, Transient::Throttled),
            (408, Transient::Timeout),
            (500, Transient::ServerError(500)),
            (502, Transient::ServerError(502)),
            (503, Transient::ServerError(503)),
        ] {
            match classify(status, b"<html>Bad Gateway</html>", &sk()) {
                Outcome::Retry(t) => assert_eq!(t, want),
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    #[test]
    fn success_bodies() {
        match classify(
            200,
            br#"{"api_key": "AK", "end_date": "2030-01-01 00:00:00"}"#,
            &sk(),
        ) {
            Outcome::Done(k) => {
                assert_eq!(k.api_key.expose(), "AK");
                assert_eq!(k.end_date, "2030-01-01 00:00:00");
            }
            other => panic!("{other:?}"),
        }
        for body in [
            r#"{"end_date": "x"}"#,
            r#"{"api_key": "", "end_date": "x"}"#,
            r#"{"api_key": "AK"}"#,
            r#"{"api_key": 5, "end_date": "x"}"#,
            "not json",
            "[]",
        ] {
            assert_eq!(
                fail(200, body).error_type(),
                "PredictionOne.MalformedResponse",
                "{body}"
            );
        }
    }

    mod hostile {
        //! Any status and body give a key, a retry or a contract error,
        //! never a panic, and never the secret key back.

        use proptest::prelude::*;

        use super::*;

        fn body() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                prop::collection::vec(any::<u8>(), 0..256),
                (
                    prop::sample::select(
                        &["api_key", "end_date", "message", "Message", "code", "error",][..]
                    ),
                    "\\PC{0,24}",
                    prop::sample::select(
                        &[
                            "invalid_api_key.",
                            "Model id is required.",
                            "sk-SENTINEL",
                            "",
                            "x",
                        ][..]
                    ),
                )
                    .prop_map(|(k, junk, v)| {
                        format!(r#"{{"{k}": "{v}", "end_date": "{junk}", "api_key": {junk:?}}}"#)
                            .into_bytes()
                    }),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

            #[test]
            fn any_response_is_read_safely(status in 100u16..600, body in body()) {
                match classify(status, &body, &sk()) {
                    Outcome::Done(key) => prop_assert!(!key.api_key.expose().trim().is_empty()),
                    Outcome::Retry(_) => prop_assert!(status == 408 || status == 429 || status >= 500),
                    Outcome::Fail(e) => {
                        prop_assert!(e.error_type().starts_with("PredictionOne."));
                        prop_assert!(!e.to_string().contains("sk-SENTINEL"), "{}", e);
                    }
                }
            }
        }
    }
}

//! The stored API key record (SPEC section 4): what a target secret's
//! SecretString holds, and how freshness is judged from it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::credential::{Credential, CredentialType, ModelId};
use crate::expiry;
use crate::sensitive::{ApiKey, SecretString};

use super::StoreError;

/// No target is renewed more often than this, unless asked (`force`):
/// Secrets Manager's quota of versions per secret is exhausted by "more than
/// once every 10 minutes" (SPEC section 3).
pub const MIN_RENEWAL: chrono::Duration = chrono::Duration::minutes(10);

#[derive(Debug, Clone)]
pub struct KeyRecord {
    pub api_key: ApiKey,
    /// The vendor's raw `end_date`.
    pub end_date: String,
    /// RFC 3339 UTC, when `end_date` could be read.
    pub expires_at: Option<String>,
    pub credential: Credential,
    pub issued_at: String,
}

/// The JSON shape. Private: only this module sees a raw `api_key` string.
#[derive(Serialize, Deserialize)]
struct Wire {
    api_key: String,
    end_date: String,
    expires_at: Option<String>,
    credential_type: String,
    model_id: Option<String>,
    issued_at: String,
}

impl KeyRecord {
    /// A record for a key issued now.
    pub fn issued(
        api_key: ApiKey,
        end_date: String,
        credential: Credential,
        now: DateTime<Utc>,
    ) -> Self {
        KeyRecord {
            expires_at: expiry::expires_at(&end_date),
            api_key,
            end_date,
            credential,
            issued_at: expiry::format_instant(now),
        }
    }

    /// The stored form. A record that cannot be encoded is never written
    /// (an error, not an empty value).
    pub fn to_secret_string(&self) -> Result<SecretString, StoreError> {
        let wire = Wire {
            api_key: self.api_key.expose().to_string(),
            end_date: self.end_date.clone(),
            expires_at: self.expires_at.clone(),
            credential_type: self.credential.credential_type.as_str().to_string(),
            model_id: self
                .credential
                .model_id
                .as_ref()
                .map(|m| m.as_str().to_string()),
            issued_at: self.issued_at.clone(),
        };
        serde_json::to_string(&wire)
            .map(SecretString::new)
            .map_err(|e| StoreError::Other(format!("cannot encode the key record: {e}")))
    }

    /// Reads a stored record; `None` when the value is not one of ours (or is
    /// damaged), which callers treat as "no usable key".
    pub fn parse(value: &SecretString) -> Option<Self> {
        let wire: Wire = serde_json::from_str(value.expose()).ok()?;
        let credential_type = CredentialType::parse(&wire.credential_type)?;
        let model_id = match wire.model_id {
            Some(m) => Some(ModelId::parse(&m)?),
            None => None,
        };
        if wire.api_key.is_empty() {
            return None;
        }
        Some(KeyRecord {
            api_key: ApiKey::new(wire.api_key),
            end_date: wire.end_date,
            expires_at: wire.expires_at,
            credential: Credential::new(credential_type, model_id),
            issued_at: wire.issued_at,
        })
    }

    /// When the key expires, if known.
    pub fn expiry(&self) -> Option<DateTime<Utc>> {
        let at = self.expires_at.as_deref()?;
        DateTime::parse_from_rfc3339(at)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// When the key was issued, if the record says so readably.
    pub fn issued_time(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.issued_at)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Fresh (SPEC section 3): for the same credential, and either known to
    /// outlive `now + renew_before`, or issued less than [`MIN_RENEWAL`] ago
    /// whatever its expiry, so that no target is renewed more often than
    /// Secrets Manager can clean its versions up (a key of unknown expiry,
    /// or one that lives less than the renewal window, would otherwise be
    /// renewed by every request).
    pub fn is_fresh_for(
        &self,
        credential: &Credential,
        now: DateTime<Utc>,
        renew_before: std::time::Duration,
    ) -> bool {
        if self.credential != *credential {
            return false;
        }
        let outlives = chrono::Duration::from_std(renew_before)
            .is_ok_and(|margin| self.expiry().is_some_and(|at| at > now + margin));
        outlives || self.issued_recently(now)
    }

    /// Issued less than [`MIN_RENEWAL`] before `now` (a record dated in the
    /// future by more than that, a clock gone wrong, does not count).
    pub fn issued_recently(&self, now: DateTime<Utc>) -> bool {
        self.issued_time()
            .is_some_and(|at| at > now - MIN_RENEWAL && at < now + MIN_RENEWAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn retrain(id: &str) -> Credential {
        Credential::new(CredentialType::Retrain, ModelId::parse(id))
    }

    #[test]
    fn round_trips_the_contract_shape() {
        let r = KeyRecord::issued(
            ApiKey::new("AK-SENTINEL"),
            "2026-12-04 10:00:00".into(),
            retrain("42"),
            now(),
        );
        let s = r.to_secret_string().unwrap();
        let v: serde_json::Value = serde_json::from_str(s.expose()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"api_key": "AK-SENTINEL", "end_date": "2026-12-04 10:00:00",
            "expires_at": "2026-12-04T10:00:00Z", "credential_type": "retrain", "model_id": "42",
            "issued_at": "2026-11-27T10:00:00Z"})
        );
        let back = KeyRecord::parse(&s).unwrap();
        assert_eq!(back.credential, retrain("42"));
        assert_eq!(back.api_key.expose(), "AK-SENTINEL");
        assert!(!format!("{back:?} {s:?}").contains("SENTINEL"));
    }

    #[test]
    fn freshness() {
        let day = Duration::from_secs(86_400);
        let r = KeyRecord::issued(
            ApiKey::new("k"),
            "2026-11-29T10:00:00Z".into(),
            retrain("42"),
            now(),
        );
        assert!(r.is_fresh_for(&retrain("42"), now(), day));
        assert!(!r.is_fresh_for(&retrain("43"), now(), day), "other model");
        assert!(!r.is_fresh_for(&Credential::new(CredentialType::Train, None), now(), day));
        assert!(
            !r.is_fresh_for(
                &retrain("42"),
                now() + chrono::Duration::minutes(11),
                Duration::from_secs(2 * 86_400)
            ),
            "inside the margin"
        );
        let unknown = KeyRecord::issued(ApiKey::new("k"), "whenever".into(), retrain("42"), now());
        let later = |minutes| now() + chrono::Duration::minutes(minutes);
        assert!(
            !unknown.is_fresh_for(&retrain("42"), later(10), Duration::ZERO),
            "unknown expiry is not fresh once 10 minutes old"
        );
        // Within 10 minutes of being issued, any record of the credential is
        // fresh: unknown expiry, or a key shorter than the renewal window.
        assert!(unknown.is_fresh_for(&retrain("42"), later(9), Duration::ZERO));
        assert!(r.is_fresh_for(&retrain("42"), later(9), Duration::from_secs(30 * 86_400)));
        assert!(!r.is_fresh_for(&retrain("42"), later(11), Duration::from_secs(30 * 86_400)));
        assert!(!unknown.is_fresh_for(&retrain("43"), later(1), Duration::ZERO));
        // A record dated far in the future is not taken as recent.
        assert!(!unknown.is_fresh_for(
            &retrain("42"),
            now() - chrono::Duration::hours(1),
            Duration::ZERO
        ));
    }

    #[test]
    fn foreign_values_are_not_records() {
        for s in [
            "",
            "plain",
            "{}",
            r#"{"api_key": "", "end_date": "", "expires_at": null, "credential_type": "train", "model_id": null, "issued_at": ""}"#,
            r#"{"api_key": "k", "end_date": "", "expires_at": null, "credential_type": "other", "model_id": null, "issued_at": ""}"#,
        ] {
            assert!(KeyRecord::parse(&SecretString::new(s)).is_none(), "{s}");
        }
    }
}

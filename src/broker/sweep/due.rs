//! When a key is due, and which due key goes first (SPEC section 12,
//! "nothing starves", "spread, not cohorts").
//!
//! Due: the record is not fresh by the request's own rule with the
//! secret's renewal window (`P1_RENEW_BEFORE_SECONDS` plus its stable share
//! of `P1_SWEEP_JITTER_SECONDS`, `Broker::renew_window`), so the sweep and
//! the queue's consumers agree on it. The order, first to last:
//! 1. ensured targets that do not exist yet (no key at all);
//! 2. keys that have not expired, soonest expiry first (renewing them keeps
//!    consumers working);
//! 3. keys of unknown expiry, oldest `issued_at` first;
//! 4. keys already expired, most recently expired first (one that expired
//!    long ago is most likely a model that is gone).

use std::cmp::Reverse;

use chrono::{DateTime, Utc};

use crate::credential::Credential;
use crate::secrets::KeyRecord;

/// A due key.
#[derive(Debug, Clone)]
pub(super) struct Due {
    pub target: String,
    pub name: String,
    pub credential: Credential,
    pub order: Order,
}

/// Where a due key stands in the queue of renewals (the derived `Ord` is
/// the order: the variants first, then their field).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Order {
    Missing,
    Unexpired(DateTime<Utc>),
    /// `issued_at` (none sorts first: the oldest there can be).
    Unknown(Option<DateTime<Utc>>),
    Expired(Reverse<DateTime<Utc>>),
}

impl Order {
    pub fn of(record: &KeyRecord, now: DateTime<Utc>) -> Order {
        match record.expiry() {
            Some(at) if at > now => Order::Unexpired(at),
            Some(at) => Order::Expired(Reverse(at)),
            None => Order::Unknown(record.issued_time()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::CredentialType;
    use crate::sensitive::ApiKey;

    fn record(end_date: &str, issued: DateTime<Utc>) -> KeyRecord {
        KeyRecord::issued(
            ApiKey::new("k"),
            end_date.into(),
            Credential::new(CredentialType::Train, None),
            issued,
        )
    }

    #[test]
    fn live_keys_first_then_unknown_by_age_then_the_most_recently_expired() {
        let now = Utc::now();
        let day = chrono::Duration::days(1);
        let at = |d: chrono::Duration| crate::expiry::format_instant(now + d);
        let mut orders = [
            (
                "expired long ago",
                Order::of(&record(&at(-day * 300), now - day * 307), now),
            ),
            ("unknown, newer", Order::of(&record("soon", now - day), now)),
            (
                "in 2 days",
                Order::of(&record(&at(day * 2), now - day * 5), now),
            ),
            ("missing", Order::Missing),
            (
                "expired yesterday",
                Order::of(&record(&at(-day), now - day * 8), now),
            ),
            (
                "unknown, older",
                Order::of(&record("soon", now - day * 3), now),
            ),
            (
                "in 1 hour",
                Order::of(&record(&at(chrono::Duration::hours(1)), now - day * 7), now),
            ),
        ];
        orders.sort_by(|a, b| a.1.cmp(&b.1));
        let names: Vec<&str> = orders.iter().map(|o| o.0).collect();
        assert_eq!(
            names,
            [
                "missing",
                "in 1 hour",
                "in 2 days",
                "unknown, older",
                "unknown, newer",
                "expired yesterday",
                "expired long ago"
            ]
        );
    }
}

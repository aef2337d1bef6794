//! Best-effort reading of the vendor's `end_date`, whose format the manual
//! does not document (SPEC section 1).
//!
//! The raw string is always kept; this only derives `expires_at`. A value
//! without an offset is read as UTC, and that assumption is logged once per
//! instance. A date without a time is read as the start of that day (UTC),
//! the earlier, safer reading for renewal. Anything else is "expiry unknown",
//! never an error.

use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};

static LOGGED_UTC_ASSUMPTION: AtomicBool = AtomicBool::new(false);

/// RFC 3339 look-alikes with an offset that chrono's RFC 3339 parser refuses
/// (`+0900` without the colon, a space instead of `T`).
const OFFSET_FORMATS: &[&str] = &[
    "%Y-%m-%dT%H:%M:%S%.f%z",
    "%Y-%m-%d %H:%M:%S%.f%z",
    "%Y-%m-%d %H:%M:%S%.f %z",
];

const NAIVE_FORMATS: &[&str] = &[
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y/%m/%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M",
];
const DATE_FORMATS: &[&str] = &["%Y-%m-%d", "%Y/%m/%d"];

/// The instant `end_date` names, if it can be read.
pub fn parse_end_date(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    if let Some(with_offset) = DateTime::parse_from_rfc3339(raw).ok().or_else(|| {
        OFFSET_FORMATS
            .iter()
            .find_map(|f| DateTime::parse_from_str(raw, f).ok())
    }) {
        return Some(with_offset.with_timezone(&Utc));
    }
    let naive = NAIVE_FORMATS
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(raw, f).ok())
        .or_else(|| {
            DATE_FORMATS
                .iter()
                .find_map(|f| NaiveDate::parse_from_str(raw, f).ok())
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        })?;
    if !LOGGED_UTC_ASSUMPTION.swap(true, Ordering::Relaxed) {
        tracing::info!(
            end_date = raw,
            "end_date has no UTC offset; reading it as UTC (logged once per instance)"
        );
    }
    Some(naive.and_utc())
}

/// `expires_at` as stored and returned: RFC 3339 in UTC, or none.
pub fn expires_at(raw_end_date: &str) -> Option<String> {
    parse_end_date(raw_end_date).map(format_instant)
}

pub fn format_instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A secret's stable share of the sweep's jitter window (SPEC section 12):
/// from a hash of its ARN, in `[0, window]`, whole seconds. Its renewal
/// point moves that much earlier, so keys issued together (onboarding, a
/// recovery after an outage) come due over the window, not in one sweep;
/// the same secret always gets the same share, so every renewer (the
/// sweep, a request, the queue's consumers) agrees on when it is due.
pub fn spread(arn: &str, window: std::time::Duration) -> std::time::Duration {
    use sha2::{Digest, Sha256};
    let span = window.as_secs();
    if span == 0 {
        return std::time::Duration::ZERO;
    }
    let digest = Sha256::digest(arn.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    std::time::Duration::from_secs(u64::from_be_bytes(first) % (span + 1))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_cohort_spreads_over_the_jitter_window() {
        // 1,000 keys issued at one instant (SPEC section 12, "spread, not
        // cohorts"): their renewal points fall over the whole hour, about
        // evenly, and each secret's share never changes.
        let window = std::time::Duration::from_secs(3600);
        let shares: Vec<u64> = (0..1000)
            .map(|i| {
                let arn = format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:prediction-one/api-key/retrain/{i}-AbCdEf");
                let s = super::spread(&arn, window);
                assert_eq!(s, super::spread(&arn, window), "stable");
                assert!(s <= window);
                s.as_secs()
            })
            .collect();
        // Ten six-minute slots: none empty, none with more than twice its share.
        let mut slots = [0usize; 10];
        for s in &shares {
            slots[(*s as usize * 10 / 3601).min(9)] += 1;
        }
        assert!(slots.iter().all(|&n| (50..=200).contains(&n)), "{slots:?}");
        // A sweep every hour renews each key once: a sweep at minute m takes
        // only the keys whose point has passed, not the whole cohort.
        let by_quarter = shares.iter().filter(|s| **s >= 2700).count();
        assert!((150..=350).contains(&by_quarter), "{by_quarter}");
        assert_eq!(
            super::spread("x", std::time::Duration::ZERO),
            std::time::Duration::ZERO
        );
    }

    use super::*;

    #[test]
    fn reads_the_likely_formats() {
        let cases = [
            ("2026-12-04T09:30:00Z", "2026-12-04T09:30:00Z"),
            ("2026-12-04T18:30:00+09:00", "2026-12-04T09:30:00Z"),
            ("2026-12-04T18:30:00+0900", "2026-12-04T09:30:00Z"),
            ("2026-12-04 18:30:00 +0900", "2026-12-04T09:30:00Z"),
            ("2026-12-04T09:30:00.123456", "2026-12-04T09:30:00Z"),
            ("2026-12-04 09:30:00", "2026-12-04T09:30:00Z"),
            ("2026/12/04 09:30:00", "2026-12-04T09:30:00Z"),
            ("2026-12-04", "2026-12-04T00:00:00Z"),
            (" 2026-12-04 09:30:00 ", "2026-12-04T09:30:00Z"),
        ];
        for (raw, want) in cases {
            assert_eq!(expires_at(raw).as_deref(), Some(want), "{raw}");
        }
    }

    #[test]
    fn unreadable_is_unknown_not_an_error() {
        for raw in [
            "",
            "sometime next week",
            "2026-13-45",
            "1733300000",
            "04/12/2026",
        ] {
            assert_eq!(expires_at(raw), None, "{raw}");
        }
    }
}

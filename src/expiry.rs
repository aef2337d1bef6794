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

#[cfg(test)]
mod tests {
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

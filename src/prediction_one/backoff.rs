//! How long to wait before the next attempt: jittered exponential backoff,
//! or the server's `Retry-After` when it sends one.
//!
//! Written by hand because it is a dozen lines: the retry crates would wrap
//! the whole call and hide the per-attempt classification the contract needs.

use std::time::Duration;

use chrono::{DateTime, Utc};

const BASE: Duration = Duration::from_millis(200);
const CAP: Duration = Duration::from_secs(5);
/// A `Retry-After` longer than this is not waited for: the call fails as
/// throttled and the caller (Step Functions, SQS, the schedule) retries later,
/// rather than burning the Lambda's time asleep.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(20);

/// "Full jitter" backoff before attempt `next_attempt` (2 for the first retry).
pub fn jittered(next_attempt: u32) -> Duration {
    let exp = BASE.saturating_mul(1u32 << next_attempt.saturating_sub(2).min(16));
    let ceiling = exp.min(CAP);
    // At least 10% of the ceiling so that retries never hammer back-to-back.
    let floor = ceiling / 10;
    floor + ceiling.mul_f64(fastrand::f64() * 0.9)
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = DateTime::parse_from_rfc2822(value)
        .ok()?
        .with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_the_growing_window() {
        for attempt in 2..10 {
            let ceiling = BASE.saturating_mul(1 << (attempt - 2)).min(CAP);
            for _ in 0..200 {
                let d = jittered(attempt);
                assert!(
                    d >= ceiling / 10 && d <= ceiling,
                    "attempt {attempt}: {d:?}"
                );
            }
        }
        let samples: std::collections::HashSet<_> = (0..50).map(|_| jittered(4)).collect();
        assert!(samples.len() > 1, "no jitter");
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 10:00:07 GMT", now),
            Some(Duration::from_secs(7))
        );
        assert_eq!(
            parse_retry_after("Fri, 27 Nov 2026 09:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }
}

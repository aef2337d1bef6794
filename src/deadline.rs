//! The invocation's time budget (SPEC section 10).
//!
//! Lambda gives each invocation a deadline; the function keeps
//! `P1_DEADLINE_MARGIN_MS` of it back. So there are two points in time:
//!
//! - **work**: the deadline less the margin. Every vendor attempt, backoff
//!   sleep, `Retry-After` wait, read before the key is fetched, and new SQS
//!   record must end by then.
//! - **finish**: the deadline less a small reserve for sending the answer.
//!   The margin between the two is for the key: once one is fetched it is
//!   stored, and its hand-off attempted, by then, so a key is never fetched
//!   and dropped for want of time.
//!
//! Instants, not wall-clock times: the runtime's deadline (milliseconds
//! since the epoch) is turned into an [`Instant`] once, on arrival.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

tokio::task_local! {
    /// When the port call being run must end: set around each call by
    /// [`Deadline::work`] and [`Deadline::finish`], so that an adapter that
    /// makes attempts of its own (the AWS SDK's, `crate::aws`) can size
    /// them to the time the call has, instead of only being cut off.
    static CALL_ENDS: Instant;
}

/// The time left for the port call being run, when it runs under
/// [`Deadline::work`] or [`Deadline::finish`] (`None` outside them).
pub fn call_time_left() -> Option<Duration> {
    CALL_ENDS
        .try_with(|end| end.saturating_duration_since(Instant::now()))
        .ok()
}

/// The longest a Lambda invocation can run; the budget of callers that have
/// no deadline of their own (tests, tools).
pub const MAX_INVOCATION: Duration = Duration::from_secs(900);

/// Most of what answering takes: serialising a small JSON value and one
/// loopback POST to the Runtime API.
const ANSWER_RESERVE: Duration = Duration::from_millis(250);

/// 2001-09-09 in milliseconds since the epoch: any real deadline is later.
pub const PLAUSIBLE_EPOCH_MS: u64 = 1_000_000_000_000;

/// A record or request does not start with less work time than this: one
/// Secrets Manager round trip would not fit.
pub const MIN_START: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    work: Instant,
    finish: Instant,
}

/// A call that did not end within its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfTime;

impl Deadline {
    /// The budget for an invocation that must answer by `deadline`,
    /// keeping `margin` back for storing and handing off a fetched key.
    pub fn new(deadline: Instant, margin: Duration) -> Self {
        let now = Instant::now();
        let reserve = ANSWER_RESERVE.min(margin / 4);
        let finish = deadline.checked_sub(reserve).unwrap_or(now).max(now);
        let work = deadline.checked_sub(margin).unwrap_or(now).max(now);
        Deadline {
            work: work.min(finish),
            finish,
        }
    }

    /// The budget from the runtime's deadline in milliseconds since the
    /// epoch (`LambdaEvent::context.deadline`).
    ///
    /// Lambda always sends one; some local emulators send a value that is
    /// no time at all (0, or `cargo lambda watch`'s 600000). A value before
    /// 2001 ([`PLAUSIBLE_EPOCH_MS`]) is taken as "no deadline given": the
    /// longest invocation Lambda allows, with a warning.
    pub fn from_epoch_millis(deadline_ms: u64, margin: Duration) -> Self {
        if deadline_ms < PLAUSIBLE_EPOCH_MS {
            tracing::warn!(
                deadline_ms,
                "the runtime's deadline is not a time; working to Lambda's 15-minute limit"
            );
            return Self::after(MAX_INVOCATION, margin);
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let left = Duration::from_millis(deadline_ms.saturating_sub(now_ms));
        Self::new(Instant::now() + left, margin)
    }

    /// A budget of `total` from now with `margin` kept back.
    pub fn after(total: Duration, margin: Duration) -> Self {
        Self::new(Instant::now() + total, margin)
    }

    /// Time left for work before a key is fetched.
    pub fn work_left(&self) -> Duration {
        self.work.saturating_duration_since(Instant::now())
    }

    /// Time left for storing, handing off and reporting.
    pub fn finish_left(&self) -> Duration {
        self.finish.saturating_duration_since(Instant::now())
    }

    /// The same budget with `keep` less time for work: a phase that must
    /// leave time for what follows it (the sweep's reads leave time for its
    /// renewals). Its finish point is the invocation's.
    pub fn keeping(&self, keep: Duration) -> Deadline {
        let now = Instant::now();
        Deadline {
            work: self
                .work
                .checked_sub(keep)
                .unwrap_or(now)
                .max(now)
                .min(self.work),
            finish: self.finish,
        }
    }

    /// Whether new work (a request, an SQS record) may still start.
    pub fn can_start(&self) -> bool {
        self.work_left() >= MIN_START
    }

    /// Runs a port call within the work budget; running out of time is the
    /// port's own error (`From<OutOfTime>`).
    pub async fn work<T, E: From<OutOfTime>>(
        &self,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        bounded(self.work_left(), call).await
    }

    /// Runs a port call within the finish budget (a fetched key's storing
    /// and hand-off, a report to Step Functions).
    pub async fn finish<T, E: From<OutOfTime>>(
        &self,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        bounded(self.finish_left(), call).await
    }

    /// The same, keeping `reserve` of the finish budget for what must
    /// follow the call (reading a write back when its answer was lost).
    pub async fn finish_keeping<T, E: From<OutOfTime>>(
        &self,
        reserve: Duration,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        bounded(self.finish_left().saturating_sub(reserve), call).await
    }
}

async fn bounded<T, E: From<OutOfTime>>(
    budget: Duration,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    let ends = Instant::now() + budget;
    match CALL_ENDS
        .scope(ends, tokio::time::timeout(budget, call))
        .await
    {
        Ok(result) => result,
        Err(_) => Err(OutOfTime.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_is_kept_back_from_work_not_from_finishing() {
        let d = Deadline::after(Duration::from_secs(10), Duration::from_secs(2));
        assert!(d.work_left() <= Duration::from_secs(8));
        assert!(d.work_left() > Duration::from_millis(7_900));
        assert!(d.finish_left() <= Duration::from_millis(9_750));
        assert!(d.finish_left() > Duration::from_millis(9_650));
    }

    #[test]
    fn a_margin_larger_than_the_time_left_leaves_no_work() {
        let d = Deadline::after(Duration::from_secs(1), Duration::from_secs(2));
        assert_eq!(d.work_left(), Duration::ZERO);
        assert!(!d.can_start());
        assert!(d.finish_left() > Duration::from_millis(600));
        let passed = Deadline::from_epoch_millis(PLAUSIBLE_EPOCH_MS + 1, Duration::ZERO);
        assert_eq!(passed.finish_left(), Duration::ZERO);
    }

    #[test]
    fn an_emulators_non_time_is_the_longest_invocation() {
        for junk in [0, 600_000] {
            let d = Deadline::from_epoch_millis(junk, Duration::from_secs(2));
            assert!(d.work_left() > Duration::from_secs(890), "{junk}");
        }
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let d = Deadline::from_epoch_millis(now_ms + 5_000, Duration::from_secs(1));
        assert!(d.work_left() <= Duration::from_secs(4) && d.work_left() > Duration::from_secs(3));
    }

    #[test]
    fn no_margin_means_work_until_the_deadline() {
        let d = Deadline::after(Duration::from_secs(5), Duration::ZERO);
        assert!(d.work_left() > Duration::from_millis(4_900));
        assert_eq!(d.work, d.finish);
    }

    #[tokio::test]
    async fn calls_end_when_their_budget_does() {
        let d = Deadline::after(Duration::from_millis(400), Duration::from_millis(200));
        let started = Instant::now();
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok::<_, OutOfTime>(())
        };
        assert_eq!(d.work(slow).await, Err(OutOfTime));
        assert!(started.elapsed() < Duration::from_millis(350));
        assert_eq!(d.finish(async { Ok::<_, OutOfTime>(7) }).await, Ok(7));
    }

    #[tokio::test]
    async fn a_call_knows_how_long_it_has() {
        assert_eq!(call_time_left(), None);
        let d = Deadline::after(Duration::from_secs(10), Duration::from_secs(2));
        let seen = |_: ()| async { Ok::<_, OutOfTime>(call_time_left()) };
        let work = d.work(seen(())).await.unwrap().unwrap();
        assert!(work <= Duration::from_secs(8) && work > Duration::from_millis(7_800));
        let finish = d.finish(seen(())).await.unwrap().unwrap();
        assert!(finish > Duration::from_millis(9_500), "{finish:?}");
        assert_eq!(call_time_left(), None);
    }
}

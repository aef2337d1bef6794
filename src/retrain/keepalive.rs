//! A transfer's task kept alive, and a stalled transfer ended (SPEC
//! section 11: "a runner that is still working keeps its task alive").
//!
//! While a `start` uploads or a `save_results` saves, Step Functions hears
//! from the task every [`HEARTBEAT_EVERY`] (SendTaskHeartbeat), so that a
//! task whose heartbeat limit is longer lives as long as its work. And a
//! transfer in which no byte moved for [`STALL_AFTER`] (before all of it
//! went through) is ended, to be retried while time is left, instead of
//! holding its runner until the deadline.

use std::future::Future;
use std::time::Duration;

use crate::deadline::Deadline;
use crate::handoff::{Handoff, HandoffError};
use crate::sensitive::TaskToken;
use crate::transfer::Progress;

/// How often a working runner heartbeats its task.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// A transfer that moved no byte for this long has stalled.
pub const STALL_AFTER: Duration = Duration::from_secs(30);
/// How often the watch looks.
const LOOK_EVERY: Duration = Duration::from_millis(500);

/// The watch's pace: [`PACE`] in the functions, shorter in unit tests.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    pub heartbeat_every: Duration,
    pub stall_after: Duration,
    pub look_every: Duration,
}

pub const PACE: Pace = Pace {
    heartbeat_every: HEARTBEAT_EVERY,
    stall_after: STALL_AFTER,
    look_every: LOOK_EVERY,
};

/// A transfer that moved no byte for [`STALL_AFTER`].
#[derive(Debug, PartialEq, Eq)]
pub struct Stalled;

/// Runs `transfer`, heartbeating `token`'s task (when there is one) every
/// [`HEARTBEAT_EVERY`], and ends it as [`Stalled`] when no byte moved for
/// [`STALL_AFTER`] before `expected` bytes (when known) went through. A
/// task found gone stops the heartbeats, not the work: the start record
/// makes a retry of the task find what it did.
pub async fn keep_alive<T>(
    handoff: &impl Handoff,
    token: Option<&TaskToken>,
    progress: &Progress,
    expected: Option<u64>,
    deadline: &Deadline,
    transfer: impl Future<Output = T>,
) -> Result<T, Stalled> {
    keep_alive_at(PACE, handoff, token, progress, expected, deadline, transfer).await
}

async fn keep_alive_at<T>(
    pace: Pace,
    handoff: &impl Handoff,
    token: Option<&TaskToken>,
    progress: &Progress,
    expected: Option<u64>,
    deadline: &Deadline,
    transfer: impl Future<Output = T>,
) -> Result<T, Stalled> {
    let watch = async {
        let mut beat = tokio::time::Instant::now();
        let mut alive = token.is_some();
        loop {
            tokio::time::sleep(pace.look_every).await;
            let done = expected.is_some_and(|n| progress.bytes() >= n);
            if !done && progress.idle() >= pace.stall_after {
                return Stalled;
            }
            if alive && beat.elapsed() >= pace.heartbeat_every {
                beat = tokio::time::Instant::now();
                alive = !heartbeat(handoff, token, deadline).await;
            }
        }
    };
    tokio::select! {
        out = transfer => Ok(out),
        stalled = watch => Err(stalled),
    }
}

/// Sends one heartbeat, when there is a token; whether the task is gone.
/// Other failures are logged: a heartbeat is no reason to stop the work.
pub async fn heartbeat(
    handoff: &impl Handoff,
    token: Option<&TaskToken>,
    deadline: &Deadline,
) -> bool {
    let Some(token) = token else {
        return false;
    };
    match tokio::time::timeout(
        HEARTBEAT_EVERY,
        deadline.finish(handoff.task_heartbeat(token)),
    )
    .await
    {
        Ok(Ok(())) => false,
        Ok(Err(HandoffError::TaskGone { code, .. })) => {
            tracing::warn!(
                code,
                "Step Functions no longer waits for this task; the work goes on and is recorded"
            );
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "a heartbeat failed");
            false
        }
        Err(_) => {
            tracing::warn!("a heartbeat got no answer in time");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fakes::FakeHandoff;
    use crate::transfer::Payload;
    use http_body_util::BodyExt;

    /// The functions' pace, a hundred times faster.
    const FAST: Pace = Pace {
        heartbeat_every: Duration::from_millis(50),
        stall_after: Duration::from_millis(300),
        look_every: Duration::from_millis(5),
    };

    fn deadline() -> Deadline {
        Deadline::after(Duration::from_secs(60), Duration::from_secs(2))
    }

    #[tokio::test]
    async fn a_slow_transfer_heartbeats_its_task_and_a_finished_one_waits_unstalled() {
        let handoff = FakeHandoff::default();
        let token = TaskToken::new("tt");
        let progress = Progress::default();
        // Slower than a stall in all, a byte every 100 ms: never stalled.
        let transfer = async {
            for _ in 0..5 {
                let mut chunk = Payload::from_bytes(vec![1u8]).watched(&progress);
                let _ = chunk.body.frame().await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            7
        };
        let out = keep_alive_at(
            FAST,
            &handoff,
            Some(&token),
            &progress,
            Some(5),
            &deadline(),
            transfer,
        )
        .await;
        assert_eq!(out, Ok(7));
        assert!(
            *handoff.heartbeats.lock().unwrap() >= 2,
            "heartbeats while it ran"
        );

        // All bytes sent, then twice the stall time waiting for the
        // answer: not a stall.
        let waiting = tokio::time::sleep(FAST.stall_after * 2);
        assert_eq!(
            keep_alive_at(
                FAST,
                &handoff,
                None,
                &progress,
                Some(5),
                &deadline(),
                waiting
            )
            .await,
            Ok(())
        );
    }

    #[tokio::test]
    async fn a_transfer_that_moves_nothing_stalls() {
        let handoff = FakeHandoff::default();
        let progress = Progress::default();
        let stuck = std::future::pending::<()>();
        let out = keep_alive_at(
            FAST,
            &handoff,
            None,
            &progress,
            Some(10),
            &deadline(),
            stuck,
        )
        .await;
        assert_eq!(out, Err(Stalled));
        assert_eq!(
            *handoff.heartbeats.lock().unwrap(),
            0,
            "no token, no heartbeat"
        );
    }
}

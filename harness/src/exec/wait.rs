//! The one way the harness waits: poll an operation until it succeeds enough times in a row,
//! backing off between attempts, within a deadline.
//!
//! Readiness of processes and configuration reaching a gateway are both "eventually true"
//! conditions; a fixed sleep either wastes time or is too short on a loaded machine. A failed wait
//! says what it waited for, how many attempts it made and the last error seen. An attempt that
//! knows no later attempt can succeed (the process being waited for has exited) returns
//! [`GiveUp`], and the wait ends at once instead of running out its time.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::time::{Duration, Instant};

/// An attempt's error that no further attempt can cure; it ends the wait at once. Return it as
/// the attempt's error, directly or inside an `anyhow::Error`.
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub(crate) struct GiveUp(pub anyhow::Error);

/// The wait ended without the condition holding.
#[derive(Debug)]
pub struct RetryError {
    pub what: String,
    pub attempts: u32,
    pub elapsed: Duration,
    pub best_streak: u32,
    pub needed: u32,
    pub last_error: String,
    /// The last attempt returned [`GiveUp`]; the time had not run out.
    pub gave_up: bool,
}

impl fmt::Display for RetryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let RetryError {
            what,
            attempts,
            elapsed,
            best_streak,
            needed,
            last_error,
            gave_up,
        } = self;
        if *gave_up {
            write!(
                f,
                "gave up waiting for {what} after {elapsed:?} and {attempts} attempts: {last_error}"
            )
        } else {
            write!(
                f,
                "timed out after {elapsed:?} waiting for {what}: {attempts} attempts, \
                 {best_streak} success(es) in a row at best (needed {needed}); last error: \
                 {last_error}"
            )
        }
    }
}

impl std::error::Error for RetryError {}

fn is_give_up(err: &dyn Any) -> bool {
    err.downcast_ref::<GiveUp>().is_some()
        || err
            .downcast_ref::<anyhow::Error>()
            .is_some_and(|err| err.is::<GiveUp>())
}

/// How to poll: a deadline, a backoff that grows up to a cap, and how many successes in a row
/// count as done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    pub timeout: Duration,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    pub successes_in_a_row: u32,
}

impl Retry {
    /// A wait that ends at the first success.
    pub fn within(timeout: Duration) -> Self {
        Retry {
            timeout,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(500),
            successes_in_a_row: 1,
        }
    }

    /// Requires `n` consecutive successes, e.g. while configuration is still propagating and an
    /// early success may be followed by a failure.
    pub(crate) fn successes_in_a_row(mut self, n: u32) -> Self {
        self.successes_in_a_row = n.max(1);
        self
    }

    pub(crate) fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Polls `attempt` until it has succeeded `successes_in_a_row` times in a row, and returns
    /// the last success. Between successes the poll goes on at the initial backoff; after a
    /// failure the backoff doubles up to the cap. The last attempt is shortened so the whole wait
    /// never outlasts the timeout by more than one attempt.
    pub async fn run<T, E, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, RetryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: fmt::Display + 'static,
    {
        let start = Instant::now();
        let deadline = start + self.timeout;
        let mut attempts = 0;
        let mut streak = 0;
        let mut best_streak = 0;
        let mut backoff = self.initial_backoff;
        let mut last_error = String::from("no attempt finished before the deadline");
        let mut saw_error = false;
        loop {
            attempts += 1;
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining.max(Duration::from_millis(1)), attempt()).await {
                Ok(Ok(value)) => {
                    streak += 1;
                    best_streak = best_streak.max(streak);
                    if streak >= self.successes_in_a_row {
                        return Ok(value);
                    }
                    backoff = self.initial_backoff;
                }
                Ok(Err(err)) => {
                    streak = 0;
                    last_error = format!("{err:#}");
                    saw_error = true;
                    if is_give_up(&err) {
                        return Err(RetryError {
                            what: what.to_string(),
                            attempts,
                            elapsed: start.elapsed(),
                            best_streak,
                            needed: self.successes_in_a_row,
                            last_error,
                            gave_up: true,
                        });
                    }
                }
                Err(_) => {
                    streak = 0;
                    const CUT: &str = "the attempt itself did not finish before the deadline";
                    // What an earlier attempt saw explains the timeout better than the cut.
                    last_error = if saw_error {
                        format!(
                            "{last_error} (then the last attempt did not finish before the deadline)"
                        )
                    } else {
                        CUT.to_string()
                    };
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RetryError {
                    what: what.to_string(),
                    attempts,
                    elapsed: now - start,
                    best_streak,
                    needed: self.successes_in_a_row,
                    last_error,
                    gave_up: false,
                });
            }
            tokio::time::sleep(backoff.min(deadline - now)).await;
            if streak == 0 {
                backoff = (backoff * 2).min(self.max_backoff);
            }
        }
    }
}

/// What one poll of a wait saw.
#[derive(Debug)]
pub(crate) enum Attempt<T> {
    Done(T),
    /// Not there yet: the state seen, for the timeout message.
    NotYet(String),
}

/// Polls `attempt` (with the project's retry primitive, backing off from `interval`) until it is
/// done, fails, or `timeout` passes. The timeout error says what was awaited, how many polls
/// were made and the last state seen; an `Err` from `attempt` ends the wait at once (a state
/// that waiting cannot fix).
pub(crate) async fn wait_for<T, F, Fut>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut attempt: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Attempt<T>>>,
{
    let value = Retry::within(timeout)
        .backoff(interval, interval * 4)
        .run(what, || {
            let poll = attempt();
            async move {
                match poll.await {
                    Ok(Attempt::Done(value)) => Ok(value),
                    Ok(Attempt::NotYet(state)) => Err(anyhow::anyhow!(state)),
                    Err(err) => Err(GiveUp(err).into()),
                }
            }
        })
        .await?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    fn quick(timeout_ms: u64) -> Retry {
        Retry::within(Duration::from_millis(timeout_ms))
            .backoff(Duration::from_millis(1), Duration::from_millis(5))
    }

    #[tokio::test]
    async fn returns_the_first_success() {
        let calls = Cell::new(0);
        let value = quick(1000)
            .run("a value", || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move { if n < 3 { Err("not yet") } else { Ok(n) } }
            })
            .await
            .unwrap();
        assert_eq!(value, 3);
    }

    #[tokio::test]
    async fn a_failure_resets_the_streak() {
        // success, failure, then three successes: done at the sixth call.
        let outcomes = [true, false, true, true, true, true, true];
        let calls = Cell::new(0);
        let value = quick(1000)
            .successes_in_a_row(3)
            .run("three in a row", || {
                let n = calls.get();
                calls.set(n + 1);
                let ok = outcomes[n];
                async move { if ok { Ok(n) } else { Err("flap") } }
            })
            .await
            .unwrap();
        assert_eq!(value, 4);
    }

    #[tokio::test]
    async fn timeout_reports_attempts_and_last_error() {
        let calls = Cell::new(0);
        let err = quick(50)
            .successes_in_a_row(2)
            .run("the gateway", || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move { Err::<(), _>(format!("connection refused #{n}")) }
            })
            .await
            .unwrap_err();
        assert_eq!(err.attempts, calls.get());
        assert!(err.attempts > 1);
        let text = err.to_string();
        assert!(text.contains("waiting for the gateway"), "{text}");
        assert!(
            text.contains(&format!("last error: connection refused #{}", calls.get())),
            "{text}"
        );
        assert!(text.contains("needed 2"), "{text}");
        assert!(
            err.elapsed < Duration::from_millis(500),
            "{:?}",
            err.elapsed
        );
    }

    #[tokio::test]
    async fn a_hanging_attempt_is_cut_at_the_deadline() {
        let err = quick(50)
            .run("a hang", std::future::pending::<Result<(), String>>)
            .await
            .unwrap_err();
        assert!(err.last_error.contains("did not finish"), "{err}");
        assert!(err.elapsed < Duration::from_millis(500));
    }

    /// A wait whose last attempt is cut at the deadline still reports what the attempts before
    /// it saw: that state is what explains the timeout.
    #[tokio::test]
    async fn a_cut_last_attempt_keeps_the_state_seen_before() {
        let calls = Cell::new(0);
        let err = quick(100)
            .run("a rollout", || {
                calls.set(calls.get() + 1);
                let first = calls.get() == 1;
                async move {
                    if first {
                        Err::<(), _>("2 of 3 replicas available".to_string())
                    } else {
                        std::future::pending().await
                    }
                }
            })
            .await
            .unwrap_err();
        assert!(
            err.last_error.contains("2 of 3 replicas available"),
            "{err}"
        );
        assert!(err.last_error.contains("did not finish"), "{err}");
    }

    #[tokio::test]
    async fn give_up_ends_the_wait_at_once() {
        let calls = Cell::new(0);
        let err = quick(10_000)
            .run("a process that exited", || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move {
                    if n < 3 {
                        Err::<(), _>(anyhow::anyhow!("not yet"))
                    } else {
                        Err(GiveUp(anyhow::anyhow!("exited with status 3")).into())
                    }
                }
            })
            .await
            .unwrap_err();
        assert!(err.gave_up);
        assert_eq!(err.attempts, 3);
        assert!(err.elapsed < Duration::from_secs(5), "{:?}", err.elapsed);
        let text = err.to_string();
        assert!(
            text.starts_with("gave up waiting for a process that exited")
                && text.ends_with("exited with status 3"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn wait_for_reports_the_last_state_and_the_polls() {
        let err = wait_for(
            "the thing",
            Duration::from_millis(50),
            Duration::from_millis(10),
            || async { Ok(Attempt::<()>::NotYet("still cold".into())) },
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("waiting for the thing"), "{err}");
        assert!(err.contains("last error: still cold"), "{err}");
        assert!(err.contains("attempts"), "{err}");
    }

    #[tokio::test]
    async fn wait_for_stops_at_once_on_a_state_that_never_recovers() {
        let mut polls = 0;
        let err = wait_for(
            "n",
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                polls += 1;
                async { Err::<Attempt<()>, _>(anyhow::anyhow!("ErrImageNeverPull")) }
            },
        )
        .await
        .unwrap_err();
        assert!(format!("{err:#}").contains("ErrImageNeverPull"));
        assert_eq!(polls, 1);
    }

    #[tokio::test]
    async fn wait_for_returns_once_done() {
        let mut polls = 0;
        let value = wait_for(
            "n",
            Duration::from_secs(5),
            Duration::from_millis(1),
            || {
                polls += 1;
                let done = polls >= 3;
                async move {
                    Ok(if done {
                        Attempt::Done(7)
                    } else {
                        Attempt::NotYet("no".into())
                    })
                }
            },
        )
        .await
        .unwrap();
        assert_eq!(value, 7);
    }
}

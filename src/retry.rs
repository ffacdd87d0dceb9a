//! The one retry policy: capped exponential backoff with jitter. Every
//! wait before trying again (a batch, a claim, marking a file done, disk
//! work, start-up's database wait) takes its delays from [`Backoff`], and
//! loops that only retry use [`retry`].
//!
//! Why not a crate (`backon`, `tokio-retry`): the loops that matter (the
//! Writer's) do more than call again — they drop a connection, terminate a
//! stale backend, switch route — so only the delay schedule is shared, and
//! that is a dozen lines.

use std::future::Future;
use std::time::Duration;

/// Capped, doubling delays, each jittered to between half and all of its
/// nominal value, so retries of many daemons (or lanes) do not line up.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    cap: Duration,
}

impl Backoff {
    /// The first delay.
    pub const BASE: Duration = Duration::from_millis(100);

    /// Delays double from `BASE` up to `cap`.
    pub fn new(cap: Duration) -> Backoff {
        Backoff { attempt: 0, cap }
    }

    /// Failures so far.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// The delay before the next attempt (and counts this failure).
    pub fn next_delay(&mut self) -> Duration {
        let nominal = self.cap.min(Self::BASE.saturating_mul(2u32.saturating_pow(self.attempt.min(16))));
        self.attempt = self.attempt.saturating_add(1);
        jitter(nominal)
    }

    /// Sleeps the next delay.
    pub async fn wait(&mut self) {
        let d = self.next_delay();
        tokio::time::sleep(d).await;
    }
}

/// Between half and all of `d`.
pub fn jitter(d: Duration) -> Duration {
    use rand::RngExt;
    let ms = d.as_millis().max(2) as u64;
    Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
}

/// Runs `op` until it succeeds, fails in a way `transient` says will not
/// pass, or (with a `deadline`) the next wait would end past it: then the
/// last error is returned. Each retry is logged at warn with `what`.
pub async fn retry<T, E, F, Fut>(
    what: &str,
    mut backoff: Backoff,
    deadline: Option<tokio::time::Instant>,
    transient: impl Fn(&E) -> bool,
    mut op: F,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if transient(&e) => {
                let delay = backoff.next_delay();
                if deadline.is_some_and(|d| tokio::time::Instant::now() + delay > d) {
                    return Err(e);
                }
                tracing::warn!(error = %e, attempt = backoff.attempts(), retry_in_ms = delay.as_millis() as u64, "{what}; retrying");
                tokio::time::sleep(delay).await;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_secs(1));
        let nominal = [100, 200, 400, 800, 1000, 1000];
        for want in nominal {
            let d = b.next_delay().as_millis() as u64;
            assert!((want / 2..=want).contains(&d), "{d} ms, nominal {want}");
        }
        assert_eq!(b.attempts(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_at_success_at_a_lasting_error_or_at_the_deadline() {
        let mut calls = 0;
        let r: Result<u32, String> = retry(
            "test",
            Backoff::new(Duration::from_secs(1)),
            None,
            |_| true,
            || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 3 {
                        Err("not yet".to_owned())
                    } else {
                        Ok(n)
                    }
                }
            },
        )
        .await;
        assert_eq!(r, Ok(3));

        let mut calls = 0;
        let r: Result<(), String> = retry(
            "test",
            Backoff::new(Duration::from_secs(1)),
            None,
            |e| e != "bad",
            || {
                calls += 1;
                async { Err("bad".to_owned()) }
            },
        )
        .await;
        assert_eq!((r, calls), (Err("bad".to_owned()), 1));

        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        let mut calls = 0;
        let r: Result<(), String> = retry(
            "test",
            Backoff::new(Duration::from_secs(10)),
            Some(deadline),
            |_| true,
            || {
                calls += 1;
                async { Err("down".to_owned()) }
            },
        )
        .await;
        assert!(r.is_err());
        assert!((2..=5).contains(&calls), "{calls} calls before a 500 ms deadline");
    }
}

//! The one retry policy every Hub request goes through: a bounded number of tries with
//! exponential back-off and jitter between them (so many clients that failed together do
//! not retry together), and one rule for what is worth another try.

use std::future::Future;
use std::time::Duration;

use reqwest::StatusCode;

use super::HubError;

/// How often and how patiently a request is tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all (the first one included); at least 1.
    pub max_attempts: u32,
    /// Delay before the second try; doubled for each further one.
    pub base: Duration,
    /// The longest delay between two tries.
    pub cap: Duration,
}

impl Default for RetryPolicy {
    /// 6 tries, 0.25 s doubling up to 8 s.
    fn default() -> Self {
        Self { max_attempts: 6, base: Duration::from_millis(250), cap: Duration::from_secs(8) }
    }
}

/// What one try came to.
pub enum Try<T> {
    /// Done (successfully or with an error no further try can fix).
    Done(Result<T, HubError>),
    /// Failed in a way another try may fix (network trouble, 5xx, 429, a cut transfer).
    Again(HubError),
}

impl RetryPolicy {
    /// `HF_TAILOR_RETRY_BASE_MS` shortens (or lengthens) the first back-off delay; the rest
    /// of the policy is the default.
    pub fn from_env() -> Self {
        let mut p = Self::default();
        if let Some(ms) = std::env::var("HF_TAILOR_RETRY_BASE_MS").ok().and_then(|v| v.trim().parse::<u64>().ok()) {
            p.base = Duration::from_millis(ms);
            p.cap = p.cap.max(p.base);
        }
        p
    }

    pub fn with_attempts(self, max_attempts: u32) -> Self {
        Self { max_attempts: max_attempts.max(1), ..self }
    }

    /// The pause after failed try number `attempt` (1-based): exponential, capped, with
    /// "equal jitter" (uniform in [d/2, d]) so the delay never collapses to zero.
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self.base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16)).min(self.cap);
        let half = exp / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    /// Run `attempt(n)` for n = 1, 2, … until it is done or the tries are spent; the last
    /// retryable failure is the error then.
    pub async fn run<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T, HubError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Try<T>>,
    {
        let max = self.max_attempts.max(1);
        let mut n = 1;
        loop {
            match attempt(n).await {
                Try::Done(r) => return r,
                Try::Again(e) if n >= max => return Err(e),
                Try::Again(e) => {
                    tracing::warn!("{what}: {e}; trying again ({n}/{max})");
                    tokio::time::sleep(self.delay(n)).await;
                    n += 1;
                }
            }
        }
    }
}

/// Is this status worth another try (5xx, 429, 408)?
pub fn transient_status(s: StatusCode) -> bool {
    s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS || s == StatusCode::REQUEST_TIMEOUT
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_capped_and_jittered_within_bounds() {
        let p = RetryPolicy::default();
        for attempt in 1..20 {
            let full = (p.base * (1 << (attempt - 1).min(16))).min(p.cap);
            for _ in 0..20 {
                let d = p.delay(attempt);
                assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?} not in [{:?}, {full:?}]", full / 2);
            }
        }
        assert!(p.delay(30) <= p.cap);
    }

    #[test]
    fn tries_are_bounded_and_final_answers_stop_at_once() {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
        let p = RetryPolicy { max_attempts: 4, base: Duration::ZERO, cap: Duration::ZERO };
        let mut calls = 0;
        let r: Result<(), HubError> = rt.block_on(p.run("x", |_| {
            calls += 1;
            async { Try::Again(HubError::Http { repo: "r".into(), message: "down".into() }) }
        }));
        assert!(r.is_err());
        assert_eq!(calls, 4);
        let mut calls = 0;
        let r: Result<u32, HubError> = rt.block_on(p.run("x", |n| {
            calls += 1;
            async move {
                if n < 2 {
                    Try::Again(HubError::Http { repo: "r".into(), message: "down".into() })
                } else {
                    Try::Done(Ok(n))
                }
            }
        }));
        assert_eq!(r.unwrap(), 2);
        assert_eq!(calls, 2);
    }
}

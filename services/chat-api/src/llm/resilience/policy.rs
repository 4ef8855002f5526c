//! Which provider errors are retried, which count against the circuit
//! breaker, and which send a turn to the fallback provider.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use super::breaker::Outcome;
use crate::llm::ProviderError;

/// First backoff delay (before jitter); doubles per retry.
const MIN_DELAY: Duration = Duration::from_millis(250);
/// Longest backoff delay (before jitter).
const MAX_DELAY: Duration = Duration::from_secs(8);

/// Transient: a passing rate limit, a 5xx, or the connection failing. Never a
/// client or content error, nor an exhausted quota, nor a timeout (the
/// attempt used the call's whole deadline).
pub fn is_transient(err: &ProviderError) -> bool {
    match err {
        ProviderError::RateLimited { .. } | ProviderError::Overloaded { .. } | ProviderError::Transport(_) => true,
        ProviderError::Upstream { status, .. } => *status >= 500,
        _ => false,
    }
}

/// How an error counts for the circuit breaker: the upstream failing
/// (5xx, unreachable, too slow, unreadable answers, no token) is a failure;
/// rate limits, quota, content and client errors are not.
pub fn outcome(result: &Result<(), &ProviderError>) -> Outcome {
    match result {
        Ok(()) => Outcome::Success,
        Err(ProviderError::Upstream { status, .. }) if *status >= 500 => Outcome::Failure,
        Err(
            ProviderError::Overloaded { .. }
            | ProviderError::Timeout(_)
            | ProviderError::Transport(_)
            | ProviderError::InvalidResponse(_)
            | ProviderError::Auth(_),
        ) => Outcome::Failure,
        Err(_) => Outcome::Neutral,
    }
}

/// Whether a turn the primary failed goes to the fallback: its breaker is
/// open, its retries for a transient fault are spent, or its quota is gone.
pub fn falls_back(err: &ProviderError) -> Option<&'static str> {
    match err {
        ProviderError::Unavailable { .. } => Some("circuit_open"),
        ProviderError::QuotaExhausted { .. } => Some("quota_exhausted"),
        e if is_transient(e) => Some("retries_exhausted"),
        _ => None,
    }
}

/// The `reason` label of a retry.
pub fn retry_reason(err: &ProviderError) -> &'static str {
    match err {
        ProviderError::RateLimited { .. } => "rate_limited",
        ProviderError::Transport(_) => "connection",
        _ => "server_error",
    }
}

/// The delays between attempts: jittered exponential backoff (backon), at
/// most `max_retries` of them.
pub fn backoff(max_retries: u32) -> impl Iterator<Item = Duration> + Send {
    ExponentialBuilder::new()
        .with_min_delay(MIN_DELAY)
        .with_max_delay(MAX_DELAY)
        .with_factor(2.0)
        .with_jitter()
        .with_max_times(max_retries as usize)
        .build()
}

/// The wait before the next attempt: the upstream's own `Retry-After` (any
/// of its spellings) when it gave one, else the backoff's.
pub fn delay(err: &ProviderError, backoff: Duration) -> Duration {
    match err {
        ProviderError::RateLimited { retry_after: Some(hint), .. }
        | ProviderError::Overloaded { retry_after: hint, .. } => *hint,
        _ => backoff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_errors_are_retried() {
        let upstream = |status| ProviderError::Upstream { status, code: None, message: String::new() };
        assert!(is_transient(&upstream(500)));
        assert!(is_transient(&upstream(503)));
        assert!(is_transient(&ProviderError::Transport("reset".into())));
        assert!(is_transient(&ProviderError::RateLimited { retry_after: None, message: String::new() }));
        assert!(!is_transient(&upstream(400)));
        assert!(!is_transient(&upstream(401)));
        assert!(!is_transient(&ProviderError::ContentFiltered { message: String::new() }));
        assert!(!is_transient(&ProviderError::QuotaExhausted { message: String::new() }));
        assert!(!is_transient(&ProviderError::Timeout(Duration::from_secs(1))));
    }

    #[test]
    fn rate_limits_and_content_errors_do_not_count_for_the_breaker() {
        let rate_limited = ProviderError::RateLimited { retry_after: None, message: String::new() };
        assert_eq!(outcome(&Err(&rate_limited)), Outcome::Neutral);
        assert_eq!(outcome(&Err(&ProviderError::ContentFiltered { message: String::new() })), Outcome::Neutral);
        let bad = ProviderError::Upstream { status: 400, code: None, message: String::new() };
        assert_eq!(outcome(&Err(&bad)), Outcome::Neutral);
        let down = ProviderError::Upstream { status: 502, code: None, message: String::new() };
        assert_eq!(outcome(&Err(&down)), Outcome::Failure);
        assert_eq!(outcome(&Ok(())), Outcome::Success);
    }

    #[test]
    fn backoff_grows_with_jitter_and_stops() {
        let delays: Vec<Duration> = backoff(3).collect();
        assert_eq!(delays.len(), 3);
        for (i, d) in delays.iter().enumerate() {
            let base = MIN_DELAY * 2u32.pow(i as u32);
            assert!(*d >= base && *d <= base * 2, "retry {i}: {d:?} not within [{base:?}, {:?}]", base * 2);
        }
        assert_eq!(backoff(0).count(), 0);
    }
}

//! Provider faults: retries with backoff, a circuit breaker per endpoint and
//! an optional fallback provider, each a [`ChatProvider`] wrapped around
//! another one, so the chat service sees one provider either way:
//!
//! ```text
//! Fallback(Guarded(primary), Guarded(fallback))   or   Guarded(primary)
//! ```
//!
//! | module | what it holds |
//! | --- | --- |
//! | `policy` | which errors are retried, count against the breaker, or fall back; the backoff |
//! | `breaker` | the circuit breaker's state machine |
//! | `fallback` | the primary-then-fallback provider |
//!
//! [`Guarded`] runs every attempt under the call's deadline (`LLM_TIMEOUT_SECS`
//! from the first attempt): a retry whose wait would pass it is not made, and
//! the last error is returned instead. A streamed answer is retried only
//! while nothing of it was produced: [`Guarded::stream`] resolves with its
//! first event in hand, so an error before the first delta is retried and
//! one after it reaches the caller.

mod breaker;
mod fallback;
mod policy;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use tokio::time::Instant;

pub use breaker::BreakerState;
pub use fallback::Fallback;

use super::{ChatProvider, Completion, CompletionRequest, ProviderError, ProviderStream};
use crate::metrics::Metrics;
use breaker::{Breaker, Permit};

/// Retry and breaker settings (`LLM_MAX_RETRIES`, `LLM_BREAKER_FAILURES`,
/// `LLM_BREAKER_COOLDOWN_SECS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResilienceConfig {
    pub max_retries: u32,
    /// Consecutive failures that open the breaker; 0 turns it off.
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
}

/// The role of an endpoint (the `endpoint` label, the `/readyz` detail).
pub const PRIMARY: &str = "primary";
pub const FALLBACK: &str = "fallback";

/// The health of one provider endpoint, for `/readyz`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamHealth {
    /// `primary` or `fallback`.
    pub endpoint: &'static str,
    /// The `LLM_PROVIDER` name.
    pub provider: &'static str,
    pub breaker: BreakerState,
    /// When open: seconds until a probe is let through.
    pub retry_after: Option<Duration>,
}

/// A provider behind retries and a circuit breaker.
pub struct Guarded {
    inner: Arc<dyn ChatProvider>,
    endpoint: &'static str,
    config: ResilienceConfig,
    /// The call's deadline, from its first attempt.
    timeout: Duration,
    breaker: Arc<Breaker>,
    metrics: Arc<Metrics>,
}

impl Guarded {
    pub fn new(
        inner: Arc<dyn ChatProvider>,
        endpoint: &'static str,
        config: ResilienceConfig,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> Self {
        let (provider, gauge) = (inner.name(), metrics.clone());
        let breaker = Arc::new(Breaker::new(config.breaker_failures, config.breaker_cooldown, move |state| {
            gauge.set_breaker_state(provider, endpoint, state.gauge());
        }));
        Self { inner, endpoint, config, timeout, breaker, metrics }
    }

    pub fn health(&self) -> UpstreamHealth {
        let (breaker, retry_after) = self.breaker.state();
        UpstreamHealth { endpoint: self.endpoint, provider: self.inner.name(), breaker, retry_after }
    }

    fn permit(&self) -> Result<Permit, ProviderError> {
        self.breaker.acquire().map_err(|retry_after| ProviderError::Unavailable { retry_after })
    }

    /// Runs `attempt` until it succeeds, fails for good, or the retries or the
    /// deadline run out.
    async fn run<T, F, Fut>(&self, mut attempt: F) -> Result<T, ProviderError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let deadline = Instant::now() + self.timeout;
        let mut backoff = policy::backoff(self.config.max_retries);
        loop {
            let permit = self.permit()?;
            let left = deadline.saturating_duration_since(Instant::now());
            let result = match tokio::time::timeout(left, attempt()).await {
                Ok(result) => result,
                Err(_) => Err(ProviderError::Timeout(self.timeout)),
            };
            permit.record(policy::outcome(&result.as_ref().map(|_| ())));
            let err = match result {
                Ok(value) => return Ok(value),
                Err(e) if policy::is_transient(&e) => e,
                Err(e) => return Err(e),
            };
            let Some(next) = backoff.next() else { return Err(err) };
            let wait = policy::delay(&err, next);
            if Instant::now() + wait >= deadline {
                return Err(err);
            }
            self.metrics.count_provider_retry(self.inner.name(), self.endpoint, policy::retry_reason(&err));
            tracing::info!(error = %err.redacted(), wait_ms = wait.as_millis() as u64, endpoint = self.endpoint, "retrying the provider call");
            tokio::time::sleep(wait).await;
        }
    }
}

#[async_trait]
impl ChatProvider for Guarded {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn model(&self) -> &str {
        self.inner.model()
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        self.run(|| self.inner.complete(request)).await
    }

    async fn stream(&self, request: &CompletionRequest) -> Result<ProviderStream, ProviderError> {
        self.run(|| async {
            let mut stream = self.inner.stream(request).await?;
            // Nothing has reached the caller until the first event: an error
            // here is the attempt's, and may be retried.
            match stream.next().await {
                Some(Ok(first)) => Ok(futures::stream::once(async { Ok(first) }).chain(stream).boxed()),
                Some(Err(e)) => Err(e),
                None => Err(ProviderError::InvalidResponse("the answer stream ended without an event".into())),
            }
        })
        .await
    }

    fn upstreams(&self) -> Vec<UpstreamHealth> {
        if self.breaker.enabled() { vec![self.health()] } else { Vec::new() }
    }
}

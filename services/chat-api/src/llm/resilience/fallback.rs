//! The primary provider, then the fallback one when the primary's breaker is
//! open, its retries for a transient fault are spent, or its quota is gone.
//! Spans and metrics name the primary (the requested model); the answer's
//! `model` (and so `meta.model`) names the one that answered.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Guarded, UpstreamHealth, policy};
use crate::llm::{ChatProvider, Completion, CompletionRequest, ProviderError, ProviderStream};
use crate::metrics::Metrics;

pub struct Fallback {
    primary: Guarded,
    fallback: Guarded,
    metrics: Arc<Metrics>,
}

impl Fallback {
    pub fn new(primary: Guarded, fallback: Guarded, metrics: Arc<Metrics>) -> Self {
        Self { primary, fallback, metrics }
    }

    /// Whether `err` of the primary sends the call to the fallback (and counts it).
    fn take_over(&self, err: &ProviderError) -> bool {
        let Some(reason) = policy::falls_back(err) else { return false };
        tracing::warn!(error = %err.redacted(), reason, fallback = self.fallback.name(), "the fallback provider answers");
        self.metrics.count_provider_fallback(self.primary.name(), self.fallback.name(), reason);
        true
    }
}

#[async_trait]
impl ChatProvider for Fallback {
    fn name(&self) -> &'static str {
        self.primary.name()
    }

    fn model(&self) -> &str {
        self.primary.model()
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        match self.primary.complete(request).await {
            Err(e) if self.take_over(&e) => self.fallback.complete(request).await,
            result => result,
        }
    }

    async fn stream(&self, request: &CompletionRequest) -> Result<ProviderStream, ProviderError> {
        // `Guarded::stream` resolves only once the first event is in hand, so
        // nothing of the primary's answer reached the caller when it fails.
        match self.primary.stream(request).await {
            Err(e) if self.take_over(&e) => self.fallback.stream(request).await,
            result => result,
        }
    }

    fn upstreams(&self) -> Vec<UpstreamHealth> {
        [self.primary.upstreams(), self.fallback.upstreams()].concat()
    }
}

//! One provider call, observed: its GenAI client span (whose context goes
//! upstream as `traceparent`), its duration, time to first token and token
//! usage metrics. Whole answers and streams alike.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::spans;
use crate::llm::{ChatProvider, Completion, CompletionRequest, ProviderError, ProviderStream, Usage};
use crate::metrics::Metrics;
use crate::telemetry;

/// `error.type` of a call whose client went away before it ended.
const CANCELLED: &str = "cancelled";

/// A provider call in progress.
pub struct ProviderCall {
    span: tracing::Span,
    started: Instant,
    provider: &'static str,
    model: String,
    metrics: Arc<Metrics>,
    first_token: bool,
    ended: bool,
}

impl ProviderCall {
    /// Opens the span and points the request's `traceparent` at it.
    pub fn start(provider: &dyn ChatProvider, metrics: &Arc<Metrics>, request: &mut CompletionRequest) -> Self {
        let (name, model) = (spans::gen_ai_provider(provider.name()), provider.model());
        let span = tracing::info_span!(
            "gen_ai.chat",
            otel.name = %format!("chat {model}"),
            otel.kind = "client",
            otel.status_code = tracing::field::Empty,
            gen_ai.provider.name = name,
            gen_ai.operation.name = "chat",
            gen_ai.request.model = model,
            gen_ai.response.model = tracing::field::Empty,
            gen_ai.response.finish_reasons = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        request.traceparent = telemetry::traceparent_for(&span, request.traceparent.as_deref());
        Self {
            span,
            started: Instant::now(),
            provider: name,
            model: model.to_owned(),
            metrics: metrics.clone(),
            first_token: false,
            ended: false,
        }
    }

    /// A whole answer, bounded by `timeout`.
    pub async fn complete(
        mut self,
        provider: &dyn ChatProvider,
        request: &CompletionRequest,
        timeout: Duration,
    ) -> Result<Completion, ProviderError> {
        let call = tokio::time::timeout(timeout, provider.complete(request)).instrument(self.span.clone());
        let result = call.await.unwrap_or(Err(ProviderError::Timeout(timeout)));
        match &result {
            Ok(c) => self.succeeded(&c.model, c.finish_reason.as_deref(), c.usage),
            Err(e) => self.failed(e.error_type()),
        }
        result
    }

    /// Opens the stream (the wait for the upstream's head is the provider's to bound).
    pub async fn open(
        &mut self,
        provider: &dyn ChatProvider,
        request: &CompletionRequest,
    ) -> Result<ProviderStream, ProviderError> {
        let result = provider.stream(request).instrument(self.span.clone()).await;
        if let Err(e) = &result {
            self.failed(e.error_type());
        }
        result
    }

    /// The span, to instrument each poll of the stream.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// A delta arrived; the first one is the time to first token.
    pub fn token(&mut self) {
        if !self.first_token {
            self.first_token = true;
            self.metrics.observe_time_to_first_token(self.provider, &self.model, self.started.elapsed());
        }
    }

    pub fn succeeded(&mut self, model: &str, finish_reason: Option<&str>, usage: Option<Usage>) {
        self.span.record("gen_ai.response.model", model);
        if let Some(reason) = finish_reason {
            self.span.record("gen_ai.response.finish_reasons", reason);
        }
        if let Some(u) = usage {
            self.span.record("gen_ai.usage.input_tokens", u.prompt_tokens);
            self.span.record("gen_ai.usage.output_tokens", u.completion_tokens);
        }
        self.end(None, usage);
    }

    pub fn failed(&mut self, error_type: &'static str) {
        self.span.record("error.type", error_type);
        self.span.record("otel.status_code", "ERROR");
        self.end(Some(error_type), None);
    }

    fn end(&mut self, error_type: Option<&str>, usage: Option<Usage>) {
        if !self.ended {
            self.ended = true;
            self.metrics.observe_provider_call(self.provider, &self.model, error_type, self.started.elapsed(), usage);
        }
    }
}

impl Drop for ProviderCall {
    /// A call dropped before it ended was cancelled (its client went away).
    fn drop(&mut self) {
        if !self.ended {
            self.failed(CANCELLED);
        }
    }
}

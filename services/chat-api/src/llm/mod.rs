//! LLM providers: one trait, one implementation per provider, each speaking
//! its provider's real wire format through reqwest.
//!
//! The trait can stream: [`ChatProvider::stream`] yields text deltas then a
//! final [`StreamEvent::Done`] with usage. Providers that have not (yet)
//! implemented native streaming get the default, which wraps `complete`.

pub mod azure;
pub mod mock;
pub mod openai;
mod openai_wire;
pub mod vertex;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::Serialize;

use crate::config::ProviderConfig;

/// Who said a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

/// One message of the context sent to the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into() }
    }
}

/// A request for one assistant answer.
#[derive(Debug, Clone)]
pub struct CompletionRequest {
    /// System prompt first (if any), then history oldest first, then the new user message.
    pub messages: Vec<ChatMessage>,
    /// Our request id, sent upstream as `x-request-id` / client request id where the provider supports one.
    pub request_id: String,
    /// W3C `traceparent` to propagate, if the caller sent one.
    pub traceparent: Option<String>,
}

/// Token counts as reported by the provider.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

/// A whole answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub text: String,
    pub usage: Usage,
    /// The model that answered, as the provider names it.
    pub model: String,
    pub finish_reason: Option<String>,
}

/// One event of a streamed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    Delta(String),
    Done { usage: Usage, model: String, finish_reason: Option<String> },
}

pub type ProviderStream = BoxStream<'static, Result<StreamEvent, ProviderError>>;

/// Why a provider call failed. Messages are safe to show callers: never a key or token.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ProviderError {
    #[error("the model provider did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the model provider is rate limiting requests: {message}")]
    RateLimited { retry_after: Option<Duration>, message: String },
    #[error("the model provider's content filter blocked this request: {message}")]
    ContentFiltered { message: String },
    #[error("the model provider answered {status}: {message}")]
    Upstream { status: u16, code: Option<String>, message: String },
    #[error("the model provider could not be reached: {0}")]
    Transport(String),
    #[error("the model provider's answer could not be read: {0}")]
    InvalidResponse(String),
    #[error("could not authenticate to the model provider: {0}")]
    Auth(String),
}

impl ProviderError {
    /// Outcome label for metrics.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::RateLimited { .. } => "rate_limited",
            Self::ContentFiltered { .. } => "content_filtered",
            _ => "error",
        }
    }

    /// Maps a reqwest transport failure, telling timeouts apart.
    pub fn from_reqwest(err: &reqwest::Error, timeout: Duration) -> Self {
        if err.is_timeout() {
            Self::Timeout(timeout)
        } else {
            // Without the URL: it may carry a key in its query.
            Self::Transport(err.without_url_string())
        }
    }
}

trait ReqwestErrorExt {
    fn without_url_string(&self) -> String;
}

impl ReqwestErrorExt for reqwest::Error {
    fn without_url_string(&self) -> String {
        let mut s = String::new();
        let mut source: Option<&dyn std::error::Error> = Some(self);
        let mut first = true;
        while let Some(err) = source {
            let text = if first {
                // reqwest::Error's own Display includes the URL; rebuild it without.
                if self.is_connect() {
                    "connection failed".to_owned()
                } else if self.is_request() {
                    "request failed".to_owned()
                } else if self.is_body() || self.is_decode() {
                    "bad response body".to_owned()
                } else {
                    "HTTP error".to_owned()
                }
            } else {
                err.to_string()
            };
            if !s.is_empty() {
                s.push_str(": ");
            }
            s.push_str(&text);
            first = false;
            source = err.source();
        }
        s
    }
}

/// A model provider.
#[async_trait]
pub trait ChatProvider: Send + Sync + 'static {
    /// The `LLM_PROVIDER` name (`azure-openai`, ...), a metrics label.
    fn name(&self) -> &'static str;

    /// The configured model (or deployment) name, a metrics label.
    fn model(&self) -> &str;

    /// One whole answer.
    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError>;

    /// The answer as a stream of deltas ending in `Done`.
    async fn stream(&self, request: &CompletionRequest) -> Result<ProviderStream, ProviderError> {
        let completion = self.complete(request).await?;
        let events = vec![
            Ok(StreamEvent::Delta(completion.text)),
            Ok(StreamEvent::Done {
                usage: completion.usage,
                model: completion.model,
                finish_reason: completion.finish_reason,
            }),
        ];
        Ok(Box::pin(futures::stream::iter(events)))
    }
}

/// Builds the configured provider.
pub fn build(config: &ProviderConfig, http: reqwest::Client, timeout: Duration) -> Arc<dyn ChatProvider> {
    match config {
        ProviderConfig::AzureOpenAi { endpoint, deployment, api_version, api_key } => {
            Arc::new(azure::AzureOpenAi::new(
                http,
                endpoint.clone(),
                deployment.clone(),
                api_version.clone(),
                api_key.clone(),
                timeout,
            ))
        }
        ProviderConfig::VertexAi { project_id, location, model, endpoint, metadata_host } => {
            Arc::new(vertex::VertexAi::new(
                http,
                endpoint.clone(),
                project_id.clone(),
                location.clone(),
                model.clone(),
                metadata_host,
                timeout,
            ))
        }
        ProviderConfig::OpenAi { base_url, model, api_key } => {
            Arc::new(openai::OpenAiCompatible::new(http, base_url.clone(), model.clone(), api_key.clone(), timeout))
        }
        ProviderConfig::Mock => Arc::new(mock::MockProvider::new()),
    }
}

/// Parses a `Retry-After` header (seconds or HTTP date; we honour seconds).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

//! LLM providers: one small trait, [`ChatProvider`], and one implementation
//! per wire format, each speaking its provider's real protocol through reqwest:
//!
//! | module | what it holds |
//! | --- | --- |
//! | [`openai`] | the chat-completions provider (Azure OpenAI and any OpenAI-compatible server: one implementation, with pluggable URL and auth) and its wire types |
//! | [`vertex`] | Vertex AI Gemini (`generateContent` / `streamGenerateContent?alt=sse`) and its wire types |
//! | [`mock`] | the offline, deterministic provider |
//! | [`connections`] | the set of HTTP clients carrying model calls (several HTTP/2 connections when one is full) |
//! | `http` | sending a request under a timeout; header helpers |
//! | `upstream_error` | turning a non-2xx answer (or an error in a stream) into a [`ProviderError`] without leaking credentials |
//! | [`resilience`] | retries with backoff, the circuit breaker per endpoint, the fallback provider |
//! | `sse` | decoding a server-sent-events body (framing by the `eventsource-stream` crate) into [`StreamEvent`]s |

pub mod connections;
mod http;
pub mod mock;
pub mod openai;
pub mod resilience;
mod sse;
mod upstream_error;
pub mod vertex;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use serde::Serialize;

pub use connections::Connections;

use crate::config::ProviderConfig;
use crate::metrics::Metrics;

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
    /// System messages first (if any), then history oldest first, then the new user message.
    pub messages: Vec<ChatMessage>,
    /// Our request id, sent upstream as `x-request-id` / client request id where the provider supports one.
    pub request_id: String,
    /// W3C `traceparent` to propagate, if any.
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
    /// Never empty (an empty answer is an error).
    pub text: String,
    /// `None` when the provider reported no usage (the caller may estimate it).
    pub usage: Option<Usage>,
    /// The model that answered, as the provider names it.
    pub model: String,
    /// OpenAI vocabulary (`stop`, `length`, ...), whatever the provider.
    pub finish_reason: Option<String>,
}

/// One event of a streamed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// A piece of the answer, never empty, in order.
    Delta(String),
    /// The answer is complete. Same meaning as [`Completion`]'s fields.
    Done { usage: Option<Usage>, model: String, finish_reason: Option<String> },
}

/// A streamed answer: see [`ChatProvider::stream`].
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
    /// A 5xx that says when to come back (`Retry-After` or its millisecond
    /// spellings): the upstream is overloaded or restarting.
    #[error("the model provider is overloaded (HTTP {status}): {message}")]
    Overloaded { status: u16, retry_after: Duration, message: String },
    /// The provider finished without an answer (no text), for a reason other than a filter.
    #[error("the model provider gave no answer: {0}")]
    NoAnswer(String),
    #[error("the model provider could not be reached: {0}")]
    Transport(String),
    #[error("the model provider's answer could not be read: {0}")]
    InvalidResponse(String),
    #[error("could not authenticate to the model provider: {0}")]
    Auth(String),
    /// OpenAI's `429 insufficient_quota`: the account is out of credit or over
    /// its spending limit. Not a passing rate limit: never retried.
    #[error("the model provider's quota for this service is exhausted: {message}")]
    QuotaExhausted { message: String },
    /// The circuit breaker is open: the provider failed repeatedly and is not
    /// called until `retry_after` has passed.
    #[error("the model provider is unavailable after repeated failures; retry in {}s", retry_after.as_secs().max(1))]
    Unavailable { retry_after: Duration },
}

impl ProviderError {
    /// The `error.type` of spans and metrics (low cardinality).
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::RateLimited { .. } => "rate_limited",
            Self::ContentFiltered { .. } => "content_filtered",
            Self::QuotaExhausted { .. } => "quota_exhausted",
            Self::Unavailable { .. } => "circuit_open",
            _ => "error",
        }
    }

    /// What happened, without the provider's own text (which may quote the
    /// prompt): the only form of a provider error that logs and stored task
    /// errors carry.
    pub fn redacted(&self) -> String {
        match self {
            Self::Upstream { status, code, .. } => match code {
                Some(code) => format!("{} (HTTP {status}, {code})", self.error_type()),
                None => format!("{} (HTTP {status})", self.error_type()),
            },
            Self::Overloaded { status, .. } => format!("overloaded (HTTP {status})"),
            Self::Timeout(_) | Self::Unavailable { .. } | Self::Transport(_) | Self::Auth(_) => self.to_string(),
            _ => self.error_type().to_owned(),
        }
    }

    /// Maps a reqwest transport failure, telling timeouts apart.
    pub fn from_reqwest(err: &reqwest::Error, timeout: Duration) -> Self {
        if err.is_timeout() { Self::Timeout(timeout) } else { Self::Transport(http::describe_without_url(err)) }
    }
}

/// A model provider. Implementations are shared by every request (`Arc<dyn
/// ChatProvider>`), and wrappers (retries, circuit breakers, fallbacks) are
/// expected to implement this trait around another provider, so it stays
/// small. The contract every implementation keeps:
///
/// * **Same answer both ways.** For the same upstream answer, the deltas of
///   [`stream`](Self::stream) concatenate to exactly the text
///   [`complete`](Self::complete) returns.
/// * **No empty success.** An answer without text is an error
///   ([`ProviderError::ContentFiltered`] when a filter withheld it,
///   [`ProviderError::NoAnswer`] otherwise), never an `Ok` with empty text
///   nor a `Done` after zero deltas.
/// * **Errors are safe to show.** No key, token or URL with credentials in any
///   [`ProviderError`] text.
/// * **Timeouts** are the provider's own (its configured timeout): `complete`
///   is bounded as a whole; `stream` bounds the wait for the response head and
///   then the silence between two chunks, so a long answer that keeps flowing
///   is never cut.
/// * **Cancellation is dropping.** Dropping the future of `complete` or the
///   stream of `stream` abandons the upstream request and closes its
///   connection; nothing else needs to be called.
#[async_trait]
pub trait ChatProvider: Send + Sync + 'static {
    /// The `LLM_PROVIDER` name (`azure-openai`, `vertex-ai`, `openai`, `mock`).
    fn name(&self) -> &'static str;

    /// The configured model (or Azure deployment) name: the requested model.
    fn model(&self) -> &str;

    /// One whole answer.
    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError>;

    /// The answer as it is generated. Resolves once the upstream accepted the
    /// request: an `Err` here means nothing was generated (rate limited,
    /// rejected credentials, ...). The stream then yields zero or more
    /// [`StreamEvent::Delta`]s followed by exactly one [`StreamEvent::Done`],
    /// or ends with one `Err` (a content filter stopping the answer midway is
    /// [`ProviderError::ContentFiltered`]); nothing comes after `Done` or an
    /// error.
    async fn stream(&self, request: &CompletionRequest) -> Result<ProviderStream, ProviderError>;

    /// The circuit breakers in front of the upstream endpoints (a detail of
    /// `/readyz`); none for a provider without one.
    fn upstreams(&self) -> Vec<resilience::UpstreamHealth> {
        Vec::new()
    }
}

/// Builds the configured provider behind retries and its circuit breaker,
/// with the fallback provider when one is configured. The mock alone is not
/// wrapped: it is offline and deterministic, so a retry could only slow its
/// `/mock-error` turns down.
pub fn build_resilient(
    primary: &ProviderConfig,
    fallback: Option<&ProviderConfig>,
    settings: resilience::ResilienceConfig,
    clients: &Clients,
    timeout: Duration,
    metrics: Arc<Metrics>,
) -> Arc<dyn ChatProvider> {
    if *primary == ProviderConfig::Mock && fallback.is_none() {
        return build(primary, clients, timeout);
    }
    let guarded = |config, endpoint| {
        resilience::Guarded::new(build(config, clients, timeout), endpoint, settings, timeout, metrics.clone())
    };
    let primary = guarded(primary, resilience::PRIMARY);
    match fallback {
        Some(config) => {
            Arc::new(resilience::Fallback::new(primary, guarded(config, resilience::FALLBACK), metrics.clone()))
        }
        None => Arc::new(primary),
    }
}

/// The outbound clients a provider uses.
#[derive(Clone, Debug)]
pub struct Clients {
    /// Model calls ([`connections`]).
    pub connections: Connections,
    /// Everything else (access tokens from the metadata server).
    pub http: reqwest::Client,
}

/// Builds the configured provider (no retries, no breaker).
pub fn build(config: &ProviderConfig, clients: &Clients, timeout: Duration) -> Arc<dyn ChatProvider> {
    match config {
        ProviderConfig::AzureOpenAi { endpoint, deployment, api_version, api_key } => {
            Arc::new(openai::OpenAiChat::new(
                clients.connections.clone(),
                openai::Endpoint::azure(endpoint, deployment, api_version, api_key.clone()),
                timeout,
            ))
        }
        ProviderConfig::VertexAi { project_id, location, model, endpoint, metadata_host } => {
            Arc::new(vertex::VertexAi::new(
                clients,
                endpoint.clone(),
                project_id.clone(),
                location.clone(),
                model.clone(),
                metadata_host,
                timeout,
            ))
        }
        ProviderConfig::OpenAi { base_url, model, api_key } => Arc::new(openai::OpenAiChat::new(
            clients.connections.clone(),
            openai::Endpoint::compatible(base_url, model, api_key.clone()),
            timeout,
        )),
        ProviderConfig::Mock => Arc::new(mock::MockProvider::new()),
    }
}

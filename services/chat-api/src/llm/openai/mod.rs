//! Chat completions in the OpenAI wire format: one implementation for Azure
//! OpenAI and every OpenAI-compatible server (OpenAI, vLLM, Ollama,
//! llama.cpp, LiteLLM, ...). What differs between them, the URL and the
//! authentication, is an [`Endpoint`].

mod endpoint;
mod wire;

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};

pub use endpoint::{Auth, Endpoint};

use super::connections::{Connections, Lease};
use super::http::{optional_header, send_buffered, send_streaming, sensitive_header};
use super::{ChatProvider, Completion, CompletionRequest, ProviderError, ProviderStream, StreamEvent, sse};

fn is_json(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("application/json"))
}

/// A chat-completions endpoint as a [`ChatProvider`].
pub struct OpenAiChat {
    connections: Connections,
    endpoint: Endpoint,
    timeout: Duration,
}

impl OpenAiChat {
    pub fn new(connections: Connections, endpoint: Endpoint, timeout: Duration) -> Self {
        Self { connections, endpoint, timeout }
    }

    fn request(
        &self,
        lease: &Lease,
        request: &CompletionRequest,
        stream: bool,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let e = &self.endpoint;
        let model = e.model_in_body.then_some(e.model.as_str());
        let mut builder = lease
            .client()
            .post(e.url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(wire::request_body(model, &request.messages, stream));
        builder = match &e.auth {
            Auth::ApiKeyHeader(key) => builder.header("api-key", sensitive_header(key.expose())?),
            Auth::Bearer(key) => builder.header(AUTHORIZATION, sensitive_header(&format!("Bearer {}", key.expose()))?),
            Auth::None => builder,
        };
        let builder = optional_header(builder, e.request_id_header, Some(&request.request_id));
        Ok(optional_header(builder, "traceparent", request.traceparent.as_deref()))
    }

    fn error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        wire::chat_error(status, headers, body, self.endpoint.credential, self.endpoint.auth.secret())
    }
}

#[async_trait]
impl ChatProvider for OpenAiChat {
    fn name(&self) -> &'static str {
        self.endpoint.provider
    }

    fn model(&self) -> &str {
        &self.endpoint.model
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        let lease = self.connections.acquire();
        let (status, headers, body) = send_buffered(self.request(&lease, request, false)?, self.timeout).await?;
        if !(200..300).contains(&status) {
            return Err(self.error(status, &headers, &body));
        }
        wire::parse_completion(&body, &self.endpoint.model)
    }

    async fn stream(&self, request: &CompletionRequest) -> Result<ProviderStream, ProviderError> {
        let lease = self.connections.acquire();
        let builder = self.request(&lease, request, true)?;
        let response = send_streaming(builder, self.timeout, |s, h, b| self.error(s, h, b)).await?;
        if is_json(&response) {
            // A server that ignores `stream: true` answers whole: pass it on as one delta.
            let body = tokio::time::timeout(self.timeout, response.bytes())
                .await
                .map_err(|_| ProviderError::Timeout(self.timeout))?
                .map_err(|e| ProviderError::from_reqwest(&e, self.timeout))?;
            let c = wire::parse_completion(&body, &self.endpoint.model)?;
            let done = StreamEvent::Done { usage: c.usage, model: c.model, finish_reason: c.finish_reason };
            return Ok(Box::pin(futures::stream::iter([Ok(StreamEvent::Delta(c.text)), Ok(done)])));
        }
        let decoder = wire::ChunkDecoder::new(&self.endpoint.model, self.endpoint.auth.secret().map(str::to_owned));
        Ok(lease.hold(sse::decode(response, self.timeout, decoder)))
    }
}

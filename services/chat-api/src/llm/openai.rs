//! OpenAI-compatible chat completions (`POST {base_url}/chat/completions`,
//! optional `Authorization: Bearer`): OpenAI itself, vLLM, Ollama, LiteLLM, ...

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, HeaderMap};

use super::openai_wire::{self, ChunkDecoder};
use super::{ChatProvider, Completion, CompletionRequest, ProviderError, ProviderStream};
use crate::config::Secret;

/// A server speaking OpenAI's chat-completions API.
pub struct OpenAiCompatible {
    http: reqwest::Client,
    /// `{base_url}/chat/completions`; `base_url` includes `/v1`.
    url: String,
    model: String,
    api_key: Option<Secret>,
    timeout: Duration,
}

impl OpenAiCompatible {
    pub fn new(
        http: reqwest::Client,
        base_url: String,
        model: String,
        api_key: Option<Secret>,
        timeout: Duration,
    ) -> Self {
        let url = format!("{}/chat/completions", base_url.trim_end_matches('/'));
        Self { http, url, model, api_key, timeout }
    }

    fn request(&self, request: &CompletionRequest, stream: bool) -> Result<reqwest::RequestBuilder, ProviderError> {
        let mut builder = self
            .http
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(openai_wire::request_body(Some(&self.model), &request.messages, stream));
        if let Some(key) = &self.api_key {
            builder =
                builder.header(AUTHORIZATION, openai_wire::sensitive_header(&format!("Bearer {}", key.expose()))?);
        }
        let builder = openai_wire::optional_header(builder, "x-request-id", Some(&request.request_id));
        Ok(openai_wire::optional_header(builder, "traceparent", request.traceparent.as_deref()))
    }

    fn error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        let key = self.api_key.as_ref().map(Secret::expose).unwrap_or_default();
        openai_wire::chat_error(status, headers, body, "API key", key)
    }
}

#[async_trait]
impl ChatProvider for OpenAiCompatible {
    fn name(&self) -> &'static str {
        colloquy_contract::provider::OPENAI
    }

    fn model(&self) -> &str {
        &self.model
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        let (status, headers, body) = openai_wire::send_buffered(self.request(request, false)?, self.timeout).await?;
        if !(200..300).contains(&status) {
            return Err(self.error(status, &headers, &body));
        }
        openai_wire::parse_completion(&body, &self.model)
    }

    async fn stream(&self, request: &CompletionRequest) -> Result<ProviderStream, ProviderError> {
        let response =
            openai_wire::send_streaming(self.request(request, true)?, self.timeout, |s, h, b| self.error(s, h, b))
                .await?;
        let secrets = self.api_key.iter().map(|k| k.expose().to_owned()).collect();
        let decoder = ChunkDecoder::new(&self.model, secrets);
        Ok(openai_wire::sse_stream(response, self.timeout, decoder))
    }
}

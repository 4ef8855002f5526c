//! Azure OpenAI chat completions
//! (`POST {endpoint}/openai/deployments/{deployment}/chat/completions?api-version=...`,
//! `api-key` header), in the OpenAI wire format.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::HeaderMap;

use super::openai_wire::{self, ChunkDecoder};
use super::{ChatProvider, Completion, CompletionRequest, ProviderError, ProviderStream};
use crate::config::Secret;

/// An Azure OpenAI deployment.
pub struct AzureOpenAi {
    http: reqwest::Client,
    /// `{endpoint}/openai/deployments/{deployment}/chat/completions`, without the query.
    url: String,
    deployment: String,
    api_version: String,
    api_key: Secret,
    timeout: Duration,
}

impl AzureOpenAi {
    pub fn new(
        http: reqwest::Client,
        endpoint: String,
        deployment: String,
        api_version: String,
        api_key: Secret,
        timeout: Duration,
    ) -> Self {
        let url = format!("{}/openai/deployments/{}/chat/completions", endpoint.trim_end_matches('/'), deployment);
        Self { http, url, deployment, api_version, api_key, timeout }
    }

    fn request(&self, request: &CompletionRequest, stream: bool) -> Result<reqwest::RequestBuilder, ProviderError> {
        let builder = self
            .http
            .post(&self.url)
            .query(&[("api-version", self.api_version.as_str())])
            .header("api-key", openai_wire::sensitive_header(self.api_key.expose())?)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(openai_wire::request_body(None, &request.messages, stream));
        let builder = openai_wire::optional_header(builder, "x-ms-client-request-id", Some(&request.request_id));
        Ok(openai_wire::optional_header(builder, "traceparent", request.traceparent.as_deref()))
    }

    fn error(&self, status: u16, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        openai_wire::chat_error(status, headers, body, "Azure OpenAI API key", self.api_key.expose())
    }
}

#[async_trait]
impl ChatProvider for AzureOpenAi {
    fn name(&self) -> &'static str {
        colloquy_contract::provider::AZURE_OPENAI
    }

    fn model(&self) -> &str {
        &self.deployment
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        let (status, headers, body) = openai_wire::send_buffered(self.request(request, false)?, self.timeout).await?;
        if !(200..300).contains(&status) {
            return Err(self.error(status, &headers, &body));
        }
        openai_wire::parse_completion(&body, &self.deployment)
    }

    async fn stream(&self, request: &CompletionRequest) -> Result<ProviderStream, ProviderError> {
        let response =
            openai_wire::send_streaming(self.request(request, true)?, self.timeout, |s, h, b| self.error(s, h, b))
                .await?;
        let decoder = ChunkDecoder::new(&self.deployment, vec![self.api_key.expose().to_owned()]);
        Ok(openai_wire::sse_stream(response, self.timeout, decoder))
    }
}

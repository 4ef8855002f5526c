//! Vertex AI Gemini: `POST {endpoint}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent`
//! (`:streamGenerateContent?alt=sse` when streaming), authenticated with the
//! workload's service account token from the metadata server.

mod wire;

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap};

use super::connections::{Connections, Lease};
use super::http::{optional_header, send_buffered, send_streaming, sensitive_header};
use super::upstream_error::{MAX_MESSAGE_CHARS, excerpt, invalid_json, parse_error_body, scrub, status_error};
use super::{ChatProvider, Clients, Completion, CompletionRequest, ProviderError, ProviderStream, sse};
use crate::gcp::metadata::MetadataTokenSource;

/// The location whose endpoint has no location prefix.
pub const GLOBAL_LOCATION: &str = "global";

/// Google's endpoint for a location: `https://aiplatform.googleapis.com` for
/// `global`, `https://{location}-aiplatform.googleapis.com` for a region.
pub fn default_endpoint(location: &str) -> String {
    if location == GLOBAL_LOCATION {
        "https://aiplatform.googleapis.com".to_owned()
    } else {
        format!("https://{location}-aiplatform.googleapis.com")
    }
}

/// A Gemini model on Vertex AI.
pub struct VertexAi {
    connections: Connections,
    /// `.../models/{model}` (the method suffix is added per call).
    model_url: String,
    model: String,
    tokens: MetadataTokenSource,
    timeout: Duration,
}

impl VertexAi {
    /// `clients.connections` carry the model calls, `clients.http` the
    /// metadata server's token requests (plain HTTP/1.1, whatever
    /// `LLM_HTTP_VERSION` says).
    pub fn new(
        clients: &Clients,
        endpoint: String,
        project_id: String,
        location: String,
        model: String,
        metadata_host: &str,
        timeout: Duration,
    ) -> Self {
        let model_url = format!(
            "{}/v1/projects/{project_id}/locations/{location}/publishers/google/models/{model}",
            endpoint.trim_end_matches('/')
        );
        let tokens = MetadataTokenSource::new(clients.http.clone(), metadata_host);
        Self { connections: clients.connections.clone(), model_url, model, tokens, timeout }
    }

    async fn request(
        &self,
        lease: &Lease,
        request: &CompletionRequest,
        stream: bool,
    ) -> Result<(reqwest::RequestBuilder, String), ProviderError> {
        let token = self.tokens.token().await.map_err(|e| ProviderError::Auth(e.to_string()))?;
        let url = if stream {
            format!("{}:streamGenerateContent?alt=sse", self.model_url)
        } else {
            format!("{}:generateContent", self.model_url)
        };
        let builder = lease
            .client()
            .post(url)
            .header(AUTHORIZATION, sensitive_header(&format!("Bearer {token}"))?)
            .header(CONTENT_TYPE, "application/json")
            .body(wire::request_body(&request.messages));
        let builder = optional_header(builder, "x-request-id", Some(&request.request_id));
        let builder = optional_header(builder, "traceparent", request.traceparent.as_deref());
        Ok((builder, token))
    }
}

/// Google's errors: 429 (`RESOURCE_EXHAUSTED`) is `RateLimited`; 403 keeps
/// Google's message (a missing IAM permission, worth reading); 401 says the
/// token was rejected; the rest is `Upstream{status, code: error.status, message}`.
fn vertex_error(status: u16, headers: &HeaderMap, body: &[u8], token: &str) -> ProviderError {
    if status == 403
        && let Some(parsed) = parse_error_body(body)
        && let Some(message) = parsed.message
    {
        let message = scrub(&excerpt(message.as_bytes(), MAX_MESSAGE_CHARS), &[token]);
        return ProviderError::Upstream { status, code: parsed.code, message: format!("permission denied: {message}") };
    }
    status_error(status, headers, body, "Vertex AI access token", &[token])
}

#[async_trait]
impl ChatProvider for VertexAi {
    fn name(&self) -> &'static str {
        colloquy_contract::provider::VERTEX_AI
    }

    fn model(&self) -> &str {
        &self.model
    }

    async fn complete(&self, request: &CompletionRequest) -> Result<Completion, ProviderError> {
        let lease = self.connections.acquire();
        let (builder, token) = self.request(&lease, request, false).await?;
        let (status, headers, body) = send_buffered(builder, self.timeout).await?;
        if !(200..300).contains(&status) {
            return Err(vertex_error(status, &headers, &body, &token));
        }
        let response: wire::GenerateContentResponse =
            serde_json::from_slice(&body).map_err(|e| invalid_json(&e, &body))?;
        wire::completion(response, &self.model, &token)
    }

    async fn stream(&self, request: &CompletionRequest) -> Result<ProviderStream, ProviderError> {
        let lease = self.connections.acquire();
        let (builder, token) = self.request(&lease, request, true).await?;
        let response = send_streaming(builder, self.timeout, |s, h, b| vertex_error(s, h, b, &token)).await?;
        Ok(lease.hold(sse::decode(response, self.timeout, wire::StreamDecoder::new(&self.model, token))))
    }
}

//! Vertex AI Gemini (`POST {endpoint}/v1/projects/{project}/locations/{location}/publishers/google/models/{model}:generateContent`),
//! authenticated with the workload's service account token from the metadata server.
//!
//! The system prompt goes in `systemInstruction`; the assistant's role is
//! `model`. Finish reasons are reported OpenAI-style (`STOP` → `stop`,
//! `MAX_TOKENS` → `length`, anything else lower-cased) so callers see one vocabulary.

use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};

use super::openai_wire::{self, SseDecoder};
use super::{
    ChatMessage, ChatProvider, Completion, CompletionRequest, ProviderError, ProviderStream, Role, StreamEvent, Usage,
};
use crate::gcp::metadata::MetadataTokenSource;

/// Candidate finish reasons meaning the answer was withheld by a safety or policy filter.
const FILTERED_FINISH_REASONS: &[&str] =
    &["SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "RECITATION", "IMAGE_SAFETY"];

/// A Gemini model on Vertex AI.
pub struct VertexAi {
    http: reqwest::Client,
    /// `.../models/{model}` (the method suffix is added per call).
    model_url: String,
    model: String,
    tokens: MetadataTokenSource,
    timeout: Duration,
}

impl VertexAi {
    pub fn new(
        http: reqwest::Client,
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
        let tokens = MetadataTokenSource::new(http.clone(), metadata_host);
        Self { http, model_url, model, tokens, timeout }
    }

    async fn request(
        &self,
        request: &CompletionRequest,
        stream: bool,
    ) -> Result<(reqwest::RequestBuilder, String), ProviderError> {
        let token = self.tokens.token().await.map_err(|e| ProviderError::Auth(e.to_string()))?;
        let url = if stream {
            format!("{}:streamGenerateContent?alt=sse", self.model_url)
        } else {
            format!("{}:generateContent", self.model_url)
        };
        let builder = self
            .http
            .post(url)
            .header(reqwest::header::AUTHORIZATION, openai_wire::sensitive_header(&format!("Bearer {token}"))?)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(request_body(&request.messages));
        let builder = openai_wire::optional_header(builder, "x-request-id", Some(&request.request_id));
        let builder = openai_wire::optional_header(builder, "traceparent", request.traceparent.as_deref());
        Ok((builder, token))
    }
}

/// Google's errors: 429 (`RESOURCE_EXHAUSTED`) is `RateLimited`; 403 keeps
/// Google's message (a missing IAM permission, worth reading); 401 says the
/// token was rejected; the rest is `Upstream{status, code: error.status, message}`.
fn vertex_error(status: u16, headers: &HeaderMap, body: &[u8], token: &str) -> ProviderError {
    if status == 403
        && let Some(parsed) = openai_wire::parse_error_body(body)
        && let Some(message) = parsed.message
    {
        let message = openai_wire::scrub(&openai_wire::excerpt(message.as_bytes(), 500), &[token]);
        return ProviderError::Upstream { status, code: parsed.code, message: format!("permission denied: {message}") };
    }
    openai_wire::status_error(status, headers, body, "Vertex AI access token", &[token])
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
        let (builder, token) = self.request(request, false).await?;
        let (status, headers, body) = openai_wire::send_buffered(builder, self.timeout).await?;
        if !(200..300).contains(&status) {
            return Err(vertex_error(status, &headers, &body, &token));
        }
        let response: GenerateContentResponse =
            serde_json::from_slice(&body).map_err(|e| openai_wire::invalid_json(&e, &body))?;
        let answer = Answer::from_response(response)?;
        let (text, finish_reason) = match answer.candidate {
            Some(c) => (c.text, c.finish_reason),
            None => return Err(ProviderError::InvalidResponse("the answer has no candidates".into())),
        };
        Ok(Completion {
            text,
            usage: answer.usage.unwrap_or_default(),
            model: answer.model_version.unwrap_or_else(|| self.model.clone()),
            finish_reason: finish_reason.as_deref().map(normalise_finish_reason),
        })
    }

    async fn stream(&self, request: &CompletionRequest) -> Result<ProviderStream, ProviderError> {
        let (builder, token) = self.request(request, true).await?;
        let response =
            openai_wire::send_streaming(builder, self.timeout, |s, h, b| vertex_error(s, h, b, &token)).await?;
        let decoder = StreamDecoder { model: self.model.clone(), usage: None, finish_reason: None };
        Ok(openai_wire::sse_stream(response, self.timeout, decoder))
    }
}

// ---------------------------------------------------------------------------
// Wire types
// ---------------------------------------------------------------------------

#[derive(Serialize)]
struct Part<'a> {
    text: &'a str,
}

#[derive(Serialize)]
struct Content<'a> {
    role: &'static str,
    parts: Vec<Part<'a>>,
}

#[derive(Serialize)]
struct SystemInstruction<'a> {
    parts: Vec<Part<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentRequest<'a> {
    contents: Vec<Content<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<SystemInstruction<'a>>,
}

/// The `generateContent` body: system messages become `systemInstruction`
/// parts, the others `contents` in order (assistant → `model`).
fn request_body(messages: &[ChatMessage]) -> Vec<u8> {
    let system: Vec<Part<'_>> =
        messages.iter().filter(|m| m.role == Role::System).map(|m| Part { text: &m.content }).collect();
    let contents = messages
        .iter()
        .filter_map(|m| {
            let role = match m.role {
                Role::System => return None,
                Role::User => "user",
                Role::Assistant => "model",
            };
            Some(Content { role, parts: vec![Part { text: &m.content }] })
        })
        .collect();
    let body = GenerateContentRequest {
        contents,
        system_instruction: (!system.is_empty()).then_some(SystemInstruction { parts: system }),
    };
    serde_json::to_vec(&body).expect("a generateContent request always serialises")
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GenerateContentResponse {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    prompt_feedback: Option<PromptFeedback>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    model_version: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<CandidateContent>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct CandidateContent {
    #[serde(default)]
    parts: Vec<ResponsePart>,
}

#[derive(Deserialize)]
struct ResponsePart {
    #[serde(default)]
    text: Option<String>,
    /// A thinking model's thought summary: not part of the answer.
    #[serde(default)]
    thought: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
    #[serde(default)]
    block_reason_message: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
    #[serde(default)]
    total_token_count: u64,
}

impl From<UsageMetadata> for Usage {
    /// Completion tokens include thinking tokens (billed as output); the total is Google's.
    fn from(u: UsageMetadata) -> Self {
        let completion = u.candidates_token_count + u.thoughts_token_count;
        let total = if u.total_token_count == 0 { u.prompt_token_count + completion } else { u.total_token_count };
        Usage { prompt_tokens: u.prompt_token_count, completion_tokens: completion, total_tokens: total }
    }
}

struct CandidateAnswer {
    text: String,
    finish_reason: Option<String>,
}

/// One response (or streamed chunk), checked for blocks.
struct Answer {
    candidate: Option<CandidateAnswer>,
    usage: Option<Usage>,
    model_version: Option<String>,
}

impl Answer {
    fn from_response(response: GenerateContentResponse) -> Result<Answer, ProviderError> {
        if let Some(reason) = response.prompt_feedback.as_ref().and_then(|f| f.block_reason.as_deref()) {
            let detail = response.prompt_feedback.as_ref().and_then(|f| f.block_reason_message.as_deref());
            let message = match detail {
                Some(d) => format!("the prompt was blocked ({reason}): {d}"),
                None => format!("the prompt was blocked ({reason})"),
            };
            return Err(ProviderError::ContentFiltered { message });
        }
        let candidate = match response.candidates.into_iter().next() {
            Some(c) => {
                if let Some(reason) = c.finish_reason.as_deref().filter(|r| FILTERED_FINISH_REASONS.contains(r)) {
                    return Err(ProviderError::ContentFiltered {
                        message: format!("the answer was withheld ({reason})"),
                    });
                }
                let text = c
                    .content
                    .map(|content| {
                        content.parts.into_iter().filter(|p| !p.thought).filter_map(|p| p.text).collect::<String>()
                    })
                    .unwrap_or_default();
                Some(CandidateAnswer { text, finish_reason: c.finish_reason })
            }
            None => None,
        };
        Ok(Answer {
            candidate,
            usage: response.usage_metadata.map(Usage::from),
            model_version: response.model_version.filter(|m| !m.is_empty()),
        })
    }
}

fn normalise_finish_reason(reason: &str) -> String {
    match reason {
        "STOP" => "stop".to_owned(),
        "MAX_TOKENS" => "length".to_owned(),
        other => other.to_ascii_lowercase(),
    }
}

/// Decodes `streamGenerateContent?alt=sse` chunks (each a whole
/// `GenerateContentResponse`); the body simply ends after the last one.
struct StreamDecoder {
    model: String,
    usage: Option<Usage>,
    finish_reason: Option<String>,
}

impl SseDecoder for StreamDecoder {
    fn on_event(&mut self, data: &str) -> Result<Vec<StreamEvent>, ProviderError> {
        let response: GenerateContentResponse =
            serde_json::from_str(data).map_err(|e| openai_wire::invalid_json(&e, data.as_bytes()))?;
        let answer = Answer::from_response(response)?;
        if let Some(model) = answer.model_version {
            self.model = model;
        }
        if let Some(usage) = answer.usage {
            self.usage = Some(usage);
        }
        let mut events = Vec::new();
        if let Some(candidate) = answer.candidate {
            if !candidate.text.is_empty() {
                events.push(StreamEvent::Delta(candidate.text));
            }
            if let Some(reason) = candidate.finish_reason {
                self.finish_reason = Some(normalise_finish_reason(&reason));
            }
        }
        Ok(events)
    }

    fn on_eof(&mut self) -> Result<Vec<StreamEvent>, ProviderError> {
        match self.finish_reason.take() {
            Some(reason) => Ok(vec![StreamEvent::Done {
                usage: self.usage.unwrap_or_default(),
                model: self.model.clone(),
                finish_reason: Some(reason),
            }]),
            None => {
                Err(ProviderError::InvalidResponse("the answer stream ended before the answer was complete".into()))
            }
        }
    }
}

//! `POST /v1/chat/completions`: OpenAI's Chat Completions, whole or streamed
//! (`chat.completion.chunk` events, `stream_options.include_usage`, then
//! `data: [DONE]`). Stateless: the request carries the whole context and
//! nothing is stored. `SYSTEM_PROMPT`, when set, comes first as everywhere.

use std::convert::Infallible;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::User;
use super::error::OpenAiErrorBody;
use super::items::{Content, role};
use super::{models, unix_now};
use crate::chat::{StatelessEvent, validate};
use crate::error::ApiError;
use crate::llm::{ChatMessage, Role, Usage};
use crate::request_id;
use crate::routes::AppState;
use crate::routes::chat::traceparent;
use crate::routes::extract::ApiJson;
use crate::routes::sse;

/// OpenAI's Chat Completions request (text only; sampling parameters such as
/// `temperature` are accepted and not passed on).
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// The configured model (see `GET /v1/models`); another is a 404 `model_not_found`.
    pub model: String,
    pub messages: Vec<ChatCompletionMessage>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// Only 1 is supported.
    pub n: Option<u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatCompletionMessage {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    pub content: Option<Content>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct StreamOptions {
    /// Send a last chunk with the usage (and no choices).
    pub include_usage: Option<bool>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CompletionUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

impl From<Usage> for CompletionUsage {
    fn from(u: Usage) -> Self {
        Self { prompt_tokens: u.prompt_tokens, completion_tokens: u.completion_tokens, total_tokens: u.total_tokens }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: &'static str,
    pub content: String,
    pub refusal: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Choice {
    pub index: u32,
    pub message: AssistantMessage,
    pub finish_reason: String,
    #[schema(value_type = Option<Object>)]
    pub logprobs: Option<serde_json::Value>,
}

/// OpenAI's chat completion.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCompletion {
    pub id: String,
    /// Always `chat.completion`.
    pub object: &'static str,
    pub created: i64,
    pub model: String,
    pub choices: Vec<Choice>,
    pub usage: CompletionUsage,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChunkDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: ChunkDelta,
    pub finish_reason: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub logprobs: Option<serde_json::Value>,
}

/// One `data:` event of a streamed completion; the stream ends with `data: [DONE]`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChatCompletionChunk {
    pub id: String,
    /// Always `chat.completion.chunk`.
    pub object: &'static str,
    pub created: i64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    /// Only in the last chunk, with `stream_options.include_usage` (choices then empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<CompletionUsage>,
}

/// The context sent upstream: `SYSTEM_PROMPT`, then the request's messages.
fn context(state: &AppState, messages: &[ChatCompletionMessage]) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_request("invalid_request", "messages must not be empty"));
    }
    if messages.len() > validate::MAX_HISTORY_ITEMS {
        return Err(ApiError::bad_request(
            "too_many_items",
            format!("{} messages; the limit is {}", messages.len(), validate::MAX_HISTORY_ITEMS),
        ));
    }
    let max_chars = state.chat.settings.max_message_chars;
    let mut context = Vec::with_capacity(messages.len() + 1);
    if let Some(prompt) = &state.chat.settings.system_prompt {
        context.push(ChatMessage::new(Role::System, prompt.as_str()));
    }
    for (i, message) in messages.iter().enumerate() {
        let content = message.content.as_ref().ok_or_else(|| {
            ApiError::bad_request("invalid_request", format!("messages[{i}].content is required (text only)"))
        })?;
        let text = validate::message(&content.text()?, max_chars)?;
        context.push(ChatMessage::new(role(&message.role)?, text));
    }
    Ok(context)
}

/// Creates a chat completion (nothing is stored).
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "openai",
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "The completion, or with `stream: true` a stream of `data: <ChatCompletionChunk>` events ending with `data: [DONE]` (a failure after it began is `data: {\"error\": ...}`)", content(
            (ChatCompletion = "application/json"),
            (ChatCompletionChunk = "text/event-stream"),
        )),
        (status = 400, description = "Invalid request", body = OpenAiErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = OpenAiErrorBody),
        (status = 404, description = "model_not_found", body = OpenAiErrorBody),
        (status = 422, description = "Blocked by the provider's content filter", body = OpenAiErrorBody),
        (status = 429, description = "The provider is rate limiting", body = OpenAiErrorBody),
        (status = 502, description = "The provider failed", body = OpenAiErrorBody),
        (status = 504, description = "The provider timed out", body = OpenAiErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    _user: User,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    if let Some(response) = models::unknown(&state, &body.model) {
        return Ok(response);
    }
    if body.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad_request("invalid_request", "only n = 1 is supported"));
    }
    let messages = context(&state, &body.messages)?;
    let request_id = request_id::current().unwrap_or_default();
    let id = format!("chatcmpl-{}", Uuid::new_v4().simple());
    let created = unix_now();
    if body.stream != Some(true) {
        let answer = state.chat.complete_stateless(messages, request_id, traceparent(&headers)).await?;
        let completion = ChatCompletion {
            id,
            object: "chat.completion",
            created,
            model: answer.completion.model,
            choices: vec![Choice {
                index: 0,
                message: AssistantMessage { role: "assistant", content: answer.completion.text, refusal: None },
                finish_reason: answer.completion.finish_reason.unwrap_or_else(|| "stop".to_owned()),
                logprobs: None,
            }],
            usage: answer.usage.into(),
        };
        return Ok(Json(completion).into_response());
    }
    let include_usage = body.stream_options.and_then(|o| o.include_usage).unwrap_or(false);
    let upstream = state.chat.stream_stateless(messages, request_id, traceparent(&headers)).await?;
    let model = state.chat.provider.model().to_owned();
    let chunk = move |choices: Vec<ChunkChoice>, usage: Option<CompletionUsage>| ChatCompletionChunk {
        id: id.clone(),
        object: "chat.completion.chunk",
        created,
        model: model.clone(),
        choices,
        usage,
    };
    let choice = |delta: ChunkDelta, finish_reason: Option<String>| ChunkChoice {
        index: 0,
        delta,
        finish_reason,
        logprobs: None,
    };
    // The first chunk names the role, as OpenAI's does.
    let first = chunk(vec![choice(ChunkDelta { role: Some("assistant"), content: Some(String::new()) }, None)], None);
    let head = futures::stream::once(async move { data(&first) });
    let events = upstream.flat_map(move |event| {
        let events: Vec<Event> = match event {
            Ok(StatelessEvent::Delta(text)) => {
                vec![data(&chunk(vec![choice(ChunkDelta { role: None, content: Some(text) }, None)], None))]
            }
            Ok(StatelessEvent::Done { usage, finish_reason, .. }) => {
                let reason = finish_reason.unwrap_or_else(|| "stop".to_owned());
                let mut events =
                    vec![data(&chunk(vec![choice(ChunkDelta { role: None, content: None }, Some(reason))], None))];
                if include_usage {
                    events.push(data(&chunk(Vec::new(), Some(usage.into()))));
                }
                events.push(Event::default().data("[DONE]"));
                events
            }
            // What OpenAI sends when a stream fails midway; the SDKs raise it.
            Err(e) => {
                e.log();
                vec![data(&OpenAiErrorBody::from_api(&e))]
            }
        };
        futures::stream::iter(events)
    });
    Ok(sse::response(head.chain(events).map(Ok::<_, Infallible>)))
}

fn data(value: &impl Serialize) -> Event {
    Event::default().data(serde_json::to_string(value).expect("chunks serialise"))
}

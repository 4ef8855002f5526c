//! OpenAI's Responses API. `POST /v1/responses` is a chat turn: with
//! `store` (the default) its input and answer are appended to a conversation
//! exactly as `/api/ai/chat` appends a turn (claimed, ordered, one atomic
//! write, usage accumulated): the conversation named by `conversation`, the
//! one `previous_response_id` belongs to, or a new one. A response's id is
//! `resp_<hex>` of its stored answer message, so `GET /v1/responses/{id}`
//! and `previous_response_id` find it without a table of their own. With
//! `store: false` nothing is stored (earlier turns are still read as context).

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::auth::User;
use super::conversations::conversation_id;
use super::error::OpenAiErrorBody;
use super::items::{InputItem, MessageItem, parse_response_id, response_id};
use super::responses_stream::{self, Step};
use super::{models, unix, unix_now};
use crate::chat::{StatelessEvent, TurnEvent, TurnInput, build_messages};
use crate::db::conversations::load_turn_context;
use crate::db::openai as store;
use crate::error::ApiError;
use crate::llm::{ChatMessage, Role, Usage};
use crate::request_id;
use crate::routes::AppState;
use crate::routes::chat::traceparent;
use crate::routes::extract::{ApiJson, ApiPath};

/// OpenAI's create-response request (text only: no tools, files, images or reasoning).
#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateResponseRequest {
    /// The configured model, if given (see `GET /v1/models`).
    pub model: Option<String>,
    /// A user message, or message items ending with a user message.
    pub input: ResponseInput,
    /// A system message for this response only (never stored).
    pub instructions: Option<String>,
    /// Append to this conversation (its UUID, or `{"id": ...}`).
    pub conversation: Option<ConversationRef>,
    /// Continue the conversation this response belongs to.
    pub previous_response_id: Option<String>,
    pub stream: Option<bool>,
    /// Store the turn (default true).
    pub store: Option<bool>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ResponseInput {
    Text(String),
    Items(Vec<InputItem>),
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ConversationRef {
    Id(String),
    Object { id: String },
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ResponseUsage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    #[schema(value_type = Object)]
    pub input_tokens_details: serde_json::Value,
    #[schema(value_type = Object)]
    pub output_tokens_details: serde_json::Value,
}

impl From<Usage> for ResponseUsage {
    fn from(u: Usage) -> Self {
        Self {
            input_tokens: u.prompt_tokens,
            output_tokens: u.completion_tokens,
            total_tokens: u.total_tokens,
            input_tokens_details: serde_json::json!({"cached_tokens": 0}),
            output_tokens_details: serde_json::json!({"reasoning_tokens": 0}),
        }
    }
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConversationId {
    pub id: String,
}

/// OpenAI's response object.
#[derive(Debug, Serialize, ToSchema)]
pub struct ResponseObject {
    /// `resp_<hex>`: the stored answer message `<hex>`.
    pub id: String,
    /// Always `response`.
    pub object: &'static str,
    pub created_at: i64,
    /// `completed` (`in_progress` in a stream's first events).
    pub status: &'static str,
    pub model: String,
    /// The answer: one assistant message item (`msg_<same hex>`).
    pub output: Vec<MessageItem>,
    /// This turn's usage; not kept per response, so absent when read back.
    pub usage: Option<ResponseUsage>,
    pub conversation: Option<ConversationId>,
    pub previous_response_id: Option<String>,
    pub instructions: Option<String>,
    pub store: bool,
    #[schema(value_type = Option<Object>)]
    pub error: Option<serde_json::Value>,
    #[schema(value_type = Option<Object>)]
    pub incomplete_details: Option<serde_json::Value>,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    pub parallel_tool_calls: bool,
    pub tool_choice: &'static str,
    #[schema(value_type = Vec<Object>)]
    pub tools: Vec<serde_json::Value>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    #[schema(value_type = Object)]
    pub text: serde_json::Value,
}

/// What a response says about itself, known before its answer.
#[derive(Debug, Clone)]
pub struct ResponseMeta {
    pub answer_id: Uuid,
    pub created_at: i64,
    pub model: String,
    pub conversation: Option<Uuid>,
    pub previous_response_id: Option<String>,
    pub instructions: Option<String>,
    pub store: bool,
}

impl ResponseMeta {
    /// The response object in `status`, with `output` and `usage`.
    pub fn object(&self, status: &'static str, output: Vec<MessageItem>, usage: Option<Usage>) -> ResponseObject {
        ResponseObject {
            id: response_id(self.answer_id),
            object: "response",
            created_at: self.created_at,
            status,
            model: self.model.clone(),
            output,
            usage: usage.map(Into::into),
            conversation: self.conversation.map(|id| ConversationId { id: id.to_string() }),
            previous_response_id: self.previous_response_id.clone(),
            instructions: self.instructions.clone(),
            store: self.store,
            error: None,
            incomplete_details: None,
            metadata: serde_json::json!({}),
            parallel_tool_calls: false,
            tool_choice: "none",
            tools: Vec::new(),
            temperature: None,
            top_p: None,
            text: serde_json::json!({"format": {"type": "text"}}),
        }
    }

    /// The answer as the response's output item.
    pub fn output(&self, text: String) -> Vec<MessageItem> {
        vec![MessageItem::new(self.answer_id, Role::Assistant, text)]
    }
}

/// The input split: instructions (the request's, then system/developer
/// items) and the messages, ending with a user message.
struct Input {
    instructions: Option<String>,
    messages: Vec<(Role, String)>,
}

fn input(body: &CreateResponseRequest) -> Result<Input, ApiError> {
    let items = match &body.input {
        ResponseInput::Text(text) => vec![(Role::User, text.clone())],
        ResponseInput::Items(items) => items.iter().map(InputItem::message).collect::<Result<_, _>>()?,
    };
    let (system, messages): (Vec<_>, Vec<_>) = items.into_iter().partition(|(role, _)| *role == Role::System);
    let instructions: Vec<String> = body
        .instructions
        .iter()
        .cloned()
        .chain(system.into_iter().map(|(_, t)| t))
        .filter(|t| !t.trim().is_empty())
        .collect();
    if messages.last().is_none_or(|(role, _)| *role != Role::User) {
        return Err(ApiError::bad_request("invalid_request", "input must end with a user message"));
    }
    Ok(Input { instructions: (!instructions.is_empty()).then(|| instructions.join("\n\n")), messages })
}

/// The conversation a request continues, if any.
async fn target(state: &AppState, user: Uuid, body: &CreateResponseRequest) -> Result<Option<Uuid>, ApiError> {
    match (&body.conversation, &body.previous_response_id) {
        (Some(_), Some(_)) => {
            Err(ApiError::bad_request("invalid_request", "send either conversation or previous_response_id, not both"))
        }
        (Some(ConversationRef::Id(id) | ConversationRef::Object { id }), None) => Ok(Some(conversation_id(id)?)),
        (None, Some(previous)) => {
            let not_found = || ApiError::NotFound(format!("previous response {previous} not found"));
            let id = parse_response_id(previous).ok_or_else(not_found)?;
            let answer = store::answer(&state.pool, id, user).await?.ok_or_else(not_found)?;
            Ok(Some(answer.conversation_id))
        }
        (None, None) => Ok(None),
    }
}

/// Puts the instructions right after the configured system prompt.
fn with_instructions(messages: &mut Vec<ChatMessage>, instructions: Option<&str>) {
    if let Some(text) = instructions {
        let at = messages.iter().take_while(|m| m.role == Role::System).count();
        messages.insert(at, ChatMessage::new(Role::System, text));
    }
}

/// Creates a response: one chat turn, stored unless `store` is false.
#[utoipa::path(
    post,
    path = "/v1/responses",
    tag = "openai",
    request_body = CreateResponseRequest,
    responses(
        (status = 200, description = "The response, or with `stream: true` the Responses events (`response.created`, `response.in_progress`, `response.output_item.added`, `response.content_part.added`, `response.output_text.delta`..., `response.output_text.done`, `response.content_part.done`, `response.output_item.done`, `response.completed` with usage; `error` when it fails midway)", content(
            (ResponseObject = "application/json"),
            (ResponseObject = "text/event-stream"),
        )),
        (status = 400, description = "Invalid request", body = OpenAiErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = OpenAiErrorBody),
        (status = 404, description = "Unknown model, conversation or previous response", body = OpenAiErrorBody),
        (status = 409, description = "Another turn of the conversation did not finish within TURN_WAIT_SECS", body = OpenAiErrorBody),
        (status = 422, description = "Blocked by the provider's content filter", body = OpenAiErrorBody),
        (status = 429, description = "The provider is rate limiting", body = OpenAiErrorBody),
        (status = 502, description = "The provider failed", body = OpenAiErrorBody),
        (status = 503, description = "Database unavailable", body = OpenAiErrorBody),
        (status = 504, description = "The provider timed out", body = OpenAiErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    User(user): User,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateResponseRequest>,
) -> Result<Response, ApiError> {
    if let Some(response) = body.model.as_deref().and_then(|m| models::unknown(&state, m)) {
        return Ok(response);
    }
    let Input { instructions, mut messages } = input(&body)?;
    let conversation = target(&state, user, &body).await?;
    let request_id = request_id::current().unwrap_or_default();
    let stream = body.stream == Some(true);
    let store = body.store.unwrap_or(true);
    let mut meta = ResponseMeta {
        answer_id: Uuid::new_v4(),
        created_at: unix_now(),
        model: state.chat.provider.model().to_owned(),
        conversation,
        previous_response_id: body.previous_response_id.clone(),
        instructions: instructions.clone(),
        store,
    };
    if !store {
        return stateless(&state, user, meta, messages, stream, request_id, traceparent(&headers)).await;
    }
    let message = messages.pop().map(|(_, text)| text).unwrap_or_default();
    // Earlier input items are stored ahead of the message: they are the
    // turn's history, which a stored turn takes only for a new conversation.
    let alternating = messages
        .iter()
        .enumerate()
        .all(|(i, (role, _))| *role == if i % 2 == 0 { Role::User } else { Role::Assistant });
    if !messages.is_empty() && (conversation.is_some() || !alternating) {
        return Err(ApiError::bad_request(
            "unsupported_input",
            "several input items must alternate user and assistant, starting with the user, and start a new \
             conversation; to add messages to an existing one, use POST /v1/conversations/{id}/items",
        ));
    }
    let input = TurnInput {
        conversation_id: conversation,
        user_id: user,
        message,
        history: messages.into_iter().map(|(_, text)| text).collect(),
        request_id,
        traceparent: traceparent(&headers),
    };
    let mut turn = state.chat.prepare(input).await?;
    with_instructions(&mut turn.request.messages, instructions.as_deref());
    meta.answer_id = turn.answer_id;
    meta.conversation = Some(turn.conversation_id);
    if stream {
        let steps = state.chat.answer_stream(turn).map(|event| match event {
            TurnEvent::Conversation { .. } => Step::Started,
            TurnEvent::Delta(text) => Step::Delta(text),
            TurnEvent::Done(out) => Step::Done { usage: out.usage, model: out.model },
            TurnEvent::Error { error, .. } => Step::Failed(error),
        });
        return Ok(responses_stream::response(meta, steps));
    }
    let out = state.chat.answer(turn).await?;
    meta.model = out.model;
    Ok(Json(meta.object("completed", meta.output(out.text), Some(out.usage))).into_response())
}

/// `store: false`: the context is the conversation's stored messages (when
/// one is named) and the input; nothing is written.
async fn stateless(
    state: &AppState,
    user: Uuid,
    meta: ResponseMeta,
    messages: Vec<(Role, String)>,
    stream: bool,
    request_id: String,
    traceparent: Option<String>,
) -> Result<Response, ApiError> {
    let settings = &state.chat.settings;
    let (mut history, summary) = match meta.conversation {
        Some(id) => {
            let context = load_turn_context(&state.pool, id, user, settings.max_history_messages, settings.summaries)
                .await?
                .ok_or_else(ApiError::conversation_not_found)?;
            (context.history, context.summary)
        }
        None => (Vec::new(), None),
    };
    let mut messages = messages;
    let (_, last) = messages.pop().unwrap_or((Role::User, String::new()));
    history.extend(messages);
    let last = crate::chat::validate::message(&last, settings.max_message_chars)?;
    let limit = settings.max_history_messages.max(history.len());
    let mut context = build_messages(settings.system_prompt.as_deref(), summary.as_deref(), history, limit, &last);
    with_instructions(&mut context, meta.instructions.as_deref());
    if stream {
        let upstream = state.chat.stream_stateless(context, request_id, traceparent).await?;
        let steps = futures::stream::once(async { Step::Started }).chain(upstream.map(|event| match event {
            Ok(StatelessEvent::Delta(text)) => Step::Delta(text),
            Ok(StatelessEvent::Done { usage, model, .. }) => Step::Done { usage, model },
            Err(e) => Step::Failed(e),
        }));
        return Ok(responses_stream::response(meta, steps));
    }
    let answer = state.chat.complete_stateless(context, request_id, traceparent).await?;
    let mut meta = meta;
    meta.model = answer.completion.model;
    Ok(Json(meta.object("completed", meta.output(answer.completion.text), Some(answer.usage))).into_response())
}

/// A stored response (its answer; the usage is not kept per response).
#[utoipa::path(
    get,
    path = "/v1/responses/{response_id}",
    tag = "openai",
    params(("response_id" = String, Path, description = "`resp_<hex>`")),
    responses(
        (status = 200, body = ResponseObject),
        (status = 401, description = "Missing or invalid credentials", body = OpenAiErrorBody),
        (status = 404, description = "Not found, or not the caller's", body = OpenAiErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn retrieve(
    State(state): State<AppState>,
    User(user): User,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ResponseObject>, ApiError> {
    let not_found = || ApiError::NotFound(format!("response {id} not found"));
    let answer_id = parse_response_id(&id).ok_or_else(not_found)?;
    let answer = store::answer(&state.pool, answer_id, user).await?.ok_or_else(not_found)?;
    let meta = ResponseMeta {
        answer_id,
        created_at: unix(answer.created_at),
        model: answer.model.unwrap_or_else(|| state.chat.provider.model().to_owned()),
        conversation: Some(answer.conversation_id),
        previous_response_id: None,
        instructions: None,
        store: true,
    };
    Ok(Json(meta.object("completed", meta.output(answer.text), None)))
}

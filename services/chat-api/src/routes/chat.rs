//! `POST /api/ai/chat` (whole or streamed) and `POST /api/ai/start-conversation`.

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

use super::AppState;
use super::extract::ApiJson;
use crate::auth::Caller;
use crate::chat::{TurnEvent, TurnInput, TurnOutput};
use crate::error::{ApiError, ErrorBody};
use crate::request_id;

/// A chat message in either of the seed's two shapes: the proxy shape
/// (`X-API-Key`: `user_message` + `client_user_id`) or the simple shape
/// (`Authorization: Bearer`: `message`).
#[derive(Debug, Deserialize, ToSchema)]
pub struct ChatRequest {
    /// Continue this conversation; omit to start a new one.
    pub conversation_id: Option<Uuid>,
    /// The user's message (proxy shape).
    pub user_message: Option<String>,
    /// The user's message (simple shape).
    pub message: Option<String>,
    /// The end user the proxying server acts for (proxy shape; required with `X-API-Key`).
    pub client_user_id: Option<Uuid>,
    /// Prior context, alternating user/assistant starting with the user; used
    /// (and stored) only when the conversation has no stored messages yet.
    pub history: Option<Vec<String>>,
    /// Stream the answer as server-sent events (as does `Accept: text/event-stream`).
    pub stream: Option<bool>,
}

/// Body of `POST /api/ai/start-conversation`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct StartConversationRequest {
    pub client_user_id: Uuid,
    /// Prior context, alternating user/assistant starting with the user.
    pub history: Option<Vec<String>>,
}

/// Token usage of this turn.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageBody {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Meta {
    /// The model that answered (`colloquy-mock` for the offline mock).
    pub model: String,
    /// This request's id (also in the `x-request-id` header).
    pub request_id: Option<String>,
}

/// The proxy-shape answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ProxyChatResponse {
    pub conversation_id: Uuid,
    pub ai_response: String,
    pub usage: UsageBody,
    pub meta: Meta,
}

/// The simple-shape answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SimpleChatResponse {
    pub conversation_id: Uuid,
    pub response: String,
}

impl From<TurnOutput> for ProxyChatResponse {
    fn from(out: TurnOutput) -> Self {
        Self {
            conversation_id: out.conversation_id,
            ai_response: out.text,
            usage: UsageBody {
                prompt_tokens: out.usage.prompt_tokens,
                completion_tokens: out.usage.completion_tokens,
                total_tokens: out.usage.total_tokens,
            },
            meta: Meta { model: out.model, request_id: Some(out.request_id) },
        }
    }
}

impl From<TurnOutput> for SimpleChatResponse {
    fn from(out: TurnOutput) -> Self {
        Self { conversation_id: out.conversation_id, response: out.text }
    }
}

/// Data of the `conversation` event, sent first.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamConversationEvent {
    pub conversation_id: Uuid,
    pub request_id: String,
}

/// Data of a `delta` event: the next piece of the answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct StreamDeltaEvent {
    pub text: String,
}

/// A streamed answer (`text/event-stream`): `event: conversation`
/// ([`StreamConversationEvent`]), then one `event: delta`
/// ([`StreamDeltaEvent`]) per piece of the answer, then `event: done` whose
/// data is exactly the non-streamed answer of the caller's shape
/// ([`ProxyChatResponse`] or [`SimpleChatResponse`]), or `event: error`
/// ([`ErrorBody`]); `: keep-alive` comment lines every 15 s of silence.
#[derive(ToSchema)]
#[allow(dead_code, reason = "describes the OpenAPI document only; never built")]
#[schema(
    example = "event: conversation\ndata: {\"conversation_id\":\"6a1c...\",\"request_id\":\"req-1\"}\n\nevent: delta\ndata: {\"text\":\"Hello\"}\n\nevent: done\ndata: {\"conversation_id\":\"6a1c...\",\"ai_response\":\"Hello\",...}\n\n"
)]
pub struct ChatEventStream(String);

pub(super) fn traceparent(headers: &HeaderMap) -> Option<String> {
    headers.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

fn required_user(client_user_id: Option<Uuid>) -> Result<Uuid, ApiError> {
    client_user_id.ok_or_else(|| ApiError::bad_request("invalid_request", "client_user_id is required with X-API-Key"))
}

/// Send a message and get the assistant's answer.
#[utoipa::path(
    post,
    path = "/api/ai/chat",
    tag = "chat",
    request_body = ChatRequest,
    responses(
        (status = 200, description = "The answer: proxy shape (X-API-Key; Bearer callers get SimpleChatResponse), or, with `\"stream\": true` or `Accept: text/event-stream`, a stream of server-sent events (ChatEventStream; failures after it began arrive as an `error` event)", content(
            (ProxyChatResponse = "application/json"),
            (ChatEventStream = "text/event-stream"),
        )),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 404, description = "Conversation not found", body = ErrorBody),
        (status = 409, description = "Another turn of the conversation did not finish within TURN_WAIT_SECS (conversation_busy)", body = ErrorBody),
        (status = 422, description = "Blocked by the provider's content filter", body = ErrorBody),
        (status = 429, description = "The provider is rate limiting", body = ErrorBody),
        (status = 502, description = "The provider failed", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
        (status = 504, description = "The provider timed out", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn chat(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<ChatRequest>,
) -> Result<Response, ApiError> {
    let user_id = match caller {
        Caller::Service => required_user(body.client_user_id)?,
        Caller::User(id) => id,
    };
    let message = match (caller, body.user_message, body.message) {
        (Caller::Service, Some(m), _) | (Caller::Service, None, Some(m)) => m,
        (Caller::User(_), _, Some(m)) | (Caller::User(_), Some(m), None) => m,
        (Caller::Service, None, None) => {
            return Err(ApiError::bad_request("invalid_request", "user_message is required"));
        }
        (Caller::User(_), None, None) => {
            return Err(ApiError::bad_request("invalid_request", "message is required"));
        }
    };
    let stream = body.stream == Some(true) || super::sse::accepts_event_stream(&headers);
    let input = TurnInput {
        conversation_id: body.conversation_id,
        user_id,
        message,
        history: body.history.unwrap_or_default(),
        request_id: request_id::current().unwrap_or_default(),
        traceparent: traceparent(&headers),
    };
    if stream {
        return Ok(event_stream(state.chat.turn_stream(input).await?, caller));
    }
    let out = state.chat.turn(input).await?;
    Ok(match caller {
        Caller::Service => Json(ProxyChatResponse::from(out)).into_response(),
        Caller::User(_) => Json(SimpleChatResponse::from(out)).into_response(),
    })
}

/// The SSE response of a streamed turn; events are written as the turn produces them.
fn event_stream(turn: crate::chat::TurnStream, caller: Caller) -> Response {
    super::sse::response(turn.map(move |event| Ok::<_, Infallible>(sse_event(event, caller))))
}

/// The last event of a streamed answer whose turn was stored.
pub const DONE_EVENT: &str = "done";

/// The `error` event of a streamed answer: the error body of a whole answer.
pub fn error_event(error: &ApiError, request_id: String) -> Event {
    let data = serde_json::to_string(&error.body(Some(request_id))).expect("error bodies serialise");
    Event::default().event("error").data(data)
}

fn sse_event(event: TurnEvent, caller: Caller) -> Event {
    let (name, data) = match event {
        TurnEvent::Conversation { conversation_id, request_id } => {
            ("conversation", serde_json::to_string(&StreamConversationEvent { conversation_id, request_id }))
        }
        TurnEvent::Delta(text) => ("delta", serde_json::to_string(&StreamDeltaEvent { text })),
        TurnEvent::Done(out) => (
            DONE_EVENT,
            match caller {
                Caller::Service => serde_json::to_string(&ProxyChatResponse::from(out)),
                Caller::User(_) => serde_json::to_string(&SimpleChatResponse::from(out)),
            },
        ),
        TurnEvent::Error { error, request_id } => return error_event(&error, request_id),
    };
    Event::default().event(name).data(data.expect("event data always serialises"))
}

/// Start a conversation for a user, optionally with prior history. When the
/// history ends with a user message it is answered; otherwise `ai_response` is empty.
#[utoipa::path(
    post,
    path = "/api/ai/start-conversation",
    tag = "chat",
    request_body = StartConversationRequest,
    responses(
        (status = 200, description = "Conversation created", body = ProxyChatResponse),
        (status = 400, description = "Invalid request", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn start_conversation(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(body): ApiJson<StartConversationRequest>,
) -> Result<Json<ProxyChatResponse>, ApiError> {
    if caller != Caller::Service {
        return Err(ApiError::Unauthorized {
            message: "start-conversation is for servers holding the internal API key (X-API-Key)".to_owned(),
            challenge: None,
        });
    }
    let out = state
        .chat
        .start(
            body.client_user_id,
            body.history.unwrap_or_default(),
            request_id::current().unwrap_or_default(),
            traceparent(&headers),
        )
        .await?;
    Ok(Json(out.into()))
}

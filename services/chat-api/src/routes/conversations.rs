//! Conversations: read one (the seed's route), list a user's, page through
//! one's messages, rename or archive one, delete one. Owner-scoped: with
//! `X-API-Key` the user is `client_user_id` (required here, except on the
//! seed's read where it is an optional filter), with a Bearer token the
//! token's subject; another user's conversation is a 404, like an unknown one.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::cursor;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use crate::auth::Caller;
use crate::chat::TITLE_CHARS;
use crate::db::conversations::{self, Conversation, StoredMessage};
use crate::db::lifecycle::{self, ConversationChange};
use crate::db::listing::{self, ListFilter, ListedConversation};
use crate::error::{ApiError, ErrorBody};

/// Default and largest page sizes.
const DEFAULT_CONVERSATIONS: u32 = 20;
const DEFAULT_MESSAGES: u32 = 50;
const MAX_PAGE: u32 = 100;
/// Longest title a user may set, in characters (as long as a first-message title).
const MAX_TITLE_CHARS: usize = TITLE_CHARS;
/// Longest title search, in characters.
const MAX_QUERY_CHARS: usize = 200;

#[derive(Debug, Deserialize, IntoParams)]
pub struct OwnerQuery {
    /// With `X-API-Key`: only return the conversation if this user owns it.
    pub client_user_id: Option<Uuid>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RequiredOwnerQuery {
    /// The end user (required with `X-API-Key`; Bearer callers are the token's subject).
    pub client_user_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationWithMessages {
    pub conversation: Conversation,
    /// Oldest first.
    pub messages: Vec<StoredMessage>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// The end user (required with `X-API-Key`; Bearer callers are the token's subject).
    pub client_user_id: Option<Uuid>,
    /// Page size, 1 to 100.
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page; omit for the first page.
    pub cursor: Option<String>,
    /// List archived conversations instead of active ones.
    #[param(default = false)]
    pub archived: Option<bool>,
    /// Only conversations whose title contains this text (case-insensitive).
    pub q: Option<String>,
}

/// A page of conversations, newest activity first.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationList {
    pub conversations: Vec<ListedConversation>,
    /// Pass as `cursor` for the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MessagesQuery {
    /// The end user (required with `X-API-Key`; Bearer callers are the token's subject).
    pub client_user_id: Option<Uuid>,
    /// Page size, 1 to 100.
    #[param(minimum = 1, maximum = 100, default = 50)]
    pub limit: Option<u32>,
    /// `next_cursor` of the previous page (older messages); omit for the newest page.
    pub before: Option<String>,
}

/// A page of messages, oldest first; pages go back in time.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageList {
    pub messages: Vec<StoredMessage>,
    /// Pass as `before` for the page of older messages; null when there are none.
    pub next_cursor: Option<String>,
}

/// Body of `PATCH /api/conversations/{conversation_id}`: at least one field.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateConversationRequest {
    /// New title, 1 to 100 characters (trimmed). A title set here is never
    /// replaced by a generated one.
    #[schema(min_length = 1, max_length = 100)]
    pub title: Option<String>,
    /// Archive (`status` becomes `completed`) or unarchive (`in-progress`).
    pub archived: Option<bool>,
}

fn owner(caller: Caller, client_user_id: Option<Uuid>) -> Result<Uuid, ApiError> {
    match caller {
        Caller::User(id) => Ok(id),
        Caller::Service => client_user_id
            .ok_or_else(|| ApiError::bad_request("invalid_query", "client_user_id is required with X-API-Key")),
    }
}

fn page_size(limit: Option<u32>, default: u32) -> Result<u32, ApiError> {
    match limit.unwrap_or(default) {
        n @ 1..=MAX_PAGE => Ok(n),
        n => Err(ApiError::bad_request("invalid_query", format!("limit must be between 1 and {MAX_PAGE}, not {n}"))),
    }
}

/// A conversation and its messages.
#[utoipa::path(
    get,
    path = "/api/conversations/{conversation_id}",
    tag = "conversations",
    params(("conversation_id" = Uuid, Path, description = "Conversation id"), OwnerQuery),
    responses(
        (status = 200, body = ConversationWithMessages),
        (status = 400, description = "Invalid id", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 404, description = "Not found, or not the caller's", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn get_conversation(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(conversation_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<OwnerQuery>,
) -> Result<Json<ConversationWithMessages>, ApiError> {
    let owner = match caller {
        Caller::Service => query.client_user_id,
        Caller::User(id) => Some(id),
    };
    let (conversation, messages) = conversations::get_with_messages(&state.pool, conversation_id, owner)
        .await?
        .ok_or_else(ApiError::conversation_not_found)?;
    Ok(Json(ConversationWithMessages { conversation, messages }))
}

/// A user's conversations, newest activity first (`last_message_at`, or
/// `created_at` before the first message), with keyset pagination. The first
/// page fixes the listing's snapshot instant: later pages list exactly the
/// conversations that existed then, each once, in their order at that instant
/// (one that gets a message meanwhile keeps its place; newer ones appear on a
/// fresh first page).
#[utoipa::path(
    get,
    path = "/api/conversations",
    tag = "conversations",
    params(ListQuery),
    responses(
        (status = 200, body = ConversationList),
        (status = 400, description = "Invalid query or cursor, or no client_user_id with X-API-Key", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn list_conversations(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<ConversationList>, ApiError> {
    let user_id = owner(caller, query.client_user_id)?;
    let limit = page_size(query.limit, DEFAULT_CONVERSATIONS)?;
    let title_contains = query.q.map(|q| q.trim().to_owned()).filter(|q| !q.is_empty());
    if title_contains.as_ref().is_some_and(|q| q.chars().count() > MAX_QUERY_CHARS) {
        return Err(ApiError::bad_request("invalid_query", format!("q is longer than {MAX_QUERY_CHARS} characters")));
    }
    let filter = ListFilter { user_id, archived: query.archived.unwrap_or(false), title_contains };
    let position = query.cursor.as_deref().map(|c| cursor::decode_list(&filter, c)).transpose()?;
    let page = listing::list_conversations(&state.pool, &filter, position, limit).await?;
    Ok(Json(ConversationList {
        next_cursor: page.next.map(|next| cursor::encode_list(&filter, &next)),
        conversations: page.conversations,
    }))
}

/// A conversation's messages, a page at a time: the newest page first, oldest
/// message first within a page; `next_cursor` leads to older messages.
#[utoipa::path(
    get,
    path = "/api/conversations/{conversation_id}/messages",
    tag = "conversations",
    params(("conversation_id" = Uuid, Path, description = "Conversation id"), MessagesQuery),
    responses(
        (status = 200, body = MessageList),
        (status = 400, description = "Invalid id, query or cursor, or no client_user_id with X-API-Key", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 404, description = "Not found, or not the caller's", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn list_messages(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(conversation_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<MessagesQuery>,
) -> Result<Json<MessageList>, ApiError> {
    let user_id = owner(caller, query.client_user_id)?;
    let limit = page_size(query.limit, DEFAULT_MESSAGES)?;
    let before = query.before.as_deref().map(|c| cursor::decode_messages(conversation_id, c)).transpose()?;
    let page = listing::message_page(&state.pool, conversation_id, user_id, before, limit)
        .await?
        .ok_or_else(ApiError::conversation_not_found)?;
    Ok(Json(MessageList {
        next_cursor: page.next_before.map(|key| cursor::encode_messages(conversation_id, &key)),
        messages: page.messages,
    }))
}

fn validate_change(body: UpdateConversationRequest) -> Result<ConversationChange, ApiError> {
    if body.title.is_none() && body.archived.is_none() {
        return Err(ApiError::bad_request("invalid_request", "nothing to change: send title and/or archived"));
    }
    let title = match body.title {
        None => None,
        Some(title) => {
            let title = title.trim();
            if title.is_empty() {
                return Err(ApiError::bad_request("title_empty", "the title is empty"));
            }
            let chars = title.chars().count();
            if chars > MAX_TITLE_CHARS {
                return Err(ApiError::bad_request(
                    "title_too_long",
                    format!("the title has {chars} characters; the limit is {MAX_TITLE_CHARS}"),
                ));
            }
            Some(title.to_owned())
        }
    };
    Ok(ConversationChange { title, archived: body.archived })
}

/// Rename, archive or unarchive a conversation; returns it updated.
#[utoipa::path(
    patch,
    path = "/api/conversations/{conversation_id}",
    tag = "conversations",
    params(("conversation_id" = Uuid, Path, description = "Conversation id"), RequiredOwnerQuery),
    request_body = UpdateConversationRequest,
    responses(
        (status = 200, body = ListedConversation),
        (status = 400, description = "Empty body, empty or over-long title, unknown field, or no client_user_id with X-API-Key", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 404, description = "Not found, or not the caller's", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn update_conversation(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(conversation_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<RequiredOwnerQuery>,
    ApiJson(body): ApiJson<UpdateConversationRequest>,
) -> Result<Json<ListedConversation>, ApiError> {
    let user_id = owner(caller, query.client_user_id)?;
    let change = validate_change(body)?;
    let updated = lifecycle::update(&state.pool, conversation_id, user_id, &change)
        .await?
        .ok_or_else(ApiError::conversation_not_found)?;
    Ok(Json(updated))
}

/// Delete a conversation and all its messages (one transaction).
#[utoipa::path(
    delete,
    path = "/api/conversations/{conversation_id}",
    tag = "conversations",
    params(("conversation_id" = Uuid, Path, description = "Conversation id"), RequiredOwnerQuery),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Invalid id, or no client_user_id with X-API-Key", body = ErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = ErrorBody),
        (status = 404, description = "Not found (or already deleted), or not the caller's", body = ErrorBody),
        (status = 503, description = "Database unavailable", body = ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn delete_conversation(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(conversation_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<RequiredOwnerQuery>,
) -> Result<StatusCode, ApiError> {
    let user_id = owner(caller, query.client_user_id)?;
    if lifecycle::delete(&state.pool, conversation_id, user_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::conversation_not_found())
    }
}

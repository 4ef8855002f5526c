//! OpenAI's Conversations API over our tables. A conversation's id is its
//! UUID as stored (the same conversation is `/api/conversations/{id}`); its
//! items are its messages, oldest first in storage order; its metadata lives
//! in `chatbot_conversation_metadata`. Owner-scoped: another user's
//! conversation is a 404, like an unknown one.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::auth::User;
use super::error::OpenAiErrorBody;
use super::items::{InputItem, ItemList, MessageItem, parse_item_id};
use super::unix;
use crate::db::lifecycle;
use crate::db::openai::{self as store, ConversationHead, Order};
use crate::error::ApiError;
use crate::llm::Role;
use crate::routes::AppState;
use crate::routes::extract::{ApiJson, ApiPath, ApiQuery};

/// At most 16 pairs, keys up to 64 characters, values up to 512 (OpenAI's limits).
const MAX_METADATA_PAIRS: usize = 16;
const MAX_METADATA_KEY: usize = 64;
const MAX_METADATA_VALUE: usize = 512;
/// Items per page: 20 unless asked, at most 100.
const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;

/// String key/value pairs attached to a conversation.
pub type Metadata = serde_json::Map<String, serde_json::Value>;

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateConversationRequest {
    /// First messages of the conversation (user and assistant messages).
    pub items: Option<Vec<InputItem>>,
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Metadata>,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct UpdateConversationRequest {
    /// Replaces the conversation's metadata.
    #[schema(value_type = Object)]
    pub metadata: Metadata,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct CreateItemsRequest {
    /// Messages appended to the conversation, in order.
    pub items: Vec<InputItem>,
}

/// A conversation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationObject {
    /// The stored UUID.
    pub id: String,
    /// Always `conversation`.
    pub object: &'static str,
    /// Unix seconds.
    pub created_at: i64,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
}

impl From<ConversationHead> for ConversationObject {
    fn from(c: ConversationHead) -> Self {
        Self {
            id: c.conversation_id.to_string(),
            object: "conversation",
            created_at: unix(c.created_at),
            metadata: c.metadata,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedConversation {
    pub id: String,
    /// Always `conversation.deleted`.
    pub object: &'static str,
    pub deleted: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ItemsQuery {
    /// 1 to 100 (default 20).
    pub limit: Option<i64>,
    /// An item id: the page starts after it.
    pub after: Option<String>,
    /// `desc` (default: newest first) or `asc`.
    pub order: Option<String>,
}

fn metadata(value: Option<Metadata>) -> Result<serde_json::Value, ApiError> {
    let map = value.unwrap_or_default();
    let bad = |message: String| ApiError::bad_request("invalid_metadata", message);
    if map.len() > MAX_METADATA_PAIRS {
        return Err(bad(format!("metadata has {} pairs; the limit is {MAX_METADATA_PAIRS}", map.len())));
    }
    for (key, value) in &map {
        if key.chars().count() > MAX_METADATA_KEY {
            return Err(bad(format!("metadata key `{key}` is longer than {MAX_METADATA_KEY} characters")));
        }
        match value.as_str() {
            Some(v) if v.chars().count() <= MAX_METADATA_VALUE => {}
            Some(_) => return Err(bad(format!("metadata `{key}` is longer than {MAX_METADATA_VALUE} characters"))),
            None => return Err(bad(format!("metadata `{key}` must be a string"))),
        }
    }
    Ok(serde_json::Value::Object(map))
}

/// Stored messages only: user and assistant (`system`/`developer` go in a
/// response's `instructions`).
fn messages(items: &[InputItem]) -> Result<Vec<(Role, String)>, ApiError> {
    items
        .iter()
        .map(|item| match item.message()? {
            (Role::System, _) => Err(ApiError::bad_request(
                "unsupported_role",
                "system and developer messages are not stored in a conversation: send them as a response's instructions",
            )),
            message => Ok(message),
        })
        .collect()
}

/// A conversation id from a path: anything but a UUID names no conversation.
pub fn conversation_id(id: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(id).map_err(|_| ApiError::conversation_not_found())
}

async fn head(state: &AppState, id: Uuid, user: Uuid) -> Result<ConversationHead, ApiError> {
    store::conversation(&state.pool, id, user).await?.ok_or_else(ApiError::conversation_not_found)
}

/// Creates a conversation, with first items and metadata if given.
#[utoipa::path(
    post,
    path = "/v1/conversations",
    tag = "openai",
    request_body = CreateConversationRequest,
    responses(
        (status = 200, body = ConversationObject),
        (status = 400, description = "Invalid request", body = OpenAiErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = OpenAiErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create(
    State(state): State<AppState>,
    User(user): User,
    ApiJson(body): ApiJson<CreateConversationRequest>,
) -> Result<Json<ConversationObject>, ApiError> {
    let metadata = metadata(body.metadata)?;
    let messages = messages(body.items.as_deref().unwrap_or_default())?;
    let (id, _) = state.chat.create_conversation(user, &messages, &metadata).await?;
    Ok(Json(head(&state, id, user).await?.into()))
}

/// A conversation.
#[utoipa::path(
    get,
    path = "/v1/conversations/{conversation_id}",
    tag = "openai",
    params(("conversation_id" = String, Path, description = "The conversation's UUID")),
    responses(
        (status = 200, body = ConversationObject),
        (status = 401, description = "Missing or invalid credentials", body = OpenAiErrorBody),
        (status = 404, description = "Not found, or not the caller's", body = OpenAiErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn retrieve(
    State(state): State<AppState>,
    User(user): User,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ConversationObject>, ApiError> {
    Ok(Json(head(&state, conversation_id(&id)?, user).await?.into()))
}

/// Replaces a conversation's metadata.
#[utoipa::path(
    post,
    path = "/v1/conversations/{conversation_id}",
    tag = "openai",
    params(("conversation_id" = String, Path, description = "The conversation's UUID")),
    request_body = UpdateConversationRequest,
    responses(
        (status = 200, body = ConversationObject),
        (status = 400, description = "Invalid metadata", body = OpenAiErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = OpenAiErrorBody),
        (status = 404, description = "Not found, or not the caller's", body = OpenAiErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn update(
    State(state): State<AppState>,
    User(user): User,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateConversationRequest>,
) -> Result<Json<ConversationObject>, ApiError> {
    let id = conversation_id(&id)?;
    let metadata = metadata(Some(body.metadata))?;
    let updated = store::update_metadata(&state.pool, id, user, &metadata).await?;
    Ok(Json(updated.ok_or_else(ApiError::conversation_not_found)?.into()))
}

/// Deletes a conversation and its messages.
#[utoipa::path(
    delete,
    path = "/v1/conversations/{conversation_id}",
    tag = "openai",
    params(("conversation_id" = String, Path, description = "The conversation's UUID")),
    responses(
        (status = 200, body = DeletedConversation),
        (status = 401, description = "Missing or invalid credentials", body = OpenAiErrorBody),
        (status = 404, description = "Not found, or not the caller's", body = OpenAiErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn delete(
    State(state): State<AppState>,
    User(user): User,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<DeletedConversation>, ApiError> {
    let uuid = conversation_id(&id)?;
    if !lifecycle::delete(&state.pool, uuid, user).await? {
        return Err(ApiError::conversation_not_found());
    }
    Ok(Json(DeletedConversation { id: uuid.to_string(), object: "conversation.deleted", deleted: true }))
}

/// A page of a conversation's items (its messages).
#[utoipa::path(
    get,
    path = "/v1/conversations/{conversation_id}/items",
    tag = "openai",
    params(("conversation_id" = String, Path, description = "The conversation's UUID"), ItemsQuery),
    responses(
        (status = 200, body = ItemList),
        (status = 400, description = "Invalid query", body = OpenAiErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = OpenAiErrorBody),
        (status = 404, description = "Not found, or not the caller's", body = OpenAiErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_items(
    State(state): State<AppState>,
    User(user): User,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<ItemsQuery>,
) -> Result<Json<ItemList>, ApiError> {
    let id = conversation_id(&id)?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request("invalid_query", format!("limit must be 1 to {MAX_LIMIT}")));
    }
    let order = match query.order.as_deref() {
        None | Some("desc") => Order::Desc,
        Some("asc") => Order::Asc,
        Some(other) => return Err(ApiError::bad_request("invalid_query", format!("order `{other}`: asc or desc"))),
    };
    let after = match query.after.as_deref() {
        None => None,
        Some(after) => Some(
            parse_item_id(after).ok_or_else(|| ApiError::bad_request("invalid_query", "after is not an item id"))?,
        ),
    };
    let mut rows = store::items(&state.pool, id, user, limit + 1, after, order)
        .await?
        .ok_or_else(ApiError::conversation_not_found)?;
    let has_more = rows.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    rows.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let data = rows.into_iter().map(|r| MessageItem::stored(r.id, &r.role, r.text)).collect();
    Ok(Json(ItemList::new(data, has_more)))
}

/// Appends items (messages) to a conversation, after any turn in progress.
#[utoipa::path(
    post,
    path = "/v1/conversations/{conversation_id}/items",
    tag = "openai",
    params(("conversation_id" = String, Path, description = "The conversation's UUID")),
    request_body = CreateItemsRequest,
    responses(
        (status = 200, description = "The stored items, in order", body = ItemList),
        (status = 400, description = "Invalid request", body = OpenAiErrorBody),
        (status = 401, description = "Missing or invalid credentials", body = OpenAiErrorBody),
        (status = 404, description = "Not found, or not the caller's", body = OpenAiErrorBody),
        (status = 409, description = "A turn of the conversation did not finish within TURN_WAIT_SECS", body = OpenAiErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_items(
    State(state): State<AppState>,
    User(user): User,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<CreateItemsRequest>,
) -> Result<Json<ItemList>, ApiError> {
    let id = conversation_id(&id)?;
    let messages = messages(&body.items)?;
    if messages.is_empty() {
        return Err(ApiError::bad_request("invalid_request", "items must not be empty"));
    }
    let stored = state.chat.append_messages(id, user, &messages).await?;
    let data = stored.into_iter().map(|(id, role, text)| MessageItem::new(id, role, text)).collect();
    Ok(Json(ItemList::new(data, false)))
}

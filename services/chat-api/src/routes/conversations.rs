//! `GET /api/conversations/{conversation_id}`.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::AppState;
use super::extract::{ApiPath, ApiQuery};
use crate::auth::Caller;
use crate::db::conversations::{self, Conversation, StoredMessage};
use crate::error::{ApiError, ErrorBody};

#[derive(Debug, Deserialize, IntoParams)]
pub struct OwnerQuery {
    /// With `X-API-Key`: only return the conversation if this user owns it.
    pub client_user_id: Option<Uuid>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationWithMessages {
    pub conversation: Conversation,
    /// Oldest first.
    pub messages: Vec<StoredMessage>,
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

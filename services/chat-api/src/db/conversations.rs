//! The conversation store over the seed's two tables: reading conversations
//! and their history. A chat turn's own statements (claim, store) are in
//! [`super::turns`].

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::llm::Role;

/// A stored conversation (the columns of `chatbot_conversation_audit` callers see).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Conversation {
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    pub title: Option<String>,
    pub conversation_summary: Option<String>,
    pub model: Option<String>,
    /// `{"prompt_tokens", "completion_tokens", "total_tokens", "turns"}`, accumulated;
    /// `estimated_turns` counts turns whose usage is an estimate (the provider sent none).
    #[schema(value_type = Option<Object>)]
    pub token_usage: Option<serde_json::Value>,
    /// `in-progress`, or `completed` once archived.
    pub status: String,
    pub last_message_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub archived: bool,
    /// When `conversation_summary` was last written (older messages folded in).
    pub summary_updated_at: Option<DateTime<Utc>>,
    /// `first-message`, `provider` (generated, `TITLES=provider`) or `user` (renamed).
    pub title_source: String,
}

/// The columns of [`Conversation`], for every query that returns one.
pub const CONVERSATION_COLUMNS: &str = "conversation_id, user_id, title, conversation_summary, model, token_usage, \
     status, last_message_at, created_at, archived, summary_updated_at, title_source";

/// A stored message (`chatbot_user_memory`), content as `{"text": ...}`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct StoredMessage {
    pub id: Uuid,
    /// `user` or `assistant`.
    pub role: String,
    #[schema(value_type = Object, example = json!({"text": "Hello"}))]
    pub content: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// The part of a conversation a turn needs before calling the provider.
#[derive(Debug, Clone)]
pub struct TurnContext {
    /// Most recent messages, oldest first, at most the requested number; with
    /// summaries on, only messages not folded into `summary`.
    pub history: Vec<(Role, String)>,
    /// `conversation_summary` (summaries on only).
    pub summary: Option<String>,
}

pub(crate) fn parse_role(s: &str) -> Role {
    if s == "assistant" { Role::Assistant } else { Role::User }
}

/// Ownership check and the newest `limit` messages in one round trip.
/// `None` when the conversation does not exist or belongs to someone else.
/// With `summaries`, messages already folded into the summary are left out
/// and the summary comes along.
pub async fn load_turn_context(
    pool: &PgPool,
    conversation_id: Uuid,
    user_id: Uuid,
    limit: usize,
    summaries: bool,
) -> Result<Option<TurnContext>, sqlx::Error> {
    let rows: Vec<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT m.role, m.content->>'text', CASE WHEN $4 THEN c.conversation_summary END \
         FROM chatbot_conversation_audit c \
         LEFT JOIN LATERAL ( \
             SELECT role, content, created_at FROM chatbot_user_memory \
             WHERE conversation_id = c.conversation_id \
               AND created_at > CASE WHEN $4 THEN COALESCE(c.summary_through, '-infinity') ELSE '-infinity' END \
             ORDER BY created_at DESC LIMIT $3 \
         ) m ON TRUE \
         WHERE c.conversation_id = $1 AND c.user_id = $2 \
         ORDER BY m.created_at ASC",
    )
    .bind(conversation_id)
    .bind(user_id)
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(summaries)
    .fetch_all(pool)
    .await?;
    let Some(summary) = rows.first().map(|(_, _, summary)| summary.clone()) else {
        return Ok(None);
    };
    let history =
        rows.into_iter().filter_map(|(role, text, _)| Some((parse_role(&role?), text.unwrap_or_default()))).collect();
    Ok(Some(TurnContext { history, summary }))
}

/// A conversation with all its messages, oldest first, if `user_id` (when
/// given) owns it.
pub async fn get_with_messages(
    pool: &PgPool,
    conversation_id: Uuid,
    user_id: Option<Uuid>,
) -> Result<Option<(Conversation, Vec<StoredMessage>)>, sqlx::Error> {
    let conversation: Option<Conversation> = sqlx::query_as(&format!(
        "SELECT {CONVERSATION_COLUMNS} FROM chatbot_conversation_audit \
         WHERE conversation_id = $1 AND ($2::uuid IS NULL OR user_id = $2)"
    ))
    .bind(conversation_id)
    .bind(user_id)
    .fetch_optional(pool)
    .await?;
    let Some(conversation) = conversation else {
        return Ok(None);
    };
    let messages = sqlx::query_as(
        "SELECT id, role, content, created_at FROM chatbot_user_memory \
         WHERE conversation_id = $1 ORDER BY created_at ASC, id ASC",
    )
    .bind(conversation_id)
    .fetch_all(pool)
    .await?;
    Ok(Some((conversation, messages)))
}

//! What the OpenAI-compatible surface (`/v1`) reads and writes beyond a
//! turn's statements: conversation metadata, a conversation's messages as
//! pages of items, and a stored answer by id (an OpenAI response).
//! Everything is owner-scoped: another user's rows are never returned.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

/// A conversation as the Conversations API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConversationHead {
    pub conversation_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub metadata: serde_json::Value,
}

/// A stored message.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Item {
    pub id: Uuid,
    pub role: String,
    pub text: String,
    pub created_at: DateTime<Utc>,
}

/// A stored answer: an OpenAI response.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredAnswer {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub text: String,
    pub created_at: DateTime<Utc>,
    /// The conversation's model (the model of its latest answer).
    pub model: Option<String>,
}

/// Which end of the conversation a page starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

/// Sets a conversation's metadata (insert or replace).
pub async fn set_metadata(
    db: impl sqlx::PgExecutor<'_>,
    conversation_id: Uuid,
    metadata: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO chatbot_conversation_metadata (conversation_id, metadata) VALUES ($1, $2) \
         ON CONFLICT (conversation_id) DO UPDATE SET metadata = EXCLUDED.metadata",
    )
    .bind(conversation_id)
    .bind(metadata)
    .execute(db)
    .await?;
    Ok(())
}

/// The user's conversation, `None` when it does not exist or is someone else's.
pub async fn conversation(
    pool: &PgPool,
    conversation_id: Uuid,
    user_id: Uuid,
) -> Result<Option<ConversationHead>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.conversation_id, c.created_at, COALESCE(m.metadata, '{}'::jsonb) AS metadata \
         FROM chatbot_conversation_audit c \
         LEFT JOIN chatbot_conversation_metadata m USING (conversation_id) \
         WHERE c.conversation_id = $1 AND c.user_id = $2",
    )
    .bind(conversation_id)
    .bind(user_id)
    .fetch_optional(pool)
    .await
}

/// Replaces the metadata of the user's conversation, in one statement;
/// `None` when it does not exist or is someone else's.
pub async fn update_metadata(
    pool: &PgPool,
    conversation_id: Uuid,
    user_id: Uuid,
    metadata: &serde_json::Value,
) -> Result<Option<ConversationHead>, sqlx::Error> {
    sqlx::query_as(
        "WITH c AS ( \
             SELECT conversation_id, created_at FROM chatbot_conversation_audit \
             WHERE conversation_id = $1 AND user_id = $2 \
         ), m AS ( \
             INSERT INTO chatbot_conversation_metadata (conversation_id, metadata) \
             SELECT conversation_id, $3 FROM c \
             ON CONFLICT (conversation_id) DO UPDATE SET metadata = EXCLUDED.metadata \
             RETURNING metadata \
         ) \
         SELECT c.conversation_id, c.created_at, m.metadata FROM c, m",
    )
    .bind(conversation_id)
    .bind(user_id)
    .bind(metadata)
    .fetch_optional(pool)
    .await
}

/// A page of the user's conversation's messages: up to `limit`, in `order`,
/// after the message `after` (when given) in that order. `None` when the
/// conversation does not exist or is someone else's; an `after` that is not
/// one of its messages is an empty page.
pub async fn items(
    pool: &PgPool,
    conversation_id: Uuid,
    user_id: Uuid,
    limit: i64,
    after: Option<Uuid>,
    order: Order,
) -> Result<Option<Vec<Item>>, sqlx::Error> {
    let owned: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM chatbot_conversation_audit WHERE conversation_id = $1 AND user_id = $2")
            .bind(conversation_id)
            .bind(user_id)
            .fetch_optional(pool)
            .await?;
    if owned.is_none() {
        return Ok(None);
    }
    // (created_at, id) is the stored order; `after` is a keyset cursor in it.
    let (cmp, dir) = match order {
        Order::Asc => (">", "ASC"),
        Order::Desc => ("<", "DESC"),
    };
    let sql = format!(
        "SELECT m.id, m.role, COALESCE(m.content->>'text', '') AS text, m.created_at \
         FROM chatbot_user_memory m \
         WHERE m.conversation_id = $1 AND ($3::uuid IS NULL OR (m.created_at, m.id) {cmp} ( \
             SELECT a.created_at, a.id FROM chatbot_user_memory a WHERE a.id = $3 AND a.conversation_id = $1)) \
         ORDER BY m.created_at {dir}, m.id {dir} LIMIT $2"
    );
    let rows = sqlx::query_as(&sql).bind(conversation_id).bind(limit).bind(after).fetch_all(pool).await?;
    Ok(Some(rows))
}

/// The user's stored answer `id`; `None` when there is none (or it is someone else's).
pub async fn answer(pool: &PgPool, id: Uuid, user_id: Uuid) -> Result<Option<StoredAnswer>, sqlx::Error> {
    sqlx::query_as(
        "SELECT m.id, m.conversation_id, COALESCE(m.content->>'text', '') AS text, m.created_at, c.model \
         FROM chatbot_user_memory m JOIN chatbot_conversation_audit c USING (conversation_id) \
         WHERE m.id = $1 AND m.role = 'assistant' AND m.user_id = $2 AND c.user_id = $2",
    )
    .bind(id)
    .bind(user_id)
    .fetch_optional(pool)
    .await
}

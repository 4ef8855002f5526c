//! Changing and removing conversations: rename, archive, delete.

use sqlx::PgPool;
use uuid::Uuid;

use super::conversations::CONVERSATION_COLUMNS;
use super::listing::ListedConversation;

/// What a PATCH changes; at least one field is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversationChange {
    /// A new title, set by the user (never replaced by a generated one later).
    pub title: Option<String>,
    pub archived: Option<bool>,
}

/// Applies `change` to the user's conversation and returns it, or `None` when
/// it does not exist or is someone else's. `status` follows `archived`:
/// `completed` when archived, `in-progress` otherwise.
pub async fn update(
    pool: &PgPool,
    conversation_id: Uuid,
    user_id: Uuid,
    change: &ConversationChange,
) -> Result<Option<ListedConversation>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        conversation: super::conversations::Conversation,
        message_count: i64,
    }
    let row: Option<Row> = sqlx::query_as(&format!(
        "UPDATE chatbot_conversation_audit SET \
             title = COALESCE($3, title), \
             title_source = CASE WHEN $3::text IS NULL THEN title_source ELSE 'user' END, \
             archived = COALESCE($4, archived), \
             status = CASE WHEN COALESCE($4, archived) THEN 'completed' ELSE 'in-progress' END \
         WHERE conversation_id = $1 AND user_id = $2 \
         RETURNING {CONVERSATION_COLUMNS}, \
             (SELECT count(*) FROM chatbot_user_memory m WHERE m.conversation_id = $1) AS message_count"
    ))
    .bind(conversation_id)
    .bind(user_id)
    .bind(change.title.as_deref())
    .bind(change.archived)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| ListedConversation { conversation: r.conversation, message_count: r.message_count }))
}

/// Deletes the user's conversation, its messages and pending tasks in one
/// transaction. False when it does not exist or is someone else's.
///
/// The conversation's rows are locked first: a turn storing into it meanwhile
/// either committed before (its messages are deleted too) or waits and then
/// finds no conversation (the turn gets a 404); no message is left orphaned
/// and the foreign key never fails half-way.
pub async fn delete(pool: &PgPool, conversation_id: Uuid, user_id: Uuid) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    // Its turn claim first (no foreign key there), in the order a storing
    // turn locks rows (claim, then conversation), so the two never deadlock.
    // A turn still in flight then finds neither and gets a 404, and the next
    // one is not kept waiting for a claim.
    sqlx::query("DELETE FROM chatbot_turn_claims WHERE conversation_id = $1 AND user_id = $2")
        .bind(conversation_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
    let owned: Option<i32> = sqlx::query_scalar(
        "SELECT 1 FROM chatbot_conversation_audit WHERE conversation_id = $1 AND user_id = $2 FOR UPDATE",
    )
    .bind(conversation_id)
    .bind(user_id)
    .fetch_optional(&mut *tx)
    .await?;
    if owned.is_none() {
        return Ok(false);
    }
    sqlx::query("DELETE FROM chatbot_user_memory WHERE conversation_id = $1")
        .bind(conversation_id)
        .execute(&mut *tx)
        .await?;
    // Tasks go with it (ON DELETE CASCADE).
    sqlx::query("DELETE FROM chatbot_conversation_audit WHERE conversation_id = $1")
        .bind(conversation_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(true)
}

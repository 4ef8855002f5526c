//! What the background work reads and writes: the messages not yet folded
//! into a conversation's summary, the summary itself, and generated titles.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::conversations::parse_role;
use crate::llm::Role;

/// A conversation's summary and how many messages are not folded into it yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SummaryState {
    pub summary: Option<String>,
    /// `created_at` of the newest folded message.
    pub through: Option<DateTime<Utc>>,
    pub unsummarized: i64,
}

/// A stored message as the background work sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedMessage {
    pub role: Role,
    pub text: String,
    pub created_at: DateTime<Utc>,
}

/// The summary state, or `None` for a deleted conversation.
pub async fn summary_state(pool: &PgPool, conversation_id: Uuid) -> Result<Option<SummaryState>, sqlx::Error> {
    let row: Option<(Option<String>, Option<DateTime<Utc>>, i64)> = sqlx::query_as(
        "SELECT c.conversation_summary, c.summary_through, \
                (SELECT count(*) FROM chatbot_user_memory m \
                 WHERE m.conversation_id = c.conversation_id \
                   AND m.created_at > COALESCE(c.summary_through, '-infinity')) \
         FROM chatbot_conversation_audit c WHERE c.conversation_id = $1",
    )
    .bind(conversation_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(summary, through, unsummarized)| SummaryState { summary, through, unsummarized }))
}

/// The oldest `limit` messages after `through` (all messages when `None`), oldest first.
pub async fn oldest_unsummarized(
    pool: &PgPool,
    conversation_id: Uuid,
    through: Option<DateTime<Utc>>,
    limit: u32,
) -> Result<Vec<TimedMessage>, sqlx::Error> {
    let rows: Vec<(String, Option<String>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT role, content->>'text', created_at FROM chatbot_user_memory \
         WHERE conversation_id = $1 AND created_at > COALESCE($2, '-infinity'::timestamptz) \
         ORDER BY created_at, id LIMIT $3",
    )
    .bind(conversation_id)
    .bind(through)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(role, text, created_at)| TimedMessage {
            role: parse_role(&role),
            text: text.unwrap_or_default(),
            created_at,
        })
        .collect())
}

/// Stores a summary covering every message up to `through`, unless someone
/// else moved the summary on since `expected_through` was read (then nothing
/// is written and false is returned). The time it was made is the database's.
pub async fn store_summary(
    pool: &PgPool,
    conversation_id: Uuid,
    expected_through: Option<DateTime<Utc>>,
    summary: &str,
    through: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE chatbot_conversation_audit SET \
             conversation_summary = $3, summary_through = $4, summary_updated_at = now() \
         WHERE conversation_id = $1 AND summary_through IS NOT DISTINCT FROM $2",
    )
    .bind(conversation_id)
    .bind(expected_through)
    .bind(summary)
    .bind(through)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// The first `limit` messages of a conversation that still has its
/// first-message title, or `None` (deleted, renamed by the user, or already titled).
pub async fn title_material(
    pool: &PgPool,
    conversation_id: Uuid,
    limit: u32,
) -> Result<Option<Vec<(Role, String)>>, sqlx::Error> {
    let rows: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT m.role, m.content->>'text' \
         FROM chatbot_conversation_audit c \
         LEFT JOIN LATERAL ( \
             SELECT role, content, created_at, id FROM chatbot_user_memory \
             WHERE conversation_id = c.conversation_id ORDER BY created_at, id LIMIT $2 \
         ) m ON TRUE \
         WHERE c.conversation_id = $1 AND c.title_source = 'first-message' \
         ORDER BY m.created_at, m.id",
    )
    .bind(conversation_id)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    Ok(Some(rows.into_iter().filter_map(|(role, text)| Some((parse_role(&role?), text.unwrap_or_default()))).collect()))
}

/// Replaces the title by a generated one unless the user renamed the
/// conversation meanwhile (or it is gone). True when written.
pub async fn store_generated_title(pool: &PgPool, conversation_id: Uuid, title: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE chatbot_conversation_audit SET title = $2, title_source = 'provider' \
         WHERE conversation_id = $1 AND title_source = 'first-message'",
    )
    .bind(conversation_id)
    .bind(title)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

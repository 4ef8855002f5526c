//! Paged reads: a user's conversations (newest activity first) and a
//! conversation's messages (going back in time). Keyset pagination only: a
//! page starts strictly after the last row of the previous one, so rows
//! inserted meanwhile never shift later pages (no OFFSET).
//!
//! Conversations are ordered by *activity*: `last_message_at`, or `created_at`
//! for a conversation without messages, then `created_at`, then
//! `conversation_id` (a total order). Activity changes while someone pages, so
//! the first page fixes a snapshot instant `T` (the database's clock) and every
//! page of that listing orders conversations by their activity *as of `T`*:
//! - a conversation created after `T` is not part of the listing (it is on a
//!   fresh first page);
//! - a conversation with messages after `T` keeps the place it had at `T`
//!   (its newest message at or before `T`), instead of jumping to the front,
//!   where a reader past the first page would never see it.
//!
//! Hence every conversation that existed at `T` (and was not deleted, archived
//! or renamed out of the filter meanwhile) appears exactly once. Rows
//! unchanged since `T` are read straight from the listing index; the few
//! conversations active since `T` are found through the same index (activity
//! greater than `T`) and placed by one index probe each into their messages.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use super::conversations::{CONVERSATION_COLUMNS, Conversation, StoredMessage};

/// Which conversations a listing shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListFilter {
    pub user_id: Uuid,
    pub archived: bool,
    /// Case-insensitive substring of the title.
    pub title_contains: Option<String>,
}

/// A conversation's place in the listing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConversationKey {
    pub activity: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub conversation_id: Uuid,
}

/// Where a page after the first starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListPosition {
    /// The listing's snapshot instant (set by its first page).
    pub snapshot: DateTime<Utc>,
    /// The last conversation of the previous page.
    pub after: ConversationKey,
}

/// A conversation in a listing: the conversation object plus its message count.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ListedConversation {
    #[serde(flatten)]
    pub conversation: Conversation,
    /// Messages stored in the conversation.
    pub message_count: i64,
}

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct ConversationPage {
    pub conversations: Vec<ListedConversation>,
    /// Where the next page starts, when there is one.
    pub next: Option<ListPosition>,
}

#[derive(sqlx::FromRow)]
struct ListedRow {
    #[sqlx(flatten)]
    conversation: Conversation,
    message_count: i64,
    activity: DateTime<Utc>,
    snapshot: DateTime<Utc>,
}

/// 9999-12-31T23:59:59Z: after every stored instant, and well inside
/// PostgreSQL's range (a bound parameter cannot be `'infinity'` through chrono).
fn far_future() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).expect("9999-12-31 is a valid instant")
}

/// `%` and `_` match themselves in the user's text.
fn like_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

/// A page of the user's conversations, `limit` at most. `position` is `None`
/// for the first page (which takes the snapshot instant).
pub async fn list_conversations(
    pool: &PgPool,
    filter: &ListFilter,
    position: Option<ListPosition>,
    limit: u32,
) -> Result<ConversationPage, sqlx::Error> {
    // Before the first row: greater than any key in the (descending) order.
    let after = position.map(|p| p.after).unwrap_or(ConversationKey {
        activity: far_future(),
        created_at: far_future(),
        conversation_id: Uuid::max(),
    });
    let pattern = filter.title_contains.as_deref().map(like_pattern);
    // $3 NULL: first page, the snapshot is this statement's time.
    let sql = format!(
        "WITH unchanged AS ( \
             SELECT c.conversation_id, COALESCE(c.last_message_at, c.created_at) AS activity, c.created_at \
             FROM chatbot_conversation_audit c \
             WHERE c.user_id = $1 AND c.archived = $2 \
               AND COALESCE(c.last_message_at, c.created_at) <= COALESCE($3::timestamptz, now()) \
               AND (COALESCE(c.last_message_at, c.created_at), c.created_at, c.conversation_id) < ($4, $5, $6) \
               AND ($7::text IS NULL OR c.title ILIKE $7) \
             ORDER BY COALESCE(c.last_message_at, c.created_at) DESC, c.created_at DESC, c.conversation_id DESC \
             LIMIT $8 \
         ), moved AS ( \
             SELECT * FROM ( \
                 SELECT c.conversation_id, \
                        COALESCE((SELECT max(m.created_at) FROM chatbot_user_memory m \
                                  WHERE m.conversation_id = c.conversation_id \
                                    AND m.created_at <= COALESCE($3::timestamptz, now())), \
                                 c.created_at) AS activity, \
                        c.created_at \
                 FROM chatbot_conversation_audit c \
                 WHERE c.user_id = $1 AND c.archived = $2 \
                   AND COALESCE(c.last_message_at, c.created_at) > COALESCE($3::timestamptz, now()) \
                   AND c.created_at <= COALESCE($3::timestamptz, now()) \
                   AND ($7::text IS NULL OR c.title ILIKE $7) \
             ) at_snapshot \
             WHERE (activity, created_at, conversation_id) < ($4, $5, $6) \
         ), page AS ( \
             SELECT * FROM unchanged UNION ALL SELECT * FROM moved \
             ORDER BY activity DESC, created_at DESC, conversation_id DESC \
             LIMIT $8 \
         ) \
         SELECT {columns}, page.activity, COALESCE($3::timestamptz, now()) AS snapshot, \
                (SELECT count(*) FROM chatbot_user_memory m WHERE m.conversation_id = c.conversation_id) \
                    AS message_count \
         FROM page JOIN chatbot_conversation_audit c USING (conversation_id) \
         ORDER BY page.activity DESC, page.created_at DESC, page.conversation_id DESC",
        columns = CONVERSATION_COLUMNS.split(", ").map(|c| format!("c.{}", c.trim())).collect::<Vec<_>>().join(", ")
    );
    let rows: Vec<ListedRow> = sqlx::query_as(&sql)
        .bind(filter.user_id)
        .bind(filter.archived)
        .bind(position.map(|p| p.snapshot))
        .bind(after.activity)
        .bind(after.created_at)
        .bind(after.conversation_id)
        .bind(pattern)
        .bind(i64::from(limit) + 1)
        .fetch_all(pool)
        .await?;
    let has_more = rows.len() > limit as usize;
    let mut conversations = Vec::with_capacity(rows.len().min(limit as usize));
    let mut next = None;
    for row in rows.into_iter().take(limit as usize) {
        next = Some(ListPosition {
            snapshot: row.snapshot,
            after: ConversationKey {
                activity: row.activity,
                created_at: row.conversation.created_at,
                conversation_id: row.conversation.conversation_id,
            },
        });
        conversations.push(ListedConversation { conversation: row.conversation, message_count: row.message_count });
    }
    Ok(ConversationPage { conversations, next: if has_more { next } else { None } })
}

/// A message's place: (created_at, id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageKey {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

/// One page of a conversation's messages, oldest first.
#[derive(Debug, Clone)]
pub struct MessagePage {
    pub messages: Vec<StoredMessage>,
    /// The oldest message of this page, when older ones exist.
    pub next_before: Option<MessageKey>,
}

/// A message column set from a LEFT JOIN: all NULL when there is no message.
type MaybeMessage = (Option<Uuid>, Option<String>, Option<serde_json::Value>, Option<DateTime<Utc>>);

/// The newest `limit` messages before `before` (all when `None`), oldest
/// first, if `user_id` owns the conversation.
pub async fn message_page(
    pool: &PgPool,
    conversation_id: Uuid,
    user_id: Uuid,
    before: Option<MessageKey>,
    limit: u32,
) -> Result<Option<MessagePage>, sqlx::Error> {
    let before = before.unwrap_or(MessageKey { created_at: far_future(), id: Uuid::max() });
    // One statement: the LEFT JOIN yields one all-NULL row for an owned
    // conversation without (older) messages, and nothing for another user's.
    let rows: Vec<MaybeMessage> = sqlx::query_as(
        "SELECT m.id, m.role, m.content, m.created_at \
         FROM chatbot_conversation_audit c \
         LEFT JOIN LATERAL ( \
             SELECT id, role, content, created_at FROM chatbot_user_memory \
             WHERE conversation_id = c.conversation_id AND (created_at, id) < ($3, $4) \
             ORDER BY created_at DESC, id DESC LIMIT $5 \
         ) m ON TRUE \
         WHERE c.conversation_id = $1 AND c.user_id = $2 \
         ORDER BY m.created_at DESC, m.id DESC",
    )
    .bind(conversation_id)
    .bind(user_id)
    .bind(before.created_at)
    .bind(before.id)
    .bind(i64::from(limit) + 1)
    .fetch_all(pool)
    .await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut messages: Vec<StoredMessage> = rows
        .into_iter()
        .filter_map(|(id, role, content, created_at)| {
            Some(StoredMessage { id: id?, role: role?, content: content?, created_at: created_at? })
        })
        .collect();
    let has_more = messages.len() > limit as usize;
    messages.truncate(limit as usize);
    messages.reverse();
    let next_before =
        if has_more { messages.first().map(|m| MessageKey { created_at: m.created_at, id: m.id }) } else { None };
    Ok(Some(MessagePage { messages, next_before }))
}

#[cfg(test)]
mod tests {
    use super::like_pattern;

    #[test]
    fn like_wildcards_are_literal() {
        assert_eq!(like_pattern("50%_off\\"), "%50\\%\\_off\\\\%");
        assert_eq!(like_pattern("trip"), "%trip%");
    }
}

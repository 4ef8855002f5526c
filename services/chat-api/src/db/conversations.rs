//! The conversation store over the seed's two tables. Each chat turn costs two
//! statements: one read (ownership + recent history) before the provider call
//! and one write (messages + conversation update, atomic) after it; no
//! connection is held across the provider call.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::llm::{Role, Usage};

/// A stored conversation (the columns of `chatbot_conversation_audit` callers see).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, ToSchema)]
pub struct Conversation {
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    pub title: Option<String>,
    pub conversation_summary: Option<String>,
    pub model: Option<String>,
    /// `{"prompt_tokens", "completion_tokens", "total_tokens", "turns"}`, accumulated.
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

/// A message about to be stored.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub role: Role,
    pub text: String,
    pub at: DateTime<Utc>,
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

fn role_str(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Assistant => "assistant",
        // Never stored: the CHECK constraint allows user and assistant only.
        Role::System => "system",
    }
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

/// What a turn adds to the conversation's running totals.
#[derive(Debug, Clone, Copy, Default)]
pub struct UsageDelta {
    pub usage: Usage,
    pub turns: u64,
}

struct MessageColumns {
    roles: Vec<&'static str>,
    texts: Vec<String>,
    ats: Vec<DateTime<Utc>>,
}

fn columns(messages: Vec<NewMessage>) -> MessageColumns {
    let mut cols = MessageColumns {
        roles: Vec::with_capacity(messages.len()),
        texts: Vec::with_capacity(messages.len()),
        ats: Vec::with_capacity(messages.len()),
    };
    for m in messages {
        cols.roles.push(role_str(m.role));
        cols.texts.push(m.text);
        cols.ats.push(m.at);
    }
    cols
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A conversation to create, with its first messages, in one statement.
pub struct NewConversation<'a> {
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    pub title: Option<&'a str>,
    pub model: Option<&'a str>,
    pub delta: UsageDelta,
    pub messages: Vec<NewMessage>,
}

/// Creates a conversation and its messages atomically (one statement).
pub async fn create(pool: &PgPool, new: NewConversation<'_>) -> Result<(), sqlx::Error> {
    let last_message_at = new.messages.last().map(|m| m.at);
    let token_usage = (new.delta.turns > 0).then(|| {
        serde_json::json!({
            "prompt_tokens": new.delta.usage.prompt_tokens,
            "completion_tokens": new.delta.usage.completion_tokens,
            "total_tokens": new.delta.usage.total_tokens,
            "turns": new.delta.turns,
        })
    });
    let cols = columns(new.messages);
    sqlx::query(
        "WITH conv AS ( \
             INSERT INTO chatbot_conversation_audit \
                 (conversation_id, user_id, title, model, token_usage, last_message_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             RETURNING conversation_id \
         ) \
         INSERT INTO chatbot_user_memory (conversation_id, user_id, role, content, created_at) \
         SELECT conv.conversation_id, $2, m.role, jsonb_build_object('text', m.text), m.at \
         FROM conv, UNNEST($7::text[], $8::text[], $9::timestamptz[]) AS m(role, text, at)",
    )
    .bind(new.conversation_id)
    .bind(new.user_id)
    .bind(new.title)
    .bind(new.model)
    .bind(token_usage)
    .bind(last_message_at)
    .bind(&cols.roles)
    .bind(&cols.texts)
    .bind(&cols.ats)
    .execute(pool)
    .await?;
    Ok(())
}

/// Appends a turn's messages to an existing conversation and updates its model,
/// `last_message_at` and accumulated `token_usage`, atomically (one statement);
/// a conversation still without a title (started without history) takes
/// `title_if_none`. Returns false when the conversation no longer exists for this user.
pub async fn append_turn(
    pool: &PgPool,
    conversation_id: Uuid,
    user_id: Uuid,
    model: &str,
    delta: UsageDelta,
    messages: Vec<NewMessage>,
    title_if_none: &str,
) -> Result<bool, sqlx::Error> {
    let last_message_at = messages.last().map(|m| m.at);
    let cols = columns(messages);
    let result = sqlx::query(
        "WITH conv AS ( \
             UPDATE chatbot_conversation_audit SET \
                 model = $3, \
                 title = COALESCE(title, $12), \
                 last_message_at = GREATEST(last_message_at, $4), \
                 token_usage = jsonb_build_object( \
                     'prompt_tokens', COALESCE((token_usage->>'prompt_tokens')::bigint, 0) + $5, \
                     'completion_tokens', COALESCE((token_usage->>'completion_tokens')::bigint, 0) + $6, \
                     'total_tokens', COALESCE((token_usage->>'total_tokens')::bigint, 0) + $7, \
                     'turns', COALESCE((token_usage->>'turns')::bigint, 0) + $8) \
             WHERE conversation_id = $1 AND user_id = $2 \
             RETURNING conversation_id \
         ) \
         INSERT INTO chatbot_user_memory (conversation_id, user_id, role, content, created_at) \
         SELECT conv.conversation_id, $2, m.role, jsonb_build_object('text', m.text), m.at \
         FROM conv, UNNEST($9::text[], $10::text[], $11::timestamptz[]) AS m(role, text, at)",
    )
    .bind(conversation_id)
    .bind(user_id)
    .bind(model)
    .bind(last_message_at)
    .bind(as_i64(delta.usage.prompt_tokens))
    .bind(as_i64(delta.usage.completion_tokens))
    .bind(as_i64(delta.usage.total_tokens))
    .bind(as_i64(delta.turns))
    .bind(&cols.roles)
    .bind(&cols.texts)
    .bind(&cols.ats)
    .bind(title_if_none)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() > 0)
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

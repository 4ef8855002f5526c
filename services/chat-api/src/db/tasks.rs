//! Background work claimed through the database (`chatbot_conversation_tasks`),
//! so that with several replicas one conversation is never summarised (or
//! titled) by two of them at once, and work left by a replica that died is
//! picked up by another.
//!
//! A claim sets a fresh `claim` token and pushes `due_at` forward by a lease:
//! while the lease runs nobody else claims the row; when the worker finishes
//! it deletes the row (or makes it due again if the work was asked for again
//! meanwhile), when it fails it sets the next attempt's time. If it dies, the
//! row is simply due again when the lease ends. `FOR UPDATE SKIP LOCKED` lets
//! replicas claim side by side without waiting on each other.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

/// What a task does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskKind {
    /// Fold older messages into `conversation_summary`.
    Summary,
    /// Replace the first-message title by a generated one (`TITLES=provider`).
    Title,
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Summary => "summary",
            Self::Title => "title",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "summary" => Some(Self::Summary),
            "title" => Some(Self::Title),
            _ => None,
        }
    }
}

/// A task this worker holds until its lease ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedTask {
    pub conversation_id: Uuid,
    pub kind: TaskKind,
    pub claim: Uuid,
    /// How many times the work was asked for, as of the claim.
    pub requests: i64,
    /// Including this one.
    pub attempts: i32,
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Asks for `kind` on a conversation (no-op for a deleted one).
pub async fn enqueue(pool: &PgPool, conversation_id: Uuid, kind: TaskKind) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO chatbot_conversation_tasks (conversation_id, kind) \
         SELECT conversation_id, $2 FROM chatbot_conversation_audit WHERE conversation_id = $1 \
         ON CONFLICT (conversation_id, kind) DO UPDATE \
             SET requests = chatbot_conversation_tasks.requests + 1",
    )
    .bind(conversation_id)
    .bind(kind.as_str())
    .execute(pool)
    .await?;
    Ok(())
}

/// Asks for a generated title when the conversation has had exactly one
/// answered turn and still has its first-message title. True when queued.
pub async fn enqueue_title_after_first_turn(pool: &PgPool, conversation_id: Uuid) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO chatbot_conversation_tasks (conversation_id, kind) \
         SELECT conversation_id, 'title' FROM chatbot_conversation_audit \
         WHERE conversation_id = $1 AND title_source = 'first-message' \
           AND COALESCE((token_usage->>'turns')::bigint, 0) = 1 \
         ON CONFLICT (conversation_id, kind) DO NOTHING",
    )
    .bind(conversation_id)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Claims up to `limit` due tasks for `lease`.
pub async fn claim(pool: &PgPool, lease: Duration, limit: u32) -> Result<Vec<ClaimedTask>, sqlx::Error> {
    let rows: Vec<(Uuid, String, Uuid, i64, i32)> = sqlx::query_as(
        "UPDATE chatbot_conversation_tasks t SET \
             claim = gen_random_uuid(), \
             due_at = now() + make_interval(secs => $1), \
             attempts = t.attempts + 1 \
         FROM ( \
             SELECT conversation_id, kind FROM chatbot_conversation_tasks \
             WHERE due_at <= now() ORDER BY due_at LIMIT $2 \
             FOR UPDATE SKIP LOCKED \
         ) due \
         WHERE t.conversation_id = due.conversation_id AND t.kind = due.kind \
         RETURNING t.conversation_id, t.kind, t.claim, t.requests, t.attempts",
    )
    .bind(secs(lease))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(conversation_id, kind, claim, requests, attempts)| {
            Some(ClaimedTask { conversation_id, kind: TaskKind::parse(&kind)?, claim, requests, attempts })
        })
        .collect())
}

/// The work is done: the row goes, unless it was asked for again since the
/// claim, in which case it is due again right away (a fresh run sees the new state).
pub async fn complete(pool: &PgPool, task: &ClaimedTask) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH done AS ( \
             DELETE FROM chatbot_conversation_tasks \
             WHERE conversation_id = $1 AND kind = $2 AND claim = $3 AND requests = $4 \
             RETURNING 1 \
         ) \
         UPDATE chatbot_conversation_tasks SET due_at = now(), claim = NULL, attempts = 0, last_error = NULL \
         WHERE conversation_id = $1 AND kind = $2 AND claim = $3 AND NOT EXISTS (SELECT 1 FROM done)",
    )
    .bind(task.conversation_id)
    .bind(task.kind.as_str())
    .bind(task.claim)
    .bind(task.requests)
    .execute(pool)
    .await?;
    Ok(())
}

/// The attempt failed: try again after `retry_in`. Nothing else changes.
pub async fn fail(pool: &PgPool, task: &ClaimedTask, retry_in: Duration, error: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE chatbot_conversation_tasks SET due_at = now() + make_interval(secs => $4), claim = NULL, \
             last_error = $5 \
         WHERE conversation_id = $1 AND kind = $2 AND claim = $3",
    )
    .bind(task.conversation_id)
    .bind(task.kind.as_str())
    .bind(task.claim)
    .bind(secs(retry_in))
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Gives the task up for good (e.g. a title after too many failed attempts).
pub async fn abandon(pool: &PgPool, task: &ClaimedTask) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM chatbot_conversation_tasks WHERE conversation_id = $1 AND kind = $2 AND claim = $3")
        .bind(task.conversation_id)
        .bind(task.kind.as_str())
        .bind(task.claim)
        .execute(pool)
        .await?;
    Ok(())
}

/// Hands an unfinished task back (shutting down): due now, attempt not counted.
pub async fn release(pool: &PgPool, task: &ClaimedTask) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE chatbot_conversation_tasks SET due_at = now(), claim = NULL, attempts = greatest(attempts - 1, 0) \
         WHERE conversation_id = $1 AND kind = $2 AND claim = $3",
    )
    .bind(task.conversation_id)
    .bind(task.kind.as_str())
    .bind(task.claim)
    .execute(pool)
    .await?;
    Ok(())
}

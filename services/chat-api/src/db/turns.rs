//! A chat turn's statements: claiming the conversation (and reading its
//! recent history in the same round trip), renewing and releasing the claim,
//! and storing the turn, which releases the claim in the same statement.
//!
//! Order and time come from the database only: a user message is stamped with
//! the database time its turn claimed the conversation (for a new
//! conversation, the time of the storing statement), the answer with the
//! database time of the storing statement, each at least one microsecond
//! after the conversation's previous message whatever the clocks say. No
//! replica clock is ever written.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::conversations::{TurnContext, load_turn_context, parse_role};
use crate::llm::{Role, Usage};

/// What claiming an existing conversation found.
#[derive(Debug)]
pub enum Claim {
    /// The claim is ours; the newest messages, oldest first (with summaries
    /// on: only those after the summary, which comes along).
    Claimed(TurnContext),
    /// Another turn holds the conversation.
    Busy,
    /// No such conversation for this user (nothing was claimed).
    NotFound,
}

fn role_str(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Assistant => "assistant",
        // Never stored: the CHECK constraint allows user and assistant only.
        Role::System => "system",
    }
}

/// A row of the claiming statement: outcome, summary, then one message's role and text.
type ClaimRow = (String, Option<String>, Option<String>, Option<String>);

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn as_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Claims an existing conversation for one turn (a conditional insert or
/// update of its claim row, taken when free or expired), and reads its newest
/// `limit` messages in the same round trip. With `summaries`, messages folded
/// into the conversation's summary are left out and the summary comes along.
/// Touches only the unlogged claim table, so it commits without a WAL flush.
///
/// When a previous holder committed between this statement's snapshot and
/// its claim (the claim row says so through `last_message_at`), the history
/// is read again in a second statement so it holds that turn too.
pub async fn claim_existing(
    pool: &PgPool,
    conversation_id: Uuid,
    user_id: Uuid,
    token: Uuid,
    lease: Duration,
    limit: usize,
    summaries: bool,
) -> Result<Claim, sqlx::Error> {
    let rows: Vec<ClaimRow> = sqlx::query_as(
        "WITH conv AS ( \
             SELECT user_id, last_message_at, \
                    CASE WHEN $6 THEN conversation_summary END AS summary, \
                    CASE WHEN $6 THEN summary_through END AS summary_through \
             FROM chatbot_conversation_audit WHERE conversation_id = $1 \
         ), held AS ( \
             SELECT user_id FROM chatbot_turn_claims WHERE conversation_id = $1 \
         ), claim AS ( \
             INSERT INTO chatbot_turn_claims AS k \
                 (conversation_id, user_id, token, claimed_at, expires_at, last_message_at) \
             SELECT $1, $2, $3, now(), now() + $4::float8 * interval '1 second', \
                    (SELECT last_message_at FROM conv) \
             WHERE EXISTS (SELECT 1 FROM conv WHERE user_id = $2) OR EXISTS (SELECT 1 FROM held WHERE user_id = $2) \
             ON CONFLICT (conversation_id) DO UPDATE \
                 SET token = EXCLUDED.token, claimed_at = EXCLUDED.claimed_at, expires_at = EXCLUDED.expires_at \
                 WHERE k.user_id = $2 AND (k.token IS NULL OR k.expires_at < now()) \
             RETURNING k.last_message_at \
         ), outcome AS ( \
             SELECT CASE \
                 WHEN EXISTS (SELECT 1 FROM claim) THEN \
                     CASE WHEN EXISTS (SELECT 1 FROM conv WHERE user_id = $2) \
                           AND (SELECT last_message_at FROM claim) IS NOT DISTINCT FROM (SELECT last_message_at FROM conv) \
                          THEN 'claimed' ELSE 'stale' END \
                 WHEN EXISTS (SELECT 1 FROM conv WHERE user_id <> $2) THEN 'not_found' \
                 WHEN EXISTS (SELECT 1 FROM conv) OR EXISTS (SELECT 1 FROM held WHERE user_id = $2) THEN 'busy' \
                 ELSE 'not_found' END AS outcome \
         ) \
         SELECT o.outcome, (SELECT summary FROM conv), m.role, m.text \
         FROM outcome o \
         LEFT JOIN LATERAL ( \
             SELECT role, content->>'text' AS text, created_at FROM chatbot_user_memory \
             WHERE conversation_id = $1 AND o.outcome = 'claimed' \
               AND created_at > COALESCE((SELECT summary_through FROM conv), '-infinity') \
             ORDER BY created_at DESC LIMIT $5 \
         ) m ON TRUE \
         ORDER BY m.created_at ASC",
    )
    .bind(conversation_id)
    .bind(user_id)
    .bind(token)
    .bind(secs(lease))
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .bind(summaries)
    .fetch_all(pool)
    .await?;
    let Some((outcome, summary, _, _)) = rows.first() else {
        return Ok(Claim::NotFound);
    };
    match outcome.as_str() {
        "claimed" => {
            let summary = summary.clone();
            let history = rows
                .into_iter()
                .filter_map(|(_, _, role, text)| Some((parse_role(&role?), text.unwrap_or_default())))
                .collect();
            Ok(Claim::Claimed(TurnContext { history, summary }))
        }
        "stale" => match load_turn_context(pool, conversation_id, user_id, limit, summaries).await? {
            Some(context) => Ok(Claim::Claimed(context)),
            None => {
                release(pool, conversation_id, token).await?;
                Ok(Claim::NotFound)
            }
        },
        "busy" => Ok(Claim::Busy),
        _ => Ok(Claim::NotFound),
    }
}

/// Extends a claim still held with `token`; false when it is no longer ours.
pub async fn renew(pool: &PgPool, conversation_id: Uuid, token: Uuid, lease: Duration) -> Result<bool, sqlx::Error> {
    let result = sqlx::query(
        "UPDATE chatbot_turn_claims SET expires_at = now() + $3::float8 * interval '1 second' \
         WHERE conversation_id = $1 AND token = $2",
    )
    .bind(conversation_id)
    .bind(token)
    .bind(secs(lease))
    .execute(pool)
    .await?;
    Ok(result.rows_affected() > 0)
}

/// Frees a claim held with `token` without storing anything.
pub async fn release(pool: &PgPool, conversation_id: Uuid, token: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE chatbot_turn_claims SET token = NULL, expires_at = NULL WHERE conversation_id = $1 AND token = $2",
    )
    .bind(conversation_id)
    .bind(token)
    .execute(pool)
    .await?;
    Ok(())
}

/// What a turn adds to the conversation's running totals.
#[derive(Debug, Clone, Copy, Default)]
pub struct UsageDelta {
    pub usage: Usage,
    pub turns: u64,
    /// Turns whose usage is an estimate (the provider reported none).
    pub estimated_turns: u64,
}

/// The turn to store: messages in conversation order (request history first
/// when it is stored with the turn, then the user message, then the answer).
pub struct NewTurn<'a> {
    pub conversation_id: Uuid,
    pub user_id: Uuid,
    /// The claim this turn holds (required to append to an existing conversation).
    pub claim: Option<Uuid>,
    pub model: Option<&'a str>,
    /// The conversation's title when it has none yet (its first user message).
    pub title: Option<&'a str>,
    pub delta: UsageDelta,
    pub messages: Vec<(Role, String)>,
    /// The messages' ids, in the same order: chosen by the service, so that a
    /// message can be named before it is stored (an OpenAI response id names
    /// its answer from the first streamed event). See [`new_ids`].
    pub ids: Vec<Uuid>,
}

impl<'a> NewTurn<'a> {
    /// The first messages of a new conversation, without a turn: no claim,
    /// no model, no usage (start-conversation, `POST /v1/conversations`).
    pub fn opening(
        conversation_id: Uuid,
        user_id: Uuid,
        title: Option<&'a str>,
        messages: Vec<(Role, String)>,
        ids: Vec<Uuid>,
    ) -> Self {
        Self { conversation_id, user_id, claim: None, model: None, title, delta: UsageDelta::default(), messages, ids }
    }
}

/// Fresh ids for `n` messages.
pub fn new_ids(n: usize) -> Vec<Uuid> {
    (0..n).map(|_| Uuid::new_v4()).collect()
}

struct Columns<'t> {
    roles: Vec<&'static str>,
    texts: Vec<&'t str>,
}

fn columns<'t>(turn: &'t NewTurn<'_>) -> Columns<'t> {
    assert_eq!(turn.messages.len(), turn.ids.len(), "one id per message");
    let (roles, texts) = turn.messages.iter().map(|(role, text)| (role_str(*role), text.as_str())).unzip();
    Columns { roles, texts }
}

/// The parameters of both storing statements ([`append`], [`create`]), bound
/// in one order: $1 conversation, $2 user, $3-$5 prompt, completion and total
/// tokens, $6 turns, $7 roles, $8 texts, $9 estimated turns, $10 claim token
/// (nil without one), $11 model, $12 message ids, $13 title.
fn bind_turn<'q>(
    sql: &'q str,
    turn: &'q NewTurn<'_>,
    cols: &'q Columns<'q>,
) -> sqlx::query::QueryScalar<'q, sqlx::Postgres, bool, sqlx::postgres::PgArguments> {
    sqlx::query_scalar(sql)
        .bind(turn.conversation_id)
        .bind(turn.user_id)
        .bind(as_i64(turn.delta.usage.prompt_tokens))
        .bind(as_i64(turn.delta.usage.completion_tokens))
        .bind(as_i64(turn.delta.usage.total_tokens))
        .bind(as_i64(turn.delta.turns))
        .bind(&cols.roles)
        .bind(&cols.texts)
        .bind(as_i64(turn.delta.estimated_turns))
        .bind(turn.claim.unwrap_or_else(Uuid::nil))
        .bind(turn.model)
        .bind(&turn.ids)
        .bind(turn.title)
}

/// `msgs` and `last` of the storing statements: the messages laid out from
/// `times.first_at`, one microsecond apart, the last one (the answer) at the
/// statement's time when that is later.
const LAYOUT: &str = "msgs AS ( \
         SELECT m.id, m.role, m.text, CASE WHEN m.ord < cardinality($7::text[]) \
             THEN t.first_at + (m.ord - 1) * interval '1 microsecond' \
             ELSE GREATEST(now(), t.first_at + (m.ord - 1) * interval '1 microsecond') END AS at \
         FROM times t, UNNEST($7::text[], $8::text[], $12::uuid[]) WITH ORDINALITY AS m(role, text, id, ord) \
     ), last AS (SELECT max(at) AS at FROM msgs)";

/// The accumulated `token_usage` after this turn (`estimated_turns` appears once a turn was estimated).
const USAGE: &str = "jsonb_build_object( \
         'prompt_tokens', COALESCE((token_usage->>'prompt_tokens')::bigint, 0) + $3, \
         'completion_tokens', COALESCE((token_usage->>'completion_tokens')::bigint, 0) + $4, \
         'total_tokens', COALESCE((token_usage->>'total_tokens')::bigint, 0) + $5, \
         'turns', COALESCE((token_usage->>'turns')::bigint, 0) + $6) \
     || CASE WHEN COALESCE((token_usage->>'estimated_turns')::bigint, 0) + $9 > 0 \
        THEN jsonb_build_object('estimated_turns', COALESCE((token_usage->>'estimated_turns')::bigint, 0) + $9) \
        ELSE '{}'::jsonb END";

/// How storing a turn went.
#[derive(Debug, PartialEq, Eq)]
pub enum Stored {
    Ok,
    /// The conversation is gone (or not this user's).
    NotFound,
    /// The claim expired and another turn took the conversation.
    ClaimLost,
}

/// Appends a turn to an existing conversation and releases its claim, in one
/// statement: the messages, the conversation's `model`, `last_message_at` and
/// `token_usage`, its title when it has none yet (a conversation started
/// without history), and the claim row (free again, remembering the last
/// message time). Nothing is stored unless the claim is still this turn's.
pub async fn append(conn: &mut PgConnection, turn: NewTurn<'_>) -> Result<Stored, sqlx::Error> {
    let cols = columns(&turn);
    let sql = format!(
        "WITH times AS ( \
             SELECT GREATEST(k.claimed_at, c.last_message_at + interval '1 microsecond') AS first_at \
             FROM chatbot_turn_claims k JOIN chatbot_conversation_audit c USING (conversation_id) \
             WHERE k.conversation_id = $1 AND k.token = $10 AND c.user_id = $2 \
         ), {LAYOUT}, \
         released AS ( \
             UPDATE chatbot_turn_claims SET token = NULL, expires_at = NULL, last_message_at = (SELECT at FROM last) \
             WHERE conversation_id = $1 AND token = $10 AND EXISTS (SELECT 1 FROM times) \
             RETURNING 1 \
         ), conv AS ( \
             UPDATE chatbot_conversation_audit SET \
                 model = COALESCE($11, model), \
                 title = COALESCE(title, $13), \
                 last_message_at = (SELECT at FROM last), \
                 token_usage = {USAGE} \
             WHERE conversation_id = $1 AND user_id = $2 AND EXISTS (SELECT 1 FROM released) \
             RETURNING conversation_id \
         ), inserted AS ( \
             INSERT INTO chatbot_user_memory (id, conversation_id, user_id, role, content, created_at) \
             SELECT msgs.id, conv.conversation_id, $2, msgs.role, jsonb_build_object('text', msgs.text), msgs.at \
             FROM conv, msgs \
             RETURNING 1 \
         ) \
         SELECT EXISTS (SELECT 1 FROM conv)"
    );
    let stored = bind_turn(&sql, &turn, &cols).fetch_one(&mut *conn).await?;
    if stored {
        return Ok(Stored::Ok);
    }
    // Why not, asked in a new snapshot: the statement's own may predate a
    // DELETE that committed while it waited for the rows that DELETE locked.
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM chatbot_conversation_audit WHERE conversation_id = $1 AND user_id = $2)",
    )
    .bind(turn.conversation_id)
    .bind(turn.user_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(if exists { Stored::ClaimLost } else { Stored::NotFound })
}

/// Creates a conversation with its first messages, in one statement, stamped
/// with the statement's database time.
pub async fn create(conn: &mut PgConnection, turn: NewTurn<'_>) -> Result<Stored, sqlx::Error> {
    let cols = columns(&turn);
    let sql = format!(
        "WITH times AS (SELECT now() AS first_at), {LAYOUT}, \
         conv AS ( \
             INSERT INTO chatbot_conversation_audit \
                 (conversation_id, user_id, title, model, token_usage, last_message_at) \
             SELECT $1, $2, $13, $11, \
                    CASE WHEN $6 > 0 THEN (SELECT {USAGE} FROM (SELECT NULL::jsonb AS token_usage) z) END, \
                    (SELECT at FROM last) \
             RETURNING conversation_id \
         ), inserted AS ( \
             INSERT INTO chatbot_user_memory (id, conversation_id, user_id, role, content, created_at) \
             SELECT msgs.id, conv.conversation_id, $2, msgs.role, jsonb_build_object('text', msgs.text), msgs.at \
             FROM conv, msgs \
             RETURNING 1 \
         ) \
         SELECT EXISTS (SELECT 1 FROM conv)"
    );
    let stored = bind_turn(&sql, &turn, &cols).fetch_one(&mut *conn).await?;
    Ok(if stored { Stored::Ok } else { Stored::NotFound })
}

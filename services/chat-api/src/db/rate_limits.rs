//! `colloquy_rate_limits`: one row per user, one statement per check
//! (migration 0020 explains the algorithm). Times are the database's.

use sqlx::PgPool;
use uuid::Uuid;

/// One admission check.
#[derive(Debug, Clone, Copy)]
pub struct Check {
    pub user_id: Uuid,
    /// Seconds one request moves the requests bucket (`60 / RPM`; 0 when off).
    pub request_interval: f64,
    /// Seconds one token moves the tokens bucket (`60 / TPM`; 0 when off).
    pub token_interval: f64,
    /// Tokens this request expects to use; the user's last turn's real usage
    /// is reserved instead when it is larger.
    pub token_estimate: i64,
    /// Most tokens one request may reserve (the TPM itself: a bigger
    /// reservation could never be admitted).
    pub token_cap: i64,
    /// The bucket depth: how far ahead of now a TAT may run, in seconds.
    pub window: f64,
}

/// What the database decided.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct Outcome {
    pub admitted: bool,
    /// Tokens this request reserved (asked for, when refused).
    pub cost: i64,
    /// How far the requests TAT is ahead of now, in seconds (negative: idle).
    pub requests_ahead: f64,
    /// How far the tokens TAT is ahead of now, in seconds.
    pub tokens_ahead: f64,
}

/// Admits or refuses one request, updating the user's row: a single
/// INSERT ... ON CONFLICT DO UPDATE; the user's row lock orders concurrent
/// checks of one user, and other users never wait for it.
pub async fn check(pool: &PgPool, c: Check) -> Result<Outcome, sqlx::Error> {
    sqlx::query_as(
        "INSERT INTO colloquy_rate_limits AS r \
             (user_id, requests_tat, tokens_tat, last_cost, admitted) \
         VALUES ($1, now() + make_interval(secs => $2), \
                 now() + make_interval(secs => least($4, $5) * $3), least($4, $5), true) \
         ON CONFLICT (user_id) DO UPDATE SET \
             (requests_tat, tokens_tat, last_cost, admitted) = ( \
                 SELECT CASE WHEN ok THEN req_next ELSE r.requests_tat END, \
                        CASE WHEN ok THEN tok_next ELSE r.tokens_tat END, \
                        cost, ok \
                 FROM ( \
                     SELECT req_next, tok_next, cost, \
                            req_next <= now() + make_interval(secs => $6) \
                            AND tok_next <= now() + make_interval(secs => $6) AS ok \
                     FROM ( \
                         SELECT greatest(r.requests_tat, now()) + make_interval(secs => $2) AS req_next, \
                                greatest(r.tokens_tat, now()) + make_interval(secs => c.cost * $3) AS tok_next, \
                                c.cost \
                         FROM (SELECT least(greatest($4, r.last_turn_tokens), $5) AS cost) c \
                     ) n \
                 ) d \
             ) \
         RETURNING admitted, last_cost AS cost, \
             extract(epoch FROM requests_tat - now())::float8 AS requests_ahead, \
             extract(epoch FROM tokens_tat - now())::float8 AS tokens_ahead",
    )
    .bind(c.user_id)
    .bind(c.request_interval)
    .bind(c.token_interval)
    .bind(c.token_estimate)
    .bind(c.token_cap)
    .bind(c.window)
    .fetch_one(pool)
    .await
}

/// One user's token settlement: how far to move the tokens bucket (seconds;
/// negative gives reserved tokens back) and the real usage of the user's last
/// turn (0 when unknown, which keeps the previous value).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settlement {
    pub user_id: Uuid,
    pub shift_secs: f64,
    pub last_turn_tokens: i64,
}

/// Applies token settlements of many users in one statement: each turn's
/// reservation replaced by what it really used, and that usage remembered
/// for the user's next turn.
pub async fn settle_tokens(pool: &PgPool, settlements: &[Settlement]) -> Result<(), sqlx::Error> {
    let users: Vec<Uuid> = settlements.iter().map(|s| s.user_id).collect();
    let shifts: Vec<f64> = settlements.iter().map(|s| s.shift_secs).collect();
    let used: Vec<i64> = settlements.iter().map(|s| s.last_turn_tokens).collect();
    sqlx::query(
        "UPDATE colloquy_rate_limits AS r SET \
             tokens_tat = r.tokens_tat + make_interval(secs => d.shift), \
             last_turn_tokens = CASE WHEN d.used > 0 THEN d.used ELSE r.last_turn_tokens END \
         FROM unnest($1::uuid[], $2::float8[], $3::bigint[]) AS d(user_id, shift, used) \
         WHERE r.user_id = d.user_id",
    )
    .bind(&users)
    .bind(&shifts)
    .bind(&used)
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes rows of users idle for an hour (their buckets are long full again).
pub async fn sweep(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM colloquy_rate_limits \
         WHERE requests_tat < now() - interval '1 hour' AND tokens_tat < now() - interval '1 hour'",
    )
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

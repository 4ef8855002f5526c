//! `colloquy_idempotency_keys`: claims, stored responses, expiry
//! (migration 0021). Times are the database's.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A key as one caller sent it.
#[derive(Debug, Clone)]
pub struct KeyRef<'a> {
    pub principal: &'a str,
    pub key: &'a str,
}

/// The row of a key someone else holds or completed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Existing {
    pub request_hash: Vec<u8>,
    pub state: String,
    pub response_status: Option<i16>,
    pub response_content_type: Option<String>,
    pub response_body: Option<Vec<u8>>,
    /// Seconds until an in-progress claim may be taken over.
    pub locked_for: f64,
}

/// The outcome of claiming a key.
#[derive(Debug, Clone)]
pub enum Claim {
    /// This request holds the key now.
    Claimed,
    /// Another request holds it, or completed it.
    Taken(Existing),
}

/// Claims `key` for the request with `hash`, as attempt `claim`: inserts it,
/// or takes it over when it expired, or when the request holding it died
/// (its lease ran out) and this is the same request. One statement; a taken
/// key costs a second one to read what holds it.
///
/// The claim commits without waiting for its WAL flush (`synchronous_commit`
/// off for this statement alone): a claim lost in a crash is harmless,
/// because completing a key requires its claim token, in the same
/// transaction as the turn, which is durable.
pub async fn claim(
    pool: &PgPool,
    key: &KeyRef<'_>,
    hash: &[u8],
    claim: Uuid,
    lease: Duration,
    ttl: Duration,
) -> Result<Claim, sqlx::Error> {
    for _ in 0..3 {
        let claimed: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO colloquy_idempotency_keys AS k \
                 (principal, idempotency_key, request_hash, claim, state, locked_until, expires_at) \
             SELECT $1, $2, $3, $4, 'in_progress', now() + make_interval(secs => $5), \
                    now() + make_interval(secs => $6) \
             FROM (SELECT set_config('synchronous_commit', 'off', true)) AS no_wait_for_flush \
             ON CONFLICT (principal, idempotency_key) DO UPDATE SET \
                 request_hash = EXCLUDED.request_hash, claim = EXCLUDED.claim, state = 'in_progress', \
                 locked_until = EXCLUDED.locked_until, expires_at = EXCLUDED.expires_at, created_at = now(), \
                 response_status = NULL, response_content_type = NULL, response_body = NULL \
             WHERE k.expires_at <= now() \
                OR (k.state = 'in_progress' AND k.locked_until <= now() AND k.request_hash = EXCLUDED.request_hash) \
             RETURNING claim",
        )
        .bind(key.principal)
        .bind(key.key)
        .bind(hash)
        .bind(claim)
        .bind(lease.as_secs_f64())
        .bind(ttl.as_secs_f64())
        .fetch_optional(pool)
        .await?;
        if claimed == Some(claim) {
            return Ok(Claim::Claimed);
        }
        let existing: Option<Existing> = sqlx::query_as(
            "SELECT request_hash, state, response_status, response_content_type, response_body, \
                    extract(epoch FROM locked_until - now())::float8 AS locked_for \
             FROM colloquy_idempotency_keys WHERE principal = $1 AND idempotency_key = $2",
        )
        .bind(key.principal)
        .bind(key.key)
        .fetch_optional(pool)
        .await?;
        // Gone in between (its request failed and released it): claim again.
        if let Some(existing) = existing {
            return Ok(Claim::Taken(existing));
        }
    }
    Err(sqlx::Error::Protocol("idempotency key claim kept changing hands".to_owned()))
}

/// A response to store for a claimed key.
#[derive(Debug, Clone)]
pub struct StoredResponse<'a> {
    pub status: u16,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

/// Records the response of a claimed key, on `conn` (inside the turn's
/// transaction when there is one). False when the claim was lost.
pub async fn complete(
    conn: &mut PgConnection,
    key: &KeyRef<'_>,
    claim: Uuid,
    response: &StoredResponse<'_>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE colloquy_idempotency_keys SET state = 'completed', \
             response_status = $4, response_content_type = $5, response_body = $6 \
         WHERE principal = $1 AND idempotency_key = $2 AND claim = $3 AND state = 'in_progress'",
    )
    .bind(key.principal)
    .bind(key.key)
    .bind(claim)
    .bind(i16::try_from(response.status).unwrap_or(i16::MAX))
    .bind(response.content_type)
    .bind(response.body)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether `claim` completed the key (after a COMMIT whose outcome is unknown).
pub async fn completed_by(pool: &PgPool, key: &KeyRef<'_>, claim: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM colloquy_idempotency_keys \
         WHERE principal = $1 AND idempotency_key = $2 AND claim = $3 AND state = 'completed')",
    )
    .bind(key.principal)
    .bind(key.key)
    .bind(claim)
    .fetch_one(pool)
    .await
}

/// Gives up a claim whose request failed, so the key can be used again.
pub async fn release(pool: &PgPool, key: &KeyRef<'_>, claim: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM colloquy_idempotency_keys \
         WHERE principal = $1 AND idempotency_key = $2 AND claim = $3 AND state = 'in_progress' \
           AND set_config('synchronous_commit', 'off', true) IS NOT NULL",
    )
    .bind(key.principal)
    .bind(key.key)
    .bind(claim)
    .execute(pool)
    .await?;
    Ok(())
}

/// Deletes up to `batch` expired keys, oldest first.
pub async fn sweep(pool: &PgPool, batch: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM colloquy_idempotency_keys WHERE ctid = ANY(ARRAY( \
             SELECT ctid FROM colloquy_idempotency_keys WHERE expires_at <= now() \
             ORDER BY expires_at LIMIT $1))",
    )
    .bind(batch)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

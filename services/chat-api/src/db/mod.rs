//! PostgreSQL: connecting (with a bounded retry while the database comes up),
//! migrations, and the conversation store.

pub mod concurrent_indexes;
pub mod conversations;
pub mod idempotency;
pub mod lifecycle;
pub mod listing;
pub mod openai;
pub mod rate_limits;
pub mod summaries;
pub mod tasks;
pub mod turn_write;
pub mod turns;

use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

use crate::config::DatabaseConfig;

/// Connections idle longer than this are pinged before use.
const IDLE_PING_AFTER: Duration = Duration::from_secs(30);

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("DATABASE_URL is invalid: {0}")]
    BadUrl(String),
    #[error("could not reach PostgreSQL within {waited:?}: {last}")]
    Unreachable { waited: Duration, last: String },
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

/// How chat-api's connections are named in `pg_stat_activity`.
pub const APPLICATION_NAME: &str = "colloquy-chat-api";

fn options(config: &DatabaseConfig) -> Result<PgConnectOptions, DbError> {
    let options: PgConnectOptions = config
        .url
        .expose()
        .parse()
        // sqlx's message can quote the URL; do not pass it on.
        .map_err(|_| DbError::BadUrl("not a valid postgres:// URL".to_owned()))?;
    Ok(options.application_name(APPLICATION_NAME))
}

/// A pool for serving. Connections are made lazily, so `serve` starts (and
/// reports not-ready) while the database is down.
pub fn lazy_pool(config: &DatabaseConfig) -> Result<PgPool, DbError> {
    Ok(PgPoolOptions::new()
        .max_connections(config.max_connections)
        // Kept after the idle timeout reaps the rest; opened by [`warm`].
        .min_connections(config.min_connections)
        .acquire_timeout(Duration::from_secs(3))
        .idle_timeout(Duration::from_secs(300))
        // sqlx pings every connection on acquire by default: an extra round
        // trip per statement. Ping only connections that sat idle a while.
        .test_before_acquire(false)
        // sqlx warns for every acquire slower than 2 s: a burst of answered
        // turns queueing for the pool (which they are built to do, see
        // `turn_write`) printed 5,319 warnings in one streaming bench run.
        // The pool's saturation shows on `colloquy_db_pool_connections`.
        .acquire_slow_level(log::LevelFilter::Debug)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > IDLE_PING_AFTER {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options(config)?))
}

/// Opens the pool's `min_connections` at once, off the request path, and
/// gives them back to the pool: sqlx's lazy pool opens its connections in
/// the requests that need them, and each opening costs a SCRAM handshake (a
/// few milliseconds of CPU on a runtime thread, where nothing else runs
/// meanwhile) and round trips. In the streaming bench (5,000 turns in
/// flight), a fresh process's first second of stored turns opened 15
/// connections that way: the added first byte's p99 was 28.6 ms over the
/// run, 8.3 ms with the pool opened at start-up. A database that is down is
/// not waited for: the connections are then opened later, on use.
pub async fn warm(pool: PgPool) {
    let n = pool.options().get_min_connections();
    let opened = futures::future::join_all((0..n).map(|_| pool.acquire())).await;
    let ok = opened.iter().filter(|c| c.is_ok()).count();
    match opened.iter().find_map(|c| c.as_ref().err()) {
        None => tracing::debug!(connections = ok, "database pool opened"),
        Some(e) => tracing::info!(connections = ok, error = %e, "database pool: connections not opened at start-up"),
    }
}

/// Waits until PostgreSQL answers, retrying with backoff for `connect_timeout`.
pub async fn wait_until_reachable(pool: &PgPool, config: &DatabaseConfig) -> Result<(), DbError> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(200);
    loop {
        match sqlx::query("SELECT 1").execute(pool).await {
            Ok(_) => return Ok(()),
            Err(e) => {
                let waited = started.elapsed();
                if waited >= config.connect_timeout {
                    return Err(DbError::Unreachable { waited, last: e.to_string() });
                }
                tracing::info!(error = %e, retry_in = ?delay, "waiting for PostgreSQL");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Applies pending migrations (idempotent: applied ones are skipped). Under
/// sqlx's migration lock (an advisory lock, re-entrant for this session, which
/// `run_direct` takes again), invalid leftovers of interrupted `CONCURRENTLY`
/// builds are dropped first so they are rebuilt (see [`concurrent_indexes`]).
pub async fn migrate(pool: &PgPool) -> Result<(), DbError> {
    use sqlx::migrate::Migrate;
    let mut conn = pool.acquire().await.map_err(sqlx::migrate::MigrateError::from)?;
    let result = async {
        conn.lock().await?;
        concurrent_indexes::drop_invalid_leftovers(&mut conn, &MIGRATOR).await?;
        MIGRATOR.run_direct(&mut *conn).await?;
        conn.unlock().await
    }
    .await;
    if result.is_err() {
        // Do not return a connection that may still hold the advisory lock to the pool.
        let _ = conn.detach().close().await;
    }
    Ok(result?)
}

/// Whether PostgreSQL answers right now (readiness).
pub async fn ping(pool: &PgPool) -> bool {
    matches!(tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(pool)).await, Ok(Ok(_)))
}

//! How a turn's write reaches PostgreSQL once the provider has answered:
//!
//! - A write that fails because the connection or the server went away is
//!   retried once, on a fresh connection opened for it (not another pooled
//!   one, which may be just as dead after a database restart). The write is
//!   one statement, so a failed attempt stored nothing; a second failure is
//!   the caller's `503 database_unavailable`.
//! - The provider has already answered (and been paid for): when every
//!   pooled connection is busy, the write waits for one up to
//!   [`ANSWERED_TURN_POOL_WAIT`] instead of the pool's 3 s, so a burst of
//!   streams ending together is stored late rather than lost. A pool that is
//!   not full but cannot connect (the database is down) still fails after 3 s.
//! - Inside a [`WriteUnit`] (a request with an `Idempotency-Key`), the write
//!   runs in a transaction that stays open until the idempotency layer has
//!   recorded the response in it: the turn and its stored response commit
//!   together or not at all. A streamed answer's turn is written while its
//!   body is sent, after the handler returned: the stream captures the unit
//!   ([`current_unit`]) and writes inside it.
//!
//! Hand-written rather than sqlx's `Transaction` because the transaction
//! must outlive the handler that opened it, on a connection that may not
//! come from the pool.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sqlx::pool::PoolConnection;
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use tokio::sync::Mutex;

use crate::error::is_unavailable;

/// A database connection held by a write.
enum Held {
    Pooled(PoolConnection<Postgres>),
    /// Opened for a retry, outside the pool.
    Fresh(PgConnection),
}

impl Held {
    fn conn(&mut self) -> &mut PgConnection {
        match self {
            Self::Pooled(c) => c,
            Self::Fresh(c) => c,
        }
    }

    async fn acquire(pool: &PgPool, fresh: bool) -> Result<Self, sqlx::Error> {
        if fresh {
            let options = pool.connect_options();
            let connect = PgConnection::connect_with(&options);
            match tokio::time::timeout(pool.options().get_acquire_timeout(), connect).await {
                Ok(conn) => Ok(Self::Fresh(conn?)),
                Err(_) => Err(sqlx::Error::PoolTimedOut),
            }
        } else {
            Ok(Self::Pooled(acquire_answered(pool).await?))
        }
    }

    /// Gives the connection back (pooled) or closes it (fresh).
    async fn release(self) {
        match self {
            Self::Pooled(c) => drop(c),
            Self::Fresh(c) => {
                let _ = c.close().await;
            }
        }
    }
}

/// How long an answered turn's write waits for a busy pool, in all.
pub const ANSWERED_TURN_POOL_WAIT: Duration = Duration::from_secs(60);

/// A pooled connection for an answered turn: the pool's own acquire, tried
/// again while the pool is full (every connection busy: exhaustion, not an
/// outage) until [`ANSWERED_TURN_POOL_WAIT`] has passed.
async fn acquire_answered(pool: &PgPool) -> Result<PoolConnection<Postgres>, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + ANSWERED_TURN_POOL_WAIT;
    loop {
        match pool.acquire().await {
            Err(sqlx::Error::PoolTimedOut)
                if pool.size() >= pool.options().get_max_connections() && tokio::time::Instant::now() < deadline => {}
            result => return result,
        }
    }
}

/// A transaction left open by a turn's write, committed by whoever opened the unit.
pub struct OpenTx {
    held: Option<Held>,
}

impl OpenTx {
    /// The connection belongs to the `OpenTx` before BEGIN is sent, and stays
    /// in it until COMMIT has succeeded: a request dropped at any await in
    /// between (its client went away) drops the `OpenTx`, which closes the
    /// connection. Held in a local instead, it went back to the pool, where
    /// sqlx's release check waits out the BEGIN: the next user got a
    /// connection inside a transaction it did not open (seen in the bench as
    /// PostgreSQL's "there is already a transaction in progress"), and a
    /// plain write there would not have committed.
    async fn begin(pool: &PgPool, fresh: bool) -> Result<Self, sqlx::Error> {
        let mut tx = Self { held: Some(Held::acquire(pool, fresh).await?) };
        sqlx::query("BEGIN").execute(tx.conn()).await?;
        Ok(tx)
    }

    pub fn conn(&mut self) -> &mut PgConnection {
        self.held.as_mut().expect("connection held until commit").conn()
    }

    /// Commits. On error the outcome may be unknown (the connection broke
    /// during COMMIT): the caller checks what it wrote.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        // On error (or if dropped meanwhile) `self` closes the connection.
        sqlx::query("COMMIT").execute(self.conn()).await?;
        if let Some(held) = self.held.take() {
            held.release().await;
        }
        Ok(())
    }
}

impl Drop for OpenTx {
    /// Abandoned (not committed): close the connection, which rolls the
    /// transaction back; never return it to the pool mid-transaction.
    fn drop(&mut self) {
        match self.held.take() {
            Some(Held::Pooled(c)) => drop(c.detach()),
            Some(Held::Fresh(c)) => drop(c),
            None => {}
        }
    }
}

/// The write of one request that must commit together with something else.
#[derive(Default)]
pub struct WriteUnit {
    tx: Mutex<Option<OpenTx>>,
}

impl WriteUnit {
    /// The transaction a write left open, if any.
    pub async fn take(&self) -> Option<OpenTx> {
        self.tx.lock().await.take()
    }
}

tokio::task_local! {
    static UNIT: Arc<WriteUnit>;
}

/// Runs `f` with `unit` (when there is one) collecting the writes made inside it.
pub async fn in_unit<F: Future>(unit: Option<Arc<WriteUnit>>, f: F) -> F::Output {
    match unit {
        Some(unit) => UNIT.scope(unit, f).await,
        None => f.await,
    }
}

/// The current request's unit, for a write made after its handler returned
/// (a streamed answer's turn): run that write inside [`in_unit`].
pub fn current_unit() -> Option<Arc<WriteUnit>> {
    UNIT.try_with(Arc::clone).ok()
}

/// Runs a turn's write (see the module documentation). `op` may run twice,
/// so it owns (clones) what it writes.
pub async fn write<T, F>(pool: &PgPool, mut op: F) -> Result<T, sqlx::Error>
where
    F: for<'c> FnMut(&'c mut PgConnection) -> BoxFuture<'c, Result<T, sqlx::Error>> + Send,
{
    if let Ok(unit) = UNIT.try_with(Arc::clone) {
        return write_in_unit(pool, &unit, op).await;
    }
    let mut held = Held::acquire(pool, false).await?;
    match op(held.conn()).await {
        Ok(v) => {
            held.release().await;
            Ok(v)
        }
        Err(e) if retryable(&e) => {
            tracing::warn!(error = %e, "turn write failed; retrying once on a fresh connection");
            drop(held);
            let mut fresh = Held::acquire(pool, true).await?;
            let result = op(fresh.conn()).await;
            fresh.release().await;
            result
        }
        Err(e) => Err(e),
    }
}

async fn write_in_unit<T, F>(pool: &PgPool, unit: &WriteUnit, mut op: F) -> Result<T, sqlx::Error>
where
    F: for<'c> FnMut(&'c mut PgConnection) -> BoxFuture<'c, Result<T, sqlx::Error>> + Send,
{
    let mut slot = unit.tx.lock().await;
    // A second write of the same request joins the open transaction.
    if let Some(tx) = slot.as_mut() {
        return op(tx.conn()).await;
    }
    let first = match OpenTx::begin(pool, false).await {
        Ok(mut tx) => match op(tx.conn()).await {
            Ok(v) => {
                *slot = Some(tx);
                return Ok(v);
            }
            Err(e) => e,
        },
        Err(e) => e,
    };
    if !retryable(&first) {
        return Err(first);
    }
    tracing::warn!(error = %first, "turn write failed; retrying once on a fresh connection");
    let mut tx = OpenTx::begin(pool, true).await?;
    let v = op(tx.conn()).await?;
    *slot = Some(tx);
    Ok(v)
}

/// Failures of the connection or the server, after which the statement did
/// not (or, inside a transaction, cannot have) committed. A pool timeout is
/// not one: the pool is exhausted, and one more connection would not help it.
fn retryable(err: &sqlx::Error) -> bool {
    is_unavailable(err) && !matches!(err, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
}

//! Background sweeps of rows that outlived their use: expired idempotency
//! keys and the rate-limit rows of idle users. Every replica sweeps; the
//! statements are cheap and safe to run concurrently.

use std::time::Duration;

use sqlx::PgPool;

use crate::db::{idempotency, rate_limits};

/// How often each replica sweeps.
pub const EVERY: Duration = Duration::from_secs(60);
/// Keys deleted per statement (a large backlog goes in several).
const BATCH: i64 = 1000;

/// One sweep: every expired key, then idle rate-limit rows. Returns how many
/// keys were deleted.
pub async fn once(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let mut keys = 0;
    loop {
        let n = idempotency::sweep(pool, BATCH).await?;
        keys += n;
        if n < BATCH as u64 {
            break;
        }
    }
    rate_limits::sweep(pool).await?;
    Ok(keys)
}

/// Sweeps every [`EVERY`] until the task is dropped.
pub async fn forever(pool: PgPool) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match once(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(keys = n, "expired idempotency keys deleted"),
            Err(e) => tracing::debug!(error = %e, "sweep failed; trying again later"),
        }
    }
}

//! Turn order: one turn at a time per conversation, across replicas.
//!
//! A turn on an existing conversation first claims it in the database
//! (`db::turns::claim_existing`: a conditional insert/update of its row in the
//! unlogged `chatbot_turn_claims` table, with an expiry in database time) and
//! reads the history in the same round trip; the claim is released by the
//! statement that stores the turn, or, when the turn fails or its client goes
//! away, by [`ClaimGuard`]'s drop. So each stored user message is followed by
//! its own answer, and a turn's context holds every turn committed before it.
//!
//! A turn that finds the conversation claimed waits: woken at once when the
//! holder runs in this process, otherwise polling with exponential backoff
//! (10 ms to 250 ms), for at most `TURN_WAIT_SECS`; past that it is a `409
//! conversation_busy`. The claim expires after the provider timeout plus a
//! margin, so a replica that dies mid-turn cannot wedge a conversation; a
//! holder renews it while its turn runs (a stream may outlast the timeout).
//! No database connection is held while waiting or during the provider call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::time::Instant;
use uuid::Uuid;

use super::spans;
use crate::db::conversations::TurnContext;
use crate::db::turns::{self, Claim};
use crate::error::ApiError;
use crate::metrics::Metrics;

/// First and longest pause between two claim attempts.
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(250);
/// How much longer than the provider timeout a claim lives without renewal.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// The claims of this process: settings, and who waits on what.
pub struct TurnOrder {
    pool: PgPool,
    metrics: Arc<Metrics>,
    /// How long a claim lives unless renewed.
    lease: Duration,
    /// How long a turn waits for a claimed conversation.
    wait: Duration,
    /// Waiters of this process, per conversation (hand-written: a map of
    /// `Notify`s is all it takes, and a release wakes only that conversation's waiters).
    waiters: Mutex<HashMap<Uuid, (Arc<Notify>, usize)>>,
}

impl TurnOrder {
    pub fn new(pool: PgPool, metrics: Arc<Metrics>, provider_timeout: Duration, wait: Duration) -> Arc<Self> {
        let lease = provider_timeout + LEASE_MARGIN;
        Arc::new(Self { pool, metrics, lease, wait, waiters: Mutex::new(HashMap::new()) })
    }

    /// Claims an existing conversation, waiting while another turn holds it;
    /// returns the claim and the turn's context: the newest `limit` messages
    /// (oldest first), with `summaries` only those after the summary, which
    /// comes along.
    pub async fn claim_existing(
        self: &Arc<Self>,
        conversation_id: Uuid,
        user_id: Uuid,
        limit: usize,
        summaries: bool,
    ) -> Result<(ClaimGuard, TurnContext), ApiError> {
        let token = Uuid::new_v4();
        let deadline = Instant::now() + self.wait;
        let mut backoff = FIRST_BACKOFF;
        let waiter = Waiter::register(self, conversation_id);
        loop {
            let notified = waiter.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let attempt =
                turns::claim_existing(&self.pool, conversation_id, user_id, token, self.lease, limit, summaries);
            match spans::observed(&self.metrics, spans::CLAIM_CONVERSATION, attempt).await? {
                Claim::Claimed(context) => return Ok((self.guard(conversation_id, token), context)),
                Claim::NotFound => return Err(ApiError::conversation_not_found()),
                Claim::Busy => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(ApiError::conversation_busy(self.wait));
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(backoff.min(deadline - now)) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    fn guard(self: &Arc<Self>, conversation_id: Uuid, token: Uuid) -> ClaimGuard {
        let order = self.clone();
        // Renew well before expiry while the turn runs; a short turn never does.
        let heartbeat = tokio::spawn(async move {
            let every = order.lease / 3;
            loop {
                tokio::time::sleep(every).await;
                match turns::renew(&order.pool, conversation_id, token, order.lease).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(e) => tracing::warn!(error = %e, "could not renew a turn claim"),
                }
            }
        });
        ClaimGuard { order: self.clone(), conversation_id, token, heartbeat, released: false }
    }

    /// Wakes this process's waiters on `conversation_id`.
    fn wake(&self, conversation_id: Uuid) {
        let waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((notify, _)) = waiters.get(&conversation_id) {
            notify.notify_waiters();
        }
    }
}

/// A waiter registered for a conversation (unregistered on drop).
struct Waiter<'a> {
    order: &'a TurnOrder,
    conversation_id: Uuid,
    notify: Arc<Notify>,
}

impl<'a> Waiter<'a> {
    fn register(order: &'a TurnOrder, conversation_id: Uuid) -> Self {
        let mut waiters = order.waiters.lock().unwrap_or_else(|e| e.into_inner());
        let entry = waiters.entry(conversation_id).or_insert_with(|| (Arc::new(Notify::new()), 0));
        entry.1 += 1;
        Waiter { order, conversation_id, notify: entry.0.clone() }
    }
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut waiters = self.order.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = waiters.get_mut(&self.conversation_id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                waiters.remove(&self.conversation_id);
            }
        }
    }
}

/// A held claim. Storing the turn releases it ([`ClaimGuard::stored`]);
/// dropping it otherwise (failure, client gone) releases it in the background.
pub struct ClaimGuard {
    order: Arc<TurnOrder>,
    conversation_id: Uuid,
    token: Uuid,
    heartbeat: tokio::task::JoinHandle<()>,
    released: bool,
}

impl ClaimGuard {
    pub fn token(&self) -> Uuid {
        self.token
    }

    /// The statement that stored the turn released the claim.
    pub fn stored(mut self) {
        self.released = true;
        self.order.wake(self.conversation_id);
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        self.heartbeat.abort();
        if self.released {
            return;
        }
        let (order, conversation_id, token) = (self.order.clone(), self.conversation_id, self.token);
        let release = async move {
            if let Err(e) = turns::release(&order.pool, conversation_id, token).await {
                // The claim then expires on its own.
                tracing::warn!(error = %e, "could not release a turn claim");
            }
            order.wake(conversation_id);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(release);
            }
            Err(_) => tracing::warn!("no runtime to release a turn claim; it will expire"),
        }
    }
}

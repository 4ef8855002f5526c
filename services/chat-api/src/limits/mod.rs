//! Per-user rate limits that hold across replicas: requests per minute
//! (`RATE_LIMIT_RPM`) and model tokens per minute (`RATE_LIMIT_TPM`), counted
//! in PostgreSQL ([`crate::db::rate_limits`]), one statement per check.
//!
//! The user is the `client_user_id` a server names with `X-API-Key`, or the
//! Bearer token's `sub` ([`crate::auth::ActingUser`]). A turn reserves an
//! estimate of its tokens before the provider call (so concurrent turns
//! cannot overshoot), and the reservation is replaced by the real usage when
//! the turn ends (batched: one statement every 200 ms for all turns that
//! ended meanwhile). Every response of a limited route carries OpenAI-style
//! `x-ratelimit-*` headers; a refusal is `429 rate_limited` with `Retry-After`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::extract::{OriginalUri, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::ActingUser;
use crate::config::LimitsConfig;
use crate::db::rate_limits::{self, Check, Outcome, Settlement};
use crate::error::ApiError;
use crate::metrics::Metrics;

/// The bucket depth: limits are per minute.
const WINDOW: Duration = Duration::from_secs(60);
/// Tokens reserved for the answer on top of the request's own text, when
/// nothing better is known (the user's previous turn's usage is).
const ANSWER_TOKENS_ESTIMATE: i64 = 256;
/// Roughly four bytes of text per token (English; a reservation, settled later).
const BYTES_PER_TOKEN: i64 = 4;

/// How often queued token settlements are written.
const SETTLE_EVERY: Duration = Duration::from_millis(200);

/// The configured limits; `None` when both are off.
#[derive(Debug, Clone)]
pub struct RateLimiter {
    pool: PgPool,
    rpm: Option<u32>,
    tpm: Option<u32>,
    /// Token settlements not written yet: user → (bucket shift in seconds, last turn's usage).
    pending: Arc<Mutex<HashMap<Uuid, (f64, i64)>>>,
}

impl RateLimiter {
    /// The limiter, or `None` when both limits are off. With a token limit it
    /// starts the task that writes settlements (it ends with the limiter).
    pub fn new(config: &LimitsConfig, pool: PgPool) -> Option<Self> {
        if config.requests_per_minute.is_none() && config.tokens_per_minute.is_none() {
            return None;
        }
        let pending = Arc::new(Mutex::new(HashMap::new()));
        if config.tokens_per_minute.is_some() {
            tokio::spawn(flush_settlements(pool.clone(), Arc::downgrade(&pending)));
        }
        Some(Self { pool, rpm: config.requests_per_minute, tpm: config.tokens_per_minute, pending })
    }

    fn interval(limit: Option<u32>) -> f64 {
        limit.map_or(0.0, |n| WINDOW.as_secs_f64() / f64::from(n))
    }

    /// Admits or refuses one request of `user`; a turn (`Some` estimate of
    /// its tokens) also reserves tokens.
    pub async fn check(&self, user: Uuid, turn_tokens: Option<i64>) -> Result<Decision, ApiError> {
        // A reservation is at most the whole limit (more could never be admitted).
        let (token_estimate, token_cap) = match (self.tpm, turn_tokens) {
            (Some(tpm), Some(estimate)) => (estimate.max(1), i64::from(tpm)),
            _ => (0, 0),
        };
        let outcome = rate_limits::check(
            &self.pool,
            Check {
                user_id: user,
                request_interval: Self::interval(self.rpm),
                token_interval: Self::interval(self.tpm),
                token_estimate,
                token_cap,
                window: WINDOW.as_secs_f64(),
            },
        )
        .await?;
        Ok(self.decide(outcome))
    }

    fn decide(&self, o: Outcome) -> Decision {
        let window = WINDOW.as_secs_f64();
        let ahead = |secs: f64| secs.max(0.0);
        let request_interval = Self::interval(self.rpm);
        let token_interval = Self::interval(self.tpm);
        let requests = self.rpm.map(|limit| BucketState {
            limit,
            remaining: ((window - ahead(o.requests_ahead)) / request_interval).floor().max(0.0) as u64,
            reset: Duration::from_secs_f64(ahead(o.requests_ahead)),
        });
        let tokens = self.tpm.map(|limit| BucketState {
            limit,
            remaining: ((window - ahead(o.tokens_ahead)) / token_interval).floor().max(0.0) as u64,
            reset: Duration::from_secs_f64(ahead(o.tokens_ahead)),
        });
        let headers = RateLimitHeaders { requests, tokens };
        if o.admitted {
            return Decision::Admitted { reserved: if self.tpm.is_some() { o.cost } else { 0 }, headers };
        }
        // How long until this request would fit: the bucket that refused it drains.
        let requests_wait = ahead(o.requests_ahead) + request_interval - window;
        let tokens_wait = ahead(o.tokens_ahead) + o.cost as f64 * token_interval - window;
        let over_requests = self.rpm.is_some() && requests_wait > 0.0;
        let message = if over_requests {
            format!("rate limit of {} requests per minute reached", self.rpm.unwrap_or_default())
        } else {
            format!("rate limit of {} tokens per minute reached", self.tpm.unwrap_or_default())
        };
        let retry_after = Duration::from_secs_f64(requests_wait.max(tokens_wait).max(0.0));
        Decision::Refused { retry_after, headers, message, over_requests }
    }

    /// Replaces a reservation by the real usage: queued, and written with
    /// everyone else's by the next flush (off the response path, one
    /// statement for many turns).
    fn settle(&self, user: Uuid, reserved: i64, used: i64) {
        if self.tpm.is_none() || reserved == used {
            return;
        }
        let shift = (used - reserved) as f64 * Self::interval(self.tpm);
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let entry = pending.entry(user).or_insert((0.0, 0));
        entry.0 += shift;
        if used > 0 {
            entry.1 = used;
        }
    }
}

/// Writes queued settlements every [`SETTLE_EVERY`] while the limiter lives.
async fn flush_settlements(pool: PgPool, pending: Weak<Mutex<HashMap<Uuid, (f64, i64)>>>) {
    let mut tick = tokio::time::interval(SETTLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(pending) = pending.upgrade() else { return };
        let batch: Vec<Settlement> = {
            let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
            pending
                .drain()
                .map(|(user_id, (shift_secs, last_turn_tokens))| Settlement { user_id, shift_secs, last_turn_tokens })
                .collect()
        };
        if batch.is_empty() {
            continue;
        }
        if let Err(e) = rate_limits::settle_tokens(&pool, &batch).await {
            // The reservations stand: the limit errs on the safe side.
            tracing::warn!(error = %e, turns = batch.len(), "could not settle token reservations");
        }
    }
}

/// The verdict on one request.
#[derive(Debug, Clone)]
pub enum Decision {
    Admitted { reserved: i64, headers: RateLimitHeaders },
    Refused { retry_after: Duration, headers: RateLimitHeaders, message: String, over_requests: bool },
}

/// One bucket as the headers report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketState {
    pub limit: u32,
    pub remaining: u64,
    /// Until the bucket is full again.
    pub reset: Duration,
}

/// The `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateLimitHeaders {
    pub requests: Option<BucketState>,
    pub tokens: Option<BucketState>,
}

impl RateLimitHeaders {
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (kind, bucket) in [("requests", self.requests), ("tokens", self.tokens)] {
            let Some(b) = bucket else { continue };
            let set = |headers: &mut HeaderMap, what: &str, value: String| {
                let name = HeaderName::try_from(format!("x-ratelimit-{what}-{kind}")).expect("valid header name");
                headers.insert(name, HeaderValue::try_from(value).expect("valid header value"));
            };
            set(headers, "limit", b.limit.to_string());
            set(headers, "remaining", b.remaining.to_string());
            set(headers, "reset", duration_text(b.reset));
        }
    }
}

/// A duration the way OpenAI's reset headers write it: `0s`, `850ms`, `12.5s`, `1m30s`.
pub fn duration_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".to_owned()
    } else if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let text = format!("{:.3}", d.as_secs_f64());
        format!("{}s", text.trim_end_matches('0').trim_end_matches('.'))
    } else {
        let secs = d.as_secs();
        format!("{}m{}s", secs / 60, secs % 60)
    }
}

tokio::task_local! {
    /// Tokens the current request's turn used, reported by the chat service.
    static TURN_TOKENS: Arc<AtomicU64>;
}

/// Called when a turn's provider call succeeded and the turn was stored: its
/// real token usage, which settles the reservation. A no-op when no limit
/// watches the request.
pub fn record_turn_tokens(total_tokens: u64) {
    let _ = TURN_TOKENS.try_with(|t| t.fetch_add(total_tokens, Ordering::Relaxed));
}

/// The current request's usage slot, for a turn that ends after its handler
/// returned (a streamed answer): run its storing inside [`with_turn_tokens`].
pub fn current_turn_tokens() -> Option<Arc<AtomicU64>> {
    TURN_TOKENS.try_with(Arc::clone).ok()
}

/// Runs `f` with `slot` as the request's usage slot (see [`current_turn_tokens`]).
pub async fn with_turn_tokens<F: Future>(slot: Option<Arc<AtomicU64>>, f: F) -> F::Output {
    match slot {
        Some(slot) => TURN_TOKENS.scope(slot, f).await,
        None => f.await,
    }
}

/// Requests whose turns use tokens: they reserve before and settle after.
/// (The path as requested: a router nested under `/v1` sees it stripped.)
fn is_turn(request: &Request) -> bool {
    let path = request.extensions().get::<OriginalUri>().map_or(request.uri().path(), |uri| uri.path());
    request.method() == Method::POST
        && matches!(path, "/api/ai/chat" | "/api/ai/start-conversation" | "/v1/chat/completions" | "/v1/responses")
}

/// Settles a reservation even when the request is abandoned mid-way (client
/// gone, timeout): whatever was recorded by then counts.
struct SettleOnDrop {
    limiter: RateLimiter,
    user: Uuid,
    reserved: i64,
    used: Arc<AtomicU64>,
}

impl Drop for SettleOnDrop {
    fn drop(&mut self) {
        let used = i64::try_from(self.used.load(Ordering::Relaxed)).unwrap_or(i64::MAX);
        self.limiter.settle(self.user, self.reserved, used);
    }
}

/// Middleware: admits or refuses by the caller's limits, reports them in
/// headers, and settles token reservations. Runs after authentication.
pub async fn middleware(
    State((limiter, metrics)): State<(Option<RateLimiter>, Arc<Metrics>)>,
    request: Request,
    next: Next,
) -> Response {
    let (Some(limiter), Some(&ActingUser(user))) = (limiter, request.extensions().get::<ActingUser>()) else {
        return next.run(request).await;
    };
    let turn = is_turn(&request);
    let estimate = turn.then(|| {
        let bytes = request.extensions().get::<crate::auth::BodySize>().map_or(0, |b| b.0);
        i64::try_from(bytes).unwrap_or(i64::MAX) / BYTES_PER_TOKEN + ANSWER_TOKENS_ESTIMATE
    });
    let decision = match limiter.check(user, estimate).await {
        Ok(d) => d,
        Err(e) => return e.into_response(),
    };
    match decision {
        Decision::Refused { retry_after, headers, message, over_requests } => {
            metrics.rejected(if over_requests { "rate_limited_requests" } else { "rate_limited_tokens" });
            ApiError::RateLimited { message, retry_after, headers }.into_response()
        }
        Decision::Admitted { reserved, headers } => {
            let used = Arc::new(AtomicU64::new(0));
            let settlement = SettleOnDrop { limiter, user, reserved, used: used.clone() };
            let mut response =
                if turn { TURN_TOKENS.scope(used, next.run(request)).await } else { next.run(request).await };
            headers.apply(response.headers_mut());
            // A streamed turn stores (and reports its usage) while its body is sent.
            crate::body_end::hold(response, settlement)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_openai_headers() {
        assert_eq!(duration_text(Duration::ZERO), "0s");
        assert_eq!(duration_text(Duration::from_millis(850)), "850ms");
        assert_eq!(duration_text(Duration::from_millis(12_500)), "12.5s");
        assert_eq!(duration_text(Duration::from_secs(1)), "1s");
        assert_eq!(duration_text(Duration::from_secs(90)), "1m30s");
    }
}

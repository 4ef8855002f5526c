//! `Idempotency-Key` on `POST /api/ai/chat`, `POST /api/ai/start-conversation`
//! and `POST /v1/responses`.
//!
//! - The key is scoped to the caller: the acting user, and how they
//!   authenticated (`api-key:<client_user_id>` or `bearer:<sub>`).
//! - It is claimed in PostgreSQL before the handler runs, so it holds across
//!   replicas. The turn's write joins a transaction ([`WriteUnit`]) in which
//!   this layer then records the response: both commit together, so a key is
//!   either completed with its turn stored, or not completed and its turn not
//!   stored.
//! - A repeat with the same body gets the stored response (same status and
//!   body, `Idempotent-Replayed: true`); with a different body,
//!   `422 idempotency_key_reused`; while the first is still running,
//!   `409 request_in_progress` with `Retry-After` (we do not hold a second
//!   connection and request open waiting for the first).
//! - A streamed answer is recorded as it is sent. Its turn's write joins the
//!   same transaction, and its final event (`done`, `response.completed`) is
//!   held back until the recording is stored and committed with the turn
//!   ([`stream`]); a repeat replays its events. If that commit fails, the
//!   client gets an `error` event instead, nothing is stored and the key is
//!   freed. A stream longer than the recording limit stores its turn but
//!   frees its key (nothing to replay).
//! - Only successful (2xx) responses are stored. A failed request releases its
//!   key, so the client can retry with the same key.
//! - Keys expire after `IDEMPOTENCY_TTL_SECS`; [`crate::sweep`] deletes them.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{OriginalUri, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use colloquy_contract::headers::{IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::auth::{ActingUser, Caller};
use crate::db::idempotency::{self, Claim, Existing, KeyRef, StoredResponse};
use crate::db::turn_write::{self, WriteUnit};
use crate::error::ApiError;
use crate::metrics::{Metrics, idempotency_outcome as outcome};
use crate::routes::sse::{self, EVENT_STREAM};

mod stream;

/// Longest accepted key.
pub const MAX_KEY_LEN: usize = 255;
/// A claim outlives the longest a request may run by this much before a
/// repeat may take it over (its request is then certainly gone).
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// The idempotency layer's settings and handles.
pub struct Idempotency {
    pub pool: PgPool,
    pub ttl: Duration,
    /// How long a claim is held before a repeat may take it over.
    pub lease: Duration,
    pub max_body_bytes: usize,
    pub metrics: Arc<Metrics>,
}

impl Idempotency {
    pub fn new(
        pool: PgPool,
        ttl: Duration,
        request_timeout: Duration,
        max_body_bytes: usize,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self { pool, ttl, lease: request_timeout + LEASE_MARGIN, max_body_bytes, metrics }
    }
}

/// A valid key: 1 to 255 printable ASCII characters.
fn parse_key(raw: &HeaderValue) -> Result<String, ApiError> {
    let key = raw.to_str().unwrap_or_default();
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(ApiError::bad_request(
            "invalid_idempotency_key",
            format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} printable ASCII characters"),
        ));
    }
    Ok(key.to_owned())
}

/// The identity of a request: method, route and body (`json`, the body
/// parsed, is compared by value, so key order and whitespace do not matter;
/// a body that is not JSON by its bytes).
pub fn request_hash(method: &str, path: &str, body: &[u8], json: Option<&serde_json::Value>) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(method.as_bytes());
    hasher.update([0]);
    hasher.update(path.as_bytes());
    hasher.update([0]);
    match json {
        Some(value) => canonical_json(value, &mut hasher),
        None => hasher.update(body),
    }
    hasher.finalize().to_vec()
}

/// Feeds `value` to the hasher with object keys sorted (whatever map order
/// serde_json was built with).
fn canonical_json(value: &serde_json::Value, hasher: &mut Sha256) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            hasher.update(b"{");
            for (k, v) in entries {
                hasher.update(serde_json::to_string(k).unwrap_or_default().as_bytes());
                hasher.update(b":");
                canonical_json(v, hasher);
                hasher.update(b",");
            }
            hasher.update(b"}");
        }
        Value::Array(items) => {
            hasher.update(b"[");
            for v in items {
                canonical_json(v, hasher);
                hasher.update(b",");
            }
            hasher.update(b"]");
        }
        other => hasher.update(other.to_string().as_bytes()),
    }
}

/// Whether the caller asked for a streamed (SSE) answer.
fn wants_stream(request: &Request, json: Option<&serde_json::Value>) -> bool {
    sse::accepts_event_stream(request.headers())
        || json.and_then(|v| v.get("stream")).and_then(serde_json::Value::as_bool) == Some(true)
}

/// Releases a claim unless its request completed it, even when the request
/// is abandoned mid-way (client gone, timeout).
struct ClaimGuard {
    pool: PgPool,
    principal: String,
    key: String,
    claim: Uuid,
    armed: bool,
}

impl ClaimGuard {
    /// The request completed the key: nothing to release.
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (pool, principal, key, claim) = (self.pool.clone(), self.principal.clone(), self.key.clone(), self.claim);
        tokio::spawn(async move {
            let key = KeyRef { principal: &principal, key: &key };
            if let Err(e) = idempotency::release(&pool, &key, claim).await {
                tracing::warn!(error = %e, "could not release an idempotency key (it frees itself when its lease ends)");
            }
        });
    }
}

fn replay(existing: Existing) -> Response {
    let status = existing.response_status.and_then(|s| StatusCode::from_u16(u16::try_from(s).ok()?).ok());
    let mut response = Response::new(Body::from(existing.response_body.unwrap_or_default()));
    *response.status_mut() = status.unwrap_or(StatusCode::OK);
    if let Some(ct) = existing.response_content_type.and_then(|ct| HeaderValue::try_from(ct).ok()) {
        response.headers_mut().insert(CONTENT_TYPE, ct);
    }
    response.headers_mut().insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    response
}

fn is_event_stream(response: &Response) -> bool {
    response.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.starts_with(EVENT_STREAM))
}

/// Why recording a response failed.
enum FinishError {
    Db(sqlx::Error),
    /// The claim was taken over (its lease ran out): this request's turn is
    /// rolled back and the other one's stands.
    Lost,
}

impl From<sqlx::Error> for FinishError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(e)
    }
}

/// Records `response` for the claimed key, in the turn's open transaction
/// when the request wrote one, and commits.
async fn finish(
    pool: &PgPool,
    unit: &WriteUnit,
    key: &KeyRef<'_>,
    claim: Uuid,
    response: &StoredResponse<'_>,
) -> Result<(), FinishError> {
    let Some(mut tx) = unit.take().await else {
        let mut conn = pool.acquire().await?;
        return if idempotency::complete(&mut conn, key, claim, response).await? {
            Ok(())
        } else {
            Err(FinishError::Lost)
        };
    };
    if !idempotency::complete(tx.conn(), key, claim, response).await? {
        return Err(FinishError::Lost);
    }
    match tx.commit().await {
        Ok(()) => Ok(()),
        // The connection broke during COMMIT: ask a fresh one what happened.
        Err(e) => match idempotency::completed_by(pool, key, claim).await {
            Ok(true) => Ok(()),
            _ => Err(FinishError::Db(e)),
        },
    }
}

/// A claimed key and the request's writes, until its response is recorded
/// with them, or they are rolled back and the key freed (dropped).
struct Claimed {
    idem: Arc<Idempotency>,
    unit: Arc<WriteUnit>,
    guard: ClaimGuard,
}

impl Claimed {
    /// Records `response` for the key with the request's writes, or (on
    /// error) rolls them back and frees the key.
    async fn record(mut self, response: &StoredResponse<'_>) -> Result<(), ApiError> {
        let key = KeyRef { principal: &self.guard.principal, key: &self.guard.key };
        match finish(&self.idem.pool, &self.unit, &key, self.guard.claim, response).await {
            Ok(()) => {
                self.guard.disarm();
                self.idem.metrics.idempotency(outcome::STORED);
                Ok(())
            }
            Err(FinishError::Lost) => Err(ApiError::RequestInProgress { retry_after: Duration::from_secs(1) }),
            Err(FinishError::Db(e)) => Err(e.into()),
        }
    }

    /// Commits the request's writes without a record (a stream too long to
    /// replay) and frees the key.
    async fn commit_unrecorded(self) -> Result<(), ApiError> {
        if let Some(tx) = self.unit.take().await {
            tx.commit().await?;
        }
        self.idem.metrics.idempotency(outcome::TOO_LARGE);
        Ok(())
    }

    /// Rolls back anything written and frees the key for a retry.
    async fn abandon(self) {
        drop(self.unit.take().await);
    }
}

/// Middleware on the two turn routes (inside authentication).
pub async fn middleware(State(idem): State<Arc<Idempotency>>, request: Request, next: Next) -> Response {
    let Some(raw) = request.headers().get(IDEMPOTENCY_KEY) else {
        return next.run(request).await;
    };
    let key = match parse_key(raw) {
        Ok(key) => key,
        Err(e) => return e.into_response(),
    };
    let user = request.extensions().get::<ActingUser>().map(|u| u.0.to_string()).unwrap_or_default();
    let principal = match request.extensions().get::<Caller>() {
        Some(Caller::User(id)) => format!("bearer:{id}"),
        _ => format!("api-key:{user}"),
    };
    let (parts, body) = request.into_parts();
    let bytes = match axum::body::to_bytes(body, idem.max_body_bytes).await {
        Ok(bytes) => bytes,
        Err(_) => return ApiError::PayloadTooLarge { limit: idem.max_body_bytes }.into_response(),
    };
    let request = Request::from_parts(parts, Body::from(bytes.clone()));
    let json = serde_json::from_slice::<serde_json::Value>(&bytes).ok();
    let stream = wants_stream(&request, json.as_ref());
    // A streamed and a whole answer are different responses to replay. The
    // path as requested (a router nested under `/v1` sees it stripped).
    let path = request.extensions().get::<OriginalUri>().map_or(request.uri().path(), |uri| uri.path());
    let route = if stream { format!("{path} (stream)") } else { path.to_owned() };
    let hash = request_hash(request.method().as_str(), &route, &bytes, json.as_ref());
    let key_ref = KeyRef { principal: &principal, key: &key };
    let claim = Uuid::new_v4();
    match idempotency::claim(&idem.pool, &key_ref, &hash, claim, idem.lease, idem.ttl).await {
        Err(e) => return ApiError::from(e).into_response(),
        Ok(Claim::Taken(existing)) if existing.request_hash != hash => {
            idem.metrics.idempotency(outcome::REUSED);
            return ApiError::IdempotencyKeyReused.into_response();
        }
        Ok(Claim::Taken(existing)) if existing.state == "completed" => {
            idem.metrics.idempotency(outcome::REPLAYED);
            return replay(existing);
        }
        Ok(Claim::Taken(_)) => {
            idem.metrics.idempotency(outcome::IN_PROGRESS);
            return ApiError::RequestInProgress { retry_after: Duration::from_secs(1) }.into_response();
        }
        Ok(Claim::Claimed) => {}
    }
    let guard = ClaimGuard { pool: idem.pool.clone(), principal, key, claim, armed: true };
    let unit = Arc::new(WriteUnit::default());
    let claimed = Claimed { idem, unit: unit.clone(), guard };
    // A streamed answer's turn is written after this returns: its stream
    // captures the unit (`turn_write::current_unit`).
    let response = turn_write::in_unit(Some(unit), next.run(request)).await;
    if !response.status().is_success() {
        claimed.abandon().await;
        return response;
    }
    if is_event_stream(&response) {
        let status = response.status().as_u16();
        let finish: stream::Finish = Box::new(move |recorded| {
            Box::pin(async move {
                let Some(body) = recorded else { return claimed.commit_unrecorded().await };
                claimed.record(&StoredResponse { status, content_type: Some(EVENT_STREAM), body: &body }).await
            })
        });
        let request_id = crate::request_id::current().unwrap_or_default();
        return stream::hold_final_event(response, request_id, finish);
    }
    let (parts, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(e) => return ApiError::Internal(format!("reading the response to store: {e}")).into_response(),
    };
    let stored = StoredResponse {
        status: parts.status.as_u16(),
        content_type: parts.headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()),
        body: &body,
    };
    match claimed.record(&stored).await {
        Ok(()) => Response::from_parts(parts, Body::from(body)),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(path: &str, body: &[u8]) -> Vec<u8> {
        request_hash("POST", path, body, serde_json::from_slice(body).ok().as_ref())
    }

    #[test]
    fn the_same_json_hashes_the_same() {
        let a = hash("/api/ai/chat", br#"{"a": 1, "b": [1, {"c": "x", "d": null}]}"#);
        let b = hash("/api/ai/chat", br#"{"b":[1,{"d":null,"c":"x"}],"a":1}"#);
        assert_eq!(a, b);
        assert_ne!(a, hash("/api/ai/start-conversation", br#"{"a": 1, "b": [1, {"c": "x", "d": null}]}"#));
        assert_ne!(a, hash("/api/ai/chat", br#"{"a": 2, "b": [1, {"c": "x", "d": null}]}"#));
        assert_ne!(hash("/x", b"not json"), hash("/x", b"not json!"));
    }

    #[test]
    fn keys_are_printable_ascii() {
        assert!(parse_key(&HeaderValue::from_static("a1b2-c3")).is_ok());
        assert!(parse_key(&HeaderValue::from_static("")).is_err());
        assert!(parse_key(&HeaderValue::from_str(&"k".repeat(256)).unwrap()).is_err());
        assert!(parse_key(&HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap()).is_err());
    }
}

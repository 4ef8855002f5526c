//! The HTTP surface: the public API router and the metrics router.

mod chat;
mod conversations;
mod cursor;
pub mod docs;
mod extract;
mod health;
mod openapi_limits;
pub(crate) mod sse;
mod v1;

use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, FromRef, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{BoxError, Router, middleware};
use colloquy_contract::{headers, paths};
use sqlx::PgPool;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::auth::{self, AuthState, Authenticator};
use crate::body_end;
use crate::chat::ChatService;
use crate::config::{AllowedOrigins, HttpConfig};
use crate::error::ApiError;
use crate::idempotency::{self, Idempotency};
use crate::limits::{self, RateLimiter};
use crate::metrics::Metrics;
use crate::shutdown::{self, Lifecycle};
use crate::{request_id, telemetry};

pub use chat::{ChatRequest, ProxyChatResponse, SimpleChatResponse};

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub chat: ChatService,
    pub auth: Arc<Authenticator>,
    pub pool: PgPool,
    pub metrics: Arc<Metrics>,
    pub http: Arc<HttpConfig>,
    /// Per-user rate limits; `None` when off.
    pub limiter: Option<RateLimiter>,
    pub idempotency: Arc<Idempotency>,
    pub lifecycle: Arc<Lifecycle>,
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

/// CORS. Never with credentials: `ALLOWED_ORIGINS=*` must not let any site
/// send cookies, and callers authenticate with headers, not cookies.
fn cors(origins: &AllowedOrigins) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static(headers::API_KEY),
            HeaderName::from_static(headers::REQUEST_ID),
            HeaderName::from_static(headers::IDEMPOTENCY_KEY),
            HeaderName::from_static(headers::CLIENT_USER_ID),
            HeaderName::from_static("traceparent"),
        ])
        .expose_headers([
            HeaderName::from_static(headers::REQUEST_ID),
            HeaderName::from_static(headers::IDEMPOTENT_REPLAYED),
            header::RETRY_AFTER,
            HeaderName::from_static("x-ratelimit-limit-requests"),
            HeaderName::from_static("x-ratelimit-remaining-requests"),
            HeaderName::from_static("x-ratelimit-reset-requests"),
            HeaderName::from_static("x-ratelimit-limit-tokens"),
            HeaderName::from_static("x-ratelimit-remaining-tokens"),
            HeaderName::from_static("x-ratelimit-reset-tokens"),
        ])
        .allow_credentials(false);
    match origins {
        AllowedOrigins::Any => layer.allow_origin(Any),
        AllowedOrigins::List(list) => {
            layer.allow_origin(AllowOrigin::list(list.iter().filter_map(|o| HeaderValue::from_str(o).ok())))
        }
    }
}

/// The in-flight limit: `503 overloaded` at once when `MAX_IN_FLIGHT`
/// requests are running, rather than a queue. A request counts until its
/// response body is sent, so a streamed answer counts while it streams
/// (tower's concurrency limit lets go at the response head).
async fn in_flight_limit(
    State((slots, metrics)): State<(Arc<tokio::sync::Semaphore>, Arc<Metrics>)>,
    request: Request,
    next: Next,
) -> Response {
    let Ok(permit) = slots.try_acquire_owned() else {
        metrics.rejected("overloaded");
        return ApiError::Overloaded.into_response();
    };
    body_end::hold(next.run(request).await, permit)
}

/// What the request timeout's error becomes.
async fn admission_error(metrics: Arc<Metrics>, timeout: Duration, err: BoxError) -> Response {
    if err.is::<tower::timeout::error::Elapsed>() {
        metrics.rejected("request_timeout");
        ApiError::RequestTimeout(timeout).into_response()
    } else {
        ApiError::Internal(format!("admission: {err}")).into_response()
    }
}

/// The public API (`PORT`). Outside in: request id, access log and metrics,
/// `Connection: close` while draining, CORS, body limit; then, on the `/api`
/// and `/v1` routes (not on probes and docs, so a busy pod still answers its
/// probes): the in-flight limit (`503 overloaded` at once rather than a
/// queue; one budget for both surfaces), the request timeout (until the
/// response head, so a stream is not cut once it started), authentication,
/// per-user rate limits, and on the turn routes `Idempotency-Key`. `/v1`
/// authenticates its own way ([`v1::auth`]) and answers every error, these
/// layers' included, in OpenAI's shape.
pub fn api_router(state: AppState) -> Router {
    let http = state.http.clone();
    let metrics = state.metrics.clone();
    let auth_state = AuthState { auth: state.auth.clone(), max_body_bytes: http.max_body_bytes };
    let timeout = http.request_timeout;
    let error_metrics = metrics.clone();
    let request_timeout = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |err: BoxError| admission_error(error_metrics.clone(), timeout, err)))
        .timeout(timeout);
    let in_flight = (Arc::new(tokio::sync::Semaphore::new(http.max_in_flight)), metrics.clone());
    let rate_limits = (state.limiter.clone(), metrics.clone());

    let turns = Router::new()
        .route("/api/ai/chat", post(chat::chat))
        .route("/api/ai/start-conversation", post(chat::start_conversation))
        .route_layer(middleware::from_fn_with_state(state.idempotency.clone(), idempotency::middleware));
    // Routes added to `api` must come before its `route_layer`s, which wrap
    // only the routes present when they are called.
    let api = Router::new()
        .merge(turns)
        .route("/api/conversations", get(conversations::list_conversations))
        .route(
            "/api/conversations/{conversation_id}",
            get(conversations::get_conversation)
                .patch(conversations::update_conversation)
                .delete(conversations::delete_conversation),
        )
        .route("/api/conversations/{conversation_id}/messages", get(conversations::list_messages))
        .route_layer(middleware::from_fn_with_state(rate_limits.clone(), limits::middleware))
        .route_layer(middleware::from_fn_with_state(auth_state.clone(), auth::middleware))
        .route_layer(request_timeout.clone())
        .route_layer(middleware::from_fn_with_state(in_flight.clone(), in_flight_limit));
    let openai = v1::router(state.idempotency.clone(), |routes| {
        routes
            .route_layer(middleware::from_fn_with_state(rate_limits, limits::middleware))
            .route_layer(middleware::from_fn_with_state(auth_state, v1::auth::middleware))
            .route_layer(request_timeout)
            .route_layer(middleware::from_fn_with_state(in_flight, in_flight_limit))
    });
    let probes = Router::new()
        .route(paths::HEALTH, get(health::health))
        .route(paths::LIVEZ, get(health::livez))
        .route(paths::READYZ, get(health::readyz));

    Router::new()
        .merge(api)
        .nest("/v1", openai)
        .merge(probes)
        .merge(docs::router(http.api_docs))
        .fallback(|| async { ApiError::NotFound("no such route".to_owned()) })
        .with_state(state.clone())
        .layer(DefaultBodyLimit::max(http.max_body_bytes))
        .layer(axum::Extension(extract::MaxBodyBytes(http.max_body_bytes)))
        .layer(cors(&http.allowed_origins))
        .layer(middleware::from_fn_with_state(state.lifecycle.clone(), shutdown::close_connections_when_draining))
        .layer(middleware::from_fn_with_state(metrics, telemetry::observe_request))
        .layer(middleware::from_fn(request_id::middleware))
}

/// `/metrics` (`METRICS_PORT`), apart from the public port.
pub fn metrics_router(metrics: Arc<Metrics>, pool: PgPool) -> Router {
    Router::new()
        .route(
            paths::METRICS,
            get(|State((metrics, pool)): State<(Arc<Metrics>, PgPool)>| async move {
                ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], metrics.render(&pool))
            }),
        )
        .with_state((metrics, pool))
}

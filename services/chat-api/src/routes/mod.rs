//! The HTTP surface: the public API router and the metrics router.

mod chat;
mod conversations;
pub mod docs;
mod extract;
mod health;
mod sse;
mod v1;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRef, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::routing::{get, post};
use axum::{Router, middleware};
use colloquy_contract::{headers, paths};
use sqlx::PgPool;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

use crate::auth::Authenticator;
use crate::chat::ChatService;
use crate::config::AllowedOrigins;
use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::{request_id, telemetry};

pub use chat::{ChatRequest, ProxyChatResponse, SimpleChatResponse};

/// Largest accepted request body.
pub const BODY_LIMIT_BYTES: usize = 1024 * 1024;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    pub chat: ChatService,
    pub auth: Arc<Authenticator>,
    pub pool: PgPool,
    pub metrics: Arc<Metrics>,
}

impl FromRef<AppState> for Arc<Authenticator> {
    fn from_ref(state: &AppState) -> Self {
        state.auth.clone()
    }
}

fn cors(origins: &AllowedOrigins) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static(headers::API_KEY),
            HeaderName::from_static(headers::REQUEST_ID),
            HeaderName::from_static(headers::CLIENT_USER_ID),
            HeaderName::from_static("traceparent"),
        ])
        .expose_headers([HeaderName::from_static(headers::REQUEST_ID)]);
    match origins {
        AllowedOrigins::Any => layer.allow_origin(Any),
        AllowedOrigins::List(list) => {
            layer.allow_origin(AllowOrigin::list(list.iter().filter_map(|o| HeaderValue::from_str(o).ok())))
        }
    }
}

/// The public API (`PORT`).
pub fn api_router(state: AppState, origins: &AllowedOrigins) -> Router {
    let metrics = state.metrics.clone();
    Router::new()
        .route("/api/ai/chat", post(chat::chat))
        .route("/api/ai/start-conversation", post(chat::start_conversation))
        .route("/api/conversations/{conversation_id}", get(conversations::get_conversation))
        .route(paths::HEALTH, get(health::health))
        .route(paths::LIVEZ, get(health::livez))
        .route(paths::READYZ, get(health::readyz))
        .nest("/v1", v1::router())
        .merge(docs::router())
        .fallback(|| async { ApiError::NotFound("no such route".to_owned()) })
        .with_state(state)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(cors(origins))
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

//! The OpenAI-compatible surface under `/v1`: the Models, Chat Completions,
//! Conversations and Responses APIs, text only, so an unmodified OpenAI SDK
//! can talk to Colloquy. The same providers, metrics and turn machinery as
//! `/api` serve it; conversations and responses live in the same tables.
//!
//! | module | what it holds |
//! | --- | --- |
//! | `auth` | who calls: the internal key as the Bearer token (plus `X-Client-User-Id`), or a JWT; the middleware that tells the limits |
//! | `error` | OpenAI's error shape, and the layer that puts every `/v1` error in it |
//! | `items` | message items (input and output), shared by conversations and responses |
//! | `models` | `GET /v1/models`, `GET /v1/models/{model}` |
//! | `chat_completions` | `POST /v1/chat/completions`, whole or streamed; stateless |
//! | `conversations` | the Conversations API over our tables |
//! | `responses` | `POST /v1/responses` (a stored chat turn), `GET /v1/responses/{id}` |
//! | `responses_stream` | the Responses API's streamed events |

pub mod auth;
pub mod chat_completions;
pub mod conversations;
mod error;
pub mod items;
pub mod models;
pub mod responses;
pub(crate) mod responses_stream;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::{Router, middleware};

use super::AppState;
use crate::idempotency::Idempotency;

/// The `/v1` routes (nested under `/v1`), every error in OpenAI's shape.
/// `admission` adds the layers every route goes through (in-flight limit,
/// timeout, authentication, rate limits) with `route_layer`, so that they sit
/// inside the error-shape layer and an unknown route skips them. `POST
/// /v1/responses` honours `Idempotency-Key` like the `/api` turn routes.
pub fn router(
    idempotency: Arc<Idempotency>,
    admission: impl FnOnce(Router<AppState>) -> Router<AppState>,
) -> Router<AppState> {
    let turns = Router::new()
        .route("/responses", post(responses::create))
        .route_layer(middleware::from_fn_with_state(idempotency, crate::idempotency::middleware));
    let routes = Router::new()
        .merge(turns)
        .route("/models", get(models::list))
        .route("/models/{model}", get(models::retrieve))
        .route("/chat/completions", post(chat_completions::create))
        .route("/conversations", post(conversations::create))
        .route(
            "/conversations/{conversation_id}",
            get(conversations::retrieve).post(conversations::update).delete(conversations::delete),
        )
        .route(
            "/conversations/{conversation_id}/items",
            get(conversations::list_items).post(conversations::create_items),
        )
        .route("/responses/{response_id}", get(responses::retrieve));
    admission(routes)
        .fallback(|| async { crate::error::ApiError::NotFound("no such route".to_owned()) })
        .layer(middleware::from_fn(error::openai_errors))
}

/// The time of a response as OpenAI shows it: Unix seconds.
fn unix(at: chrono::DateTime<chrono::Utc>) -> i64 {
    at.timestamp()
}

/// Unix seconds now, for objects that are never stored (a stateless
/// completion, a response before it is stored). Stored objects show their
/// database time.
fn unix_now() -> i64 {
    chrono::Utc::now().timestamp()
}

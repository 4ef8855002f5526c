//! Health endpoints: `/health` (seed), `/livez`, `/readyz`.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{SecondsFormat, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::{db, provider_probe};

#[derive(Debug, Serialize, ToSchema)]
pub struct HealthBody {
    /// `healthy`.
    pub status: &'static str,
    /// RFC 3339.
    pub timestamp: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyBody {
    /// `ready`, `not_ready` (PostgreSQL unreachable) or `shutting_down` (after SIGTERM).
    pub status: &'static str,
    /// `ok`, `unreachable`, or `not_checked` while shutting down.
    pub database: &'static str,
    /// The provider probe's last outcome (`state`, `message`, `checkedAt`);
    /// informative only: it never makes the pod unready.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub provider: Option<serde_json::Value>,
}

/// The seed's health check: the process is up.
#[utoipa::path(get, path = "/health", tag = "health", responses((status = 200, body = HealthBody)))]
pub async fn health() -> Json<HealthBody> {
    Json(HealthBody { status: "healthy", timestamp: Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true) })
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/livez", tag = "health", responses((status = 200, body = HealthBody)))]
pub async fn livez() -> Json<HealthBody> {
    health().await
}

/// Readiness: PostgreSQL answers and the process is not shutting down.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses((status = 200, body = ReadyBody), (status = 503, body = ReadyBody))
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<ReadyBody>) {
    if state.lifecycle.draining() {
        let provider = provider_probe::readiness_detail();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ReadyBody { status: "shutting_down", database: "not_checked", provider }),
        );
    }
    if db::ping(&state.pool).await {
        (
            StatusCode::OK,
            Json(ReadyBody { status: "ready", database: "ok", provider: provider_probe::readiness_detail() }),
        )
    } else {
        let provider = provider_probe::readiness_detail();
        (StatusCode::SERVICE_UNAVAILABLE, Json(ReadyBody { status: "not_ready", database: "unreachable", provider }))
    }
}

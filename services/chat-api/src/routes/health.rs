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
    /// The circuit breaker of each provider endpoint (none when the breaker
    /// is off). An open breaker does not make the pod unready: the upstream
    /// is sick, not the pod.
    pub providers: Vec<ProviderHealth>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ProviderHealth {
    /// `primary` or `fallback`.
    pub endpoint: &'static str,
    /// The `LLM_PROVIDER` name.
    pub provider: &'static str,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// When open: seconds until a probe call is let through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
}

fn providers(state: &AppState) -> Vec<ProviderHealth> {
    state
        .chat
        .provider
        .upstreams()
        .into_iter()
        .map(|u| ProviderHealth {
            endpoint: u.endpoint,
            provider: u.provider,
            breaker: u.breaker.label(),
            retry_after_secs: u.retry_after.map(|d| d.as_secs_f64().ceil() as u64),
        })
        .collect()
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

/// Readiness: PostgreSQL answers and the process is not shutting down. The
/// providers' circuit breakers (and the provider probe) are details: an open
/// breaker leaves the pod ready.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "health",
    responses((status = 200, body = ReadyBody), (status = 503, body = ReadyBody))
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<ReadyBody>) {
    let provider = provider_probe::readiness_detail();
    let providers = providers(&state);
    if state.lifecycle.draining() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ReadyBody { status: "shutting_down", database: "not_checked", provider, providers }),
        );
    }
    if db::ping(&state.pool).await {
        (StatusCode::OK, Json(ReadyBody { status: "ready", database: "ok", provider, providers }))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ReadyBody { status: "not_ready", database: "unreachable", provider, providers }),
        )
    }
}

//! Logs: JSON or text lines (`LOG_FORMAT`), filtered by `RUST_LOG`, one access
//! line per request with its id, route, status and latency.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::request_id;

const DEFAULT_FILTER: &str = "info,sqlx=warn";

/// Installs the global subscriber (once; later calls are ignored).
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Middleware: one log line per request.
pub async fn access_log(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let path = request.uri().path().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let id = request_id::current().unwrap_or_default();
    let route = route.as_deref().unwrap_or(&path);
    if status >= 500 {
        tracing::warn!(request_id = %id, %method, route, status, latency_ms, "request");
    } else {
        tracing::info!(request_id = %id, %method, route, status, latency_ms, "request");
    }
    response
}

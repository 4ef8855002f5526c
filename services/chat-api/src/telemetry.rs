//! Logs and traces of the chat API, set up by `colloquy-telemetry` (shared
//! with the controller), plus the per-request server span and access log.
//! Span attributes never include message text, keys or tokens.

use std::time::Instant;

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

pub use colloquy_telemetry::{SamplerChoice, Telemetry, TraceConfig, otel_layer, traceparent_for, tracer_provider};

use crate::auth::{ActingUser, Caller};
use crate::config::ConfigError;
use crate::config::cli::TelemetryArgs;
use crate::metrics::Metrics;
use crate::request_id;
use colloquy_contract::paths;

/// The `route` metric label of requests no route matched.
const UNMATCHED_ROUTE: &str = "unmatched";
/// Routes kubelets and load balancers poll: logged at DEBUG, not INFO.
const PROBE_ROUTES: &[&str] = &[paths::LIVEZ, paths::READYZ, paths::HEALTH];

/// The chat API as a telemetry service.
pub const SERVICE: colloquy_telemetry::Service =
    colloquy_telemetry::Service { name: "colloquy-chat-api", default_filter: "info,sqlx=warn" };

/// Installs logs (and traces when `OTEL_EXPORTER_OTLP_ENDPOINT` is set), from the parsed options.
pub fn init(args: &TelemetryArgs) -> Result<Telemetry, ConfigError> {
    colloquy_telemetry::init(&SERVICE, args.log_format, &|name| args.lookup(name))
        .map_err(|e| ConfigError::invalid(e.var, e.message))
}

/// Middleware: the server span of each request (child of the caller's
/// `traceparent`), its metrics, and one log line when it ends.
pub async fn observe_request(State(metrics): State<Arc<Metrics>>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let matched = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    // Metrics get the route template only (bounded labels); span and log may show the raw path.
    let metric_route = matched.clone().unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
    let route = matched.unwrap_or_else(|| request.uri().path().to_owned());
    let id = request_id::current().unwrap_or_default();
    let span = tracing::info_span!(
        "http.server.request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        request_id = %id,
    );
    colloquy_telemetry::continue_trace(&span, request.headers());
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    metrics.observe_http(&metric_route, method.as_str(), response.status().as_str(), elapsed);
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    let latency_ms = elapsed.as_secs_f64() * 1000.0;
    // Who called, as the authentication layer found (never a credential).
    let caller = match response.extensions().get::<Caller>() {
        Some(Caller::Service) => "api_key",
        Some(Caller::User(_)) => "bearer",
        None => "none",
    };
    let user = response.extensions().get::<ActingUser>().map(|u| u.0.to_string()).unwrap_or_default();
    if status >= 500 {
        tracing::warn!(request_id = %id, %method, route, status, latency_ms, caller, user, "request");
    } else if PROBE_ROUTES.contains(&metric_route.as_str()) {
        // Kubelets probe every few seconds per pod: at INFO they would drown the turns.
        tracing::debug!(request_id = %id, %method, route, status, latency_ms, "probe");
    } else {
        tracing::info!(request_id = %id, %method, route, status, latency_ms, caller, user, "request");
    }
    response
}

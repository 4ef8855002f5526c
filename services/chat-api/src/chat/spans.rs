//! Span names and attribute values for a chat turn (OpenTelemetry semantic
//! conventions for GenAI and database clients), and the timing of database
//! operations. Never message text.

use std::time::Instant;

use tracing::Instrument;

use crate::metrics::Metrics;

/// Database operations of a turn; also the `operation` metric label.
pub const CLAIM_CONVERSATION: &str = "claim_conversation";
pub const APPEND_TURN: &str = "append_turn";
pub const CREATE_CONVERSATION: &str = "create_conversation";

/// `gen_ai.provider.name` for our provider names (semantic-convention
/// values); the same value labels the GenAI metrics.
pub fn gen_ai_provider(provider: &str) -> &'static str {
    match provider {
        colloquy_contract::provider::AZURE_OPENAI => "azure.ai.openai",
        colloquy_contract::provider::VERTEX_AI => "gcp.vertex_ai",
        colloquy_contract::provider::OPENAI => "openai",
        _ => "colloquy.mock",
    }
}

/// A database client span for `operation`.
pub fn db(operation: &'static str) -> tracing::Span {
    tracing::info_span!(
        "db",
        otel.name = %format!("{operation} postgresql"),
        otel.kind = "client",
        otel.status_code = tracing::field::Empty,
        db.system.name = "postgresql",
        db.operation.name = operation,
    )
}

/// Runs one database operation inside its client span, timing it.
pub async fn observed<T>(
    metrics: &Metrics,
    operation: &'static str,
    future: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    let span = db(operation);
    let started = Instant::now();
    let result = future.instrument(span.clone()).await;
    if result.is_err() {
        span.record("otel.status_code", "ERROR");
    }
    metrics.observe_db(operation, result.is_ok(), started.elapsed());
    result
}

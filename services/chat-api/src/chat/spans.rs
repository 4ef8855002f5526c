//! Span names and attribute values for a chat turn (OpenTelemetry semantic
//! conventions for GenAI and database clients). Never message text.

/// Database operations of a turn; also the `operation` metric label.
pub const LOAD_CONTEXT: &str = "load_turn_context";
pub const APPEND_TURN: &str = "append_turn";
pub const CREATE_CONVERSATION: &str = "create_conversation";

/// `gen_ai.system` for our provider names (semantic-convention values).
pub fn gen_ai_system(provider: &str) -> &'static str {
    match provider {
        colloquy_contract::provider::AZURE_OPENAI => "az.ai.openai",
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

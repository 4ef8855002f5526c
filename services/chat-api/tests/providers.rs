//! The LLM providers (`chat_api::llm`) against a fake upstream speaking each
//! provider's wire format: exact requests, answer parsing, error mapping,
//! timeouts and streaming.

mod support;

#[path = "providers/azure.rs"]
mod azure;
#[path = "providers/connections.rs"]
mod connections_set;
#[path = "providers/mock.rs"]
mod mock;
#[path = "providers/openai.rs"]
mod openai;
#[path = "providers/resilience.rs"]
mod resilience;
#[path = "providers/vertex.rs"]
mod vertex;

use std::time::Duration;

use chat_api::llm::{ChatMessage, ChatProvider, CompletionRequest, ProviderError, Role, StreamEvent, Usage};
use futures::StreamExt;

/// A short timeout for the timeout tests (the fake waits far longer).
pub const SHORT_TIMEOUT: Duration = Duration::from_millis(200);
/// The delay the fake applies in timeout tests.
pub const LONG_DELAY: Duration = Duration::from_secs(2);
/// A generous timeout for everything else.
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub fn http() -> reqwest::Client {
    reqwest::Client::new()
}

/// The model-call clients with the default settings (`LLM_HTTP_VERSION=auto`).
pub fn connections() -> chat_api::llm::Connections {
    chat_api::llm::Connections::new(Default::default()).unwrap()
}

/// Model-call and other clients, as the service builds them.
pub fn clients() -> chat_api::llm::Clients {
    chat_api::llm::Clients { connections: connections(), http: http() }
}

/// System prompt, two turns of history, then the new user message.
pub fn conversation() -> CompletionRequest {
    CompletionRequest {
        messages: vec![
            ChatMessage::new(Role::System, "You are terse."),
            ChatMessage::new(Role::User, "Hi"),
            ChatMessage::new(Role::Assistant, "Hello."),
            ChatMessage::new(Role::User, "What is 2+2?"),
        ],
        request_id: "req-123".into(),
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
    }
}

/// Collects a provider's stream, returning the concatenated deltas, the final
/// event, and any error (the stream must end right after `Done` or an error).
pub async fn collect_stream(
    provider: &dyn ChatProvider,
    request: &CompletionRequest,
) -> Result<(Vec<String>, StreamEvent), ProviderError> {
    let mut stream = provider.stream(request).await?;
    let mut deltas = Vec::new();
    while let Some(event) = stream.next().await {
        match event? {
            StreamEvent::Delta(text) => deltas.push(text),
            done @ StreamEvent::Done { .. } => {
                assert!(stream.next().await.is_none(), "events after Done");
                return Ok((deltas, done));
            }
        }
    }
    panic!("the stream ended without Done or an error; deltas so far: {deltas:?}");
}

/// Asserts `Done` carries this usage and model.
pub fn assert_done(event: &StreamEvent, usage: Option<Usage>, model: &str, finish_reason: &str) {
    match event {
        StreamEvent::Done { usage: u, model: m, finish_reason: f } => {
            assert_eq!(*u, usage);
            assert_eq!(m, model);
            assert_eq!(f.as_deref(), Some(finish_reason));
        }
        other => panic!("expected Done, got {other:?}"),
    }
}

/// Neither the error's `Display` nor its `Debug` contains `secret`.
pub fn assert_no_secret(err: &ProviderError, secret: &str) {
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(secret), "the error leaks the secret: {shown}");
}

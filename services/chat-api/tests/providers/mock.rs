//! The offline mock provider.

use chat_api::llm::mock::MockProvider;
use chat_api::llm::{ChatMessage, ChatProvider, CompletionRequest, ProviderError, Role, StreamEvent, Usage};

use crate::{collect_stream, conversation};

#[tokio::test]
async fn mock_echoes_the_last_user_message_with_honest_counts() {
    let p = MockProvider::new();
    assert_eq!(p.name(), "mock");
    assert_eq!(p.model(), "colloquy-mock");

    let completion = p.complete(&conversation()).await.unwrap();
    // Prompt tokens: "You are terse." 4 + "Hi" 1 + "Hello." 2 + "What is 2+2?" 6 = 13.
    let expected = "[mock] You said: \"What is 2+2?\" (context: 4 messages, 13 tokens)";
    assert_eq!(completion.text, expected);
    assert_eq!(completion.model, "colloquy-mock");
    assert_eq!(completion.finish_reason.as_deref(), Some("stop"));
    // Answer tokens: [ mock ] You said : " What is 2 + 2 ? " ( context : 4 messages , 13 tokens ) = 23.
    assert_eq!(completion.usage, Some(Usage { prompt_tokens: 13, completion_tokens: 23, total_tokens: 36 }));

    // Deterministic.
    assert_eq!(p.complete(&conversation()).await.unwrap(), completion);
}

#[tokio::test]
async fn mock_truncates_long_messages_at_a_char_boundary() {
    let long = "é".repeat(300);
    let request = CompletionRequest {
        messages: vec![ChatMessage::new(Role::User, long.clone())],
        request_id: "r".into(),
        traceparent: None,
    };
    let completion = MockProvider::new().complete(&request).await.unwrap();
    let expected = format!("[mock] You said: \"{}…\" (context: 1 messages, 1 tokens)", "é".repeat(200));
    assert_eq!(completion.text, expected);
}

#[tokio::test]
async fn mock_error_trigger_fails_with_502() {
    let mut request = conversation();
    request.messages.push(ChatMessage::new(Role::User, "/mock-error please"));
    let err = MockProvider::new().complete(&request).await.unwrap_err();
    assert!(matches!(err, ProviderError::Upstream { status: 502, .. }), "{err:?}");
    assert!(MockProvider::new().stream(&request).await.is_err());
}

#[tokio::test]
async fn mock_stream_matches_complete() {
    let p = MockProvider::new();
    let completion = p.complete(&conversation()).await.unwrap();
    let (deltas, done) = collect_stream(&p, &conversation()).await.unwrap();
    assert!(deltas.len() > 1, "streams in several deltas: {deltas:?}");
    assert_eq!(deltas.concat(), completion.text);
    assert_eq!(
        done,
        StreamEvent::Done { usage: completion.usage, model: completion.model, finish_reason: completion.finish_reason }
    );
}

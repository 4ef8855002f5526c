//! Vertex AI Gemini `generateContent`, with tokens from a fake metadata server.

use std::time::Duration;

use chat_api::llm::vertex::VertexAi;
use chat_api::llm::{ChatProvider, ProviderError, Usage};
use serde_json::json;

use crate::support::{FakeResponse, FakeUpstream};
use crate::{LONG_DELAY, SHORT_TIMEOUT, TIMEOUT, assert_done, assert_no_secret, clients, collect_stream, conversation};

const TOKEN: &str = "ya29.test";
const MODEL_PATH: &str = "/v1/projects/colloquy-prod/locations/europe-west4/publishers/google/models/gemini-2.0-flash";

struct Fixture {
    vertex: FakeUpstream,
    metadata: FakeUpstream,
}

impl Fixture {
    async fn start() -> Fixture {
        let metadata = FakeUpstream::start().await;
        metadata.set_default(FakeResponse::json(
            200,
            json!({"access_token": TOKEN, "expires_in": 3600, "token_type": "Bearer"}),
        ));
        Fixture { vertex: FakeUpstream::start().await, metadata }
    }

    fn provider(&self, timeout: Duration) -> VertexAi {
        VertexAi::new(
            &clients(),
            self.vertex.url.clone(),
            "colloquy-prod".into(),
            "europe-west4".into(),
            "gemini-2.0-flash".into(),
            &self.metadata.host,
            timeout,
        )
    }
}

fn success_body() -> serde_json::Value {
    json!({
        "candidates": [{
            "content": {"role": "model", "parts": [{"text": "2+2 "}, {"text": "is 4."}]},
            "finishReason": "STOP",
            "avgLogprobs": -0.05,
            "safetyRatings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"}]
        }],
        "usageMetadata": {"promptTokenCount": 20, "candidatesTokenCount": 5, "totalTokenCount": 25},
        "modelVersion": "gemini-2.0-flash-001",
        "createTime": "2025-01-01T00:00:00Z",
        "responseId": "abc"
    })
}

#[tokio::test]
async fn vertex_sends_the_exact_request_and_parses_the_answer() {
    let f = Fixture::start().await;
    f.vertex.push(FakeResponse::json(200, success_body()));
    let p = f.provider(TIMEOUT);
    assert_eq!(p.name(), "vertex-ai");
    assert_eq!(p.model(), "gemini-2.0-flash");

    let completion = p.complete(&conversation()).await.unwrap();
    assert_eq!(completion.text, "2+2 is 4.");
    assert_eq!(completion.model, "gemini-2.0-flash-001");
    assert_eq!(completion.finish_reason.as_deref(), Some("stop"));
    assert_eq!(completion.usage, Some(Usage { prompt_tokens: 20, completion_tokens: 5, total_tokens: 25 }));

    let token_request = f.metadata.single_request();
    assert_eq!(token_request.method, "GET");
    assert_eq!(token_request.path, "/computeMetadata/v1/instance/service-accounts/default/token");
    assert_eq!(token_request.header("metadata-flavor").as_deref(), Some("Google"));

    let req = f.vertex.single_request();
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, format!("{MODEL_PATH}:generateContent"));
    assert_eq!(req.query, None);
    assert_eq!(req.header("authorization"), Some(format!("Bearer {TOKEN}")));
    assert_eq!(req.header("content-type").as_deref(), Some("application/json"));
    assert_eq!(req.header("traceparent").as_deref(), Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    assert_eq!(
        req.json(),
        json!({
            "contents": [
                {"role": "user", "parts": [{"text": "Hi"}]},
                {"role": "model", "parts": [{"text": "Hello."}]},
                {"role": "user", "parts": [{"text": "What is 2+2?"}]}
            ],
            "systemInstruction": {"parts": [{"text": "You are terse."}]}
        })
    );
}

#[tokio::test]
async fn vertex_caches_the_metadata_token() {
    let f = Fixture::start().await;
    f.vertex.set_default(FakeResponse::json(200, success_body()));
    let p = f.provider(TIMEOUT);
    p.complete(&conversation()).await.unwrap();
    p.complete(&conversation()).await.unwrap();
    assert_eq!(f.vertex.requests().len(), 2);
    assert_eq!(f.metadata.requests().len(), 1, "the token should be fetched once");
}

#[tokio::test]
async fn vertex_without_system_prompt_sends_no_system_instruction() {
    let f = Fixture::start().await;
    f.vertex.push(FakeResponse::json(200, success_body()));
    let mut request = conversation();
    request.messages.remove(0);
    f.provider(TIMEOUT).complete(&request).await.unwrap();
    let body = f.vertex.single_request().json();
    assert!(body.get("systemInstruction").is_none(), "{body}");
    assert_eq!(body["contents"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn vertex_metadata_failure_is_auth() {
    let f = Fixture::start().await;
    f.metadata.set_default(FakeResponse::raw(404, "text/plain", "not found"));
    let err = f.provider(TIMEOUT).complete(&conversation()).await.unwrap_err();
    assert!(matches!(err, ProviderError::Auth(_)), "{err:?}");
    assert!(f.vertex.requests().is_empty());
}

#[tokio::test]
async fn vertex_500_is_upstream_with_the_upstream_message() {
    let f = Fixture::start().await;
    f.vertex.push(FakeResponse::json(
        500,
        json!({"error": {"code": 500, "message": "Internal error encountered.", "status": "INTERNAL"}}),
    ));
    let err = f.provider(TIMEOUT).complete(&conversation()).await.unwrap_err();
    assert_eq!(
        err,
        ProviderError::Upstream {
            status: 500,
            code: Some("INTERNAL".into()),
            message: "Internal error encountered.".into()
        }
    );
}

#[tokio::test]
async fn vertex_429_is_rate_limited_with_retry_after() {
    let f = Fixture::start().await;
    f.vertex.push(
        FakeResponse::json(
            429,
            json!({"error": {"code": 429, "message": "Resource exhausted. Please try again later.", "status": "RESOURCE_EXHAUSTED"}}),
        )
        .with_header("Retry-After", "7"),
    );
    let err = f.provider(TIMEOUT).complete(&conversation()).await.unwrap_err();
    assert_eq!(
        err,
        ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
            message: "Resource exhausted. Please try again later.".into()
        }
    );
}

#[tokio::test]
async fn vertex_401_does_not_echo_the_token() {
    let f = Fixture::start().await;
    f.vertex.push(FakeResponse::json(
        401,
        json!({"error": {"code": 401, "message": format!("Request had invalid authentication credentials: {TOKEN}"), "status": "UNAUTHENTICATED"}}),
    ));
    let err = f.provider(TIMEOUT).complete(&conversation()).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Upstream { status: 401, code: Some(c), message } if c == "UNAUTHENTICATED" && message.contains("rejected")),
        "{err:?}"
    );
    assert_no_secret(&err, TOKEN);
}

#[tokio::test]
async fn vertex_blocked_prompt_is_content_filtered() {
    let f = Fixture::start().await;
    f.vertex.push(FakeResponse::json(
        200,
        json!({
            "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": [{"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": true}]},
            "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},
            "modelVersion": "gemini-2.0-flash-001"
        }),
    ));
    match f.provider(TIMEOUT).complete(&conversation()).await.unwrap_err() {
        ProviderError::ContentFiltered { message } => assert!(message.contains("SAFETY"), "{message}"),
        other => panic!("expected ContentFiltered, got {other:?}"),
    }
}

#[tokio::test]
async fn vertex_safety_finish_reason_is_content_filtered() {
    let f = Fixture::start().await;
    for reason in ["SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII"] {
        f.vertex.push(FakeResponse::json(
            200,
            json!({
                "candidates": [{"finishReason": reason, "safetyRatings": [{"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": true}]}],
                "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12}
            }),
        ));
        let err = f.provider(TIMEOUT).complete(&conversation()).await.unwrap_err();
        assert!(
            matches!(&err, ProviderError::ContentFiltered { message } if message.contains(reason)),
            "{reason}: {err:?}"
        );
    }
}

#[tokio::test]
async fn vertex_max_tokens_is_length() {
    let f = Fixture::start().await;
    f.vertex.push(FakeResponse::json(
        200,
        json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": "thinking", "thought": true}, {"text": "Cut sh"}]}, "finishReason": "MAX_TOKENS"}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 3, "thoughtsTokenCount": 4, "totalTokenCount": 17}
        }),
    ));
    let completion = f.provider(TIMEOUT).complete(&conversation()).await.unwrap();
    assert_eq!(completion.text, "Cut sh");
    assert_eq!(completion.finish_reason.as_deref(), Some("length"));
    assert_eq!(completion.model, "gemini-2.0-flash", "no modelVersion: the configured model");
    assert_eq!(completion.usage, Some(Usage { prompt_tokens: 10, completion_tokens: 7, total_tokens: 17 }));
}

#[tokio::test]
async fn vertex_slow_answer_is_a_timeout() {
    let f = Fixture::start().await;
    f.vertex.push(FakeResponse::json(200, success_body()).with_delay(LONG_DELAY));
    let err = f.provider(SHORT_TIMEOUT).complete(&conversation()).await.unwrap_err();
    assert_eq!(err, ProviderError::Timeout(SHORT_TIMEOUT));
}

#[tokio::test]
async fn vertex_garbage_is_invalid_response() {
    let f = Fixture::start().await;
    f.vertex.push(FakeResponse::raw(200, "application/json", "<html>oops</html>"));
    f.vertex.push(FakeResponse::json(200, json!({"usageMetadata": {}})));
    let p = f.provider(TIMEOUT);
    let err = p.complete(&conversation()).await.unwrap_err();
    assert!(matches!(err, ProviderError::InvalidResponse(_)), "{err:?}");
    let err = p.complete(&conversation()).await.unwrap_err();
    assert!(matches!(err, ProviderError::InvalidResponse(_)), "{err:?}");
}

#[tokio::test]
async fn vertex_streams_deltas_then_usage() {
    let f = Fixture::start().await;
    let part = |text: &str| json!({"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}}], "modelVersion": "gemini-2.0-flash-001"});
    f.vertex.push(FakeResponse::sse(vec![
        part("2+2").to_string(),
        part(" is").to_string(),
        json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": " 4."}]}, "finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 20, "candidatesTokenCount": 5, "totalTokenCount": 25},
            "modelVersion": "gemini-2.0-flash-001"
        })
        .to_string(),
    ]));
    let p = f.provider(TIMEOUT);
    let (deltas, done) = collect_stream(&p, &conversation()).await.unwrap();
    assert_eq!(deltas, vec!["2+2", " is", " 4."]);
    assert_done(
        &done,
        Some(Usage { prompt_tokens: 20, completion_tokens: 5, total_tokens: 25 }),
        "gemini-2.0-flash-001",
        "stop",
    );

    let req = f.vertex.single_request();
    assert_eq!(req.path, format!("{MODEL_PATH}:streamGenerateContent"));
    assert_eq!(req.query.as_deref(), Some("alt=sse"));
    assert_eq!(req.header("authorization"), Some(format!("Bearer {TOKEN}")));
    assert_eq!(req.json()["systemInstruction"], json!({"parts": [{"text": "You are terse."}]}));
}

#[tokio::test]
async fn vertex_stream_safety_stop_is_content_filtered() {
    let f = Fixture::start().await;
    f.vertex.push(FakeResponse::sse(vec![
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Sure, "}]}}]}).to_string(),
        json!({"candidates": [{"finishReason": "SAFETY"}]}).to_string(),
    ]));
    let err = collect_stream(&f.provider(TIMEOUT), &conversation()).await.unwrap_err();
    assert!(matches!(err, ProviderError::ContentFiltered { .. }), "{err:?}");
}

#[tokio::test]
async fn vertex_stream_cut_short_is_invalid_response() {
    let f = Fixture::start().await;
    f.vertex.push(FakeResponse::sse(vec![
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Half"}]}}]}).to_string(),
    ]));
    let err = collect_stream(&f.provider(TIMEOUT), &conversation()).await.unwrap_err();
    assert!(matches!(err, ProviderError::InvalidResponse(_)), "{err:?}");
}

#[tokio::test]
async fn vertex_model_armor_is_content_filtered_and_other_without_text_is_an_error() {
    let f = Fixture::start().await;
    f.vertex.push(FakeResponse::json(
        200,
        json!({"candidates": [{"finishReason": "MODEL_ARMOR", "finishMessage": "Blocked by Model Armor floor setting"}],
               "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12}}),
    ));
    let p = f.provider(TIMEOUT);
    match p.complete(&conversation()).await.unwrap_err() {
        ProviderError::ContentFiltered { message } => assert!(message.contains("MODEL_ARMOR"), "{message}"),
        other => panic!("expected ContentFiltered, got {other:?}"),
    }
    for reason in ["OTHER", "MALFORMED_FUNCTION_CALL"] {
        f.vertex.push(FakeResponse::json(
            200,
            json!({"candidates": [{"content": {"role": "model", "parts": []}, "finishReason": reason}],
                   "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12}}),
        ));
        let err = p.complete(&conversation()).await.unwrap_err();
        assert!(matches!(&err, ProviderError::NoAnswer(m) if m.contains(reason)), "{reason}: {err:?}");
    }
    // Streamed: a stop without any text is an error too, never an empty success.
    f.vertex.push(FakeResponse::sse(vec![
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "thinking", "thought": true}]}}]})
            .to_string(),
        json!({"candidates": [{"finishReason": "OTHER"}], "usageMetadata": {"promptTokenCount": 3}}).to_string(),
    ]));
    let err = collect_stream(&p, &conversation()).await.unwrap_err();
    assert!(matches!(err, ProviderError::NoAnswer(_)), "{err:?}");
}

#[tokio::test]
async fn vertex_stream_error_object_is_upstream() {
    let f = Fixture::start().await;
    f.vertex.push(FakeResponse::sse(vec![
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Once upon"}]}}]}).to_string(),
        json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}})
            .to_string(),
    ]));
    let err = collect_stream(&f.provider(TIMEOUT), &conversation()).await.unwrap_err();
    assert_eq!(
        err,
        ProviderError::Upstream {
            status: 503,
            code: Some("UNAVAILABLE".into()),
            message: "The model is overloaded. Please try again later.".into()
        }
    );
}

#[tokio::test]
async fn vertex_stream_survives_events_split_across_reads() {
    let f = Fixture::start().await;
    let body = format!(
        "data: {}\r\n\r\ndata: {}\r\n\r\n",
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "héllo "}]}}]}),
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "wörld"}]}, "finishReason": "STOP"}],
               "usageMetadata": {"promptTokenCount": 4, "candidatesTokenCount": 2, "totalTokenCount": 6}})
    );
    let pieces: Vec<bytes::Bytes> = body.as_bytes().chunks(5).map(bytes::Bytes::copy_from_slice).collect();
    f.vertex.push(FakeResponse::sse_chunks(pieces).with_chunk_delay(Duration::from_millis(1)));
    let (deltas, done) = collect_stream(&f.provider(TIMEOUT), &conversation()).await.unwrap();
    assert_eq!(deltas.concat(), "héllo wörld");
    assert_done(
        &done,
        Some(Usage { prompt_tokens: 4, completion_tokens: 2, total_tokens: 6 }),
        "gemini-2.0-flash",
        "stop",
    );
}

#[test]
fn vertex_global_location_uses_the_global_endpoint() {
    assert_eq!(chat_api::llm::vertex::default_endpoint("global"), "https://aiplatform.googleapis.com");
    assert_eq!(
        chat_api::llm::vertex::default_endpoint("europe-west4"),
        "https://europe-west4-aiplatform.googleapis.com"
    );
}

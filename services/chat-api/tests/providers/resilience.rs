//! Provider faults (`chat_api::llm::resilience`) against fake upstreams in
//! OpenAI's and Vertex's wire formats: retries and their headers, the
//! circuit breaker, the fallback provider, streamed retries, and the
//! metadata server's transient failures.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chat_api::llm::openai::{Endpoint, OpenAiChat};
use chat_api::llm::resilience::{BreakerState, Fallback, Guarded, ResilienceConfig};
use chat_api::llm::{ChatProvider, ProviderError, StreamEvent};
use chat_api::metrics::Metrics;
use futures::StreamExt;
use serde_json::json;

use crate::support::flaky_tcp::FlakyFront;
use crate::support::{FakeResponse, FakeUpstream};
use crate::{TIMEOUT, clients, collect_stream, connections, conversation};

fn openai(base_url: &str, model: &str) -> Arc<dyn ChatProvider> {
    Arc::new(OpenAiChat::new(connections(), Endpoint::compatible(&format!("{base_url}/v1"), model, None), TIMEOUT))
}

fn settings(max_retries: u32, breaker_failures: u32, cooldown: Duration) -> ResilienceConfig {
    ResilienceConfig { max_retries, breaker_failures, breaker_cooldown: cooldown }
}

fn guarded(upstream_url: &str, config: ResilienceConfig) -> Guarded {
    guarded_as(upstream_url, "gpt-test", "primary", config)
}

fn guarded_as(upstream_url: &str, model: &str, endpoint: &'static str, config: ResilienceConfig) -> Guarded {
    Guarded::new(openai(upstream_url, model), endpoint, config, TIMEOUT, Arc::new(Metrics::new()))
}

fn answer(text: &str, model: &str) -> FakeResponse {
    FakeResponse::json(
        200,
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1_700_000_000, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        }),
    )
}

fn rate_limited() -> FakeResponse {
    FakeResponse::json(
        429,
        json!({"error": {"message": "Rate limit reached for requests", "type": "requests", "param": null,
                         "code": "rate_limit_exceeded"}}),
    )
}

fn server_error(status: u16) -> FakeResponse {
    FakeResponse::json(status, json!({"error": {"message": "The server is overloaded", "type": "server_error"}}))
}

fn chunk(content: Option<&str>, finish_reason: Option<&str>) -> String {
    let delta = content.map_or(json!({}), |c| json!({"content": c}));
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})
    .to_string()
}

#[tokio::test]
async fn a_429_is_retried_after_the_wait_each_retry_header_asks_for() {
    // Each wait is longer than the backoff's first delay (250-500 ms): only
    // honouring the header makes the retry wait this long.
    // `None`: an HTTP date two seconds ahead (whole seconds: more than one second away).
    let cases: [(&str, Option<&str>, Duration); 4] = [
        ("retry-after-ms", Some("800"), Duration::from_millis(800)),
        ("x-ms-retry-after-ms", Some("800"), Duration::from_millis(800)),
        ("retry-after", Some("1"), Duration::from_secs(1)),
        ("retry-after", None, Duration::from_millis(1000)),
    ];
    for (header, value, at_least) in cases {
        let value =
            value.map_or_else(|| httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2)), str::to_owned);
        let upstream = FakeUpstream::start().await;
        upstream.push(rate_limited().with_header(header, &value));
        upstream.push(answer("fine", "gpt-test"));
        let p = guarded(&upstream.url, settings(2, 5, Duration::from_secs(30)));
        let started = Instant::now();
        let completion = p.complete(&conversation()).await.unwrap_or_else(|e| panic!("{header}: {e}"));
        let waited = started.elapsed();
        assert_eq!(completion.text, "fine");
        assert_eq!(upstream.requests().len(), 2, "{header}");
        assert!(waited >= at_least, "{header}: {value} honoured? waited only {waited:?}");
        assert!(waited < at_least + Duration::from_secs(2), "{header}: waited {waited:?}");
    }
}

#[tokio::test]
async fn a_503_that_says_when_to_come_back_is_retried_then() {
    let upstream = FakeUpstream::start().await;
    upstream.push(server_error(503).with_header("retry-after-ms", "900"));
    upstream.push(answer("back", "gpt-test"));
    let p = guarded(&upstream.url, settings(2, 5, Duration::from_secs(30)));
    let started = Instant::now();
    assert_eq!(p.complete(&conversation()).await.unwrap().text, "back");
    assert!(started.elapsed() >= Duration::from_millis(900), "waited only {:?}", started.elapsed());
    assert_eq!(upstream.requests().len(), 2);
    // Spent: the caller learns when to come back.
    upstream.set_default(server_error(503).with_header("retry-after", "0"));
    let p = guarded(&upstream.url, settings(1, 5, Duration::from_secs(30)));
    let err = p.complete(&conversation()).await.unwrap_err();
    assert_eq!(
        err,
        ProviderError::Overloaded {
            status: 503,
            retry_after: Duration::ZERO,
            message: "The server is overloaded".into()
        }
    );
    assert_eq!(upstream.requests().len(), 4);
}

#[tokio::test]
async fn a_wait_past_the_deadline_is_not_made() {
    let upstream = FakeUpstream::start().await;
    upstream.push(rate_limited().with_header("retry-after", "120"));
    let p = guarded(&upstream.url, settings(2, 5, Duration::from_secs(30)));
    let started = Instant::now();
    let err = p.complete(&conversation()).await.unwrap_err();
    assert_eq!(
        err,
        ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(120)),
            message: "Rate limit reached for requests".into()
        }
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_and_client_errors_are_not() {
    let upstream = FakeUpstream::start().await;
    upstream.push(server_error(503));
    upstream.push(server_error(500));
    upstream.push(answer("third time", "gpt-test"));
    let p = guarded(&upstream.url, settings(2, 0, Duration::from_secs(30)));
    assert_eq!(p.complete(&conversation()).await.unwrap().text, "third time");
    assert_eq!(upstream.requests().len(), 3);

    // Retries spent: the last error.
    let upstream = FakeUpstream::start().await;
    upstream.set_default(server_error(502));
    let p = guarded(&upstream.url, settings(2, 0, Duration::from_secs(30)));
    let err = p.complete(&conversation()).await.unwrap_err();
    assert!(matches!(err, ProviderError::Upstream { status: 502, .. }), "{err:?}");
    assert_eq!(upstream.requests().len(), 3);

    // A client error and a content filter are answers, not faults.
    let upstream = FakeUpstream::start().await;
    upstream.push(FakeResponse::json(
        400,
        json!({"error": {"message": "Invalid 'messages'", "type": "invalid_request_error", "code": null}}),
    ));
    let p = guarded(&upstream.url, settings(2, 0, Duration::from_secs(30)));
    assert!(matches!(p.complete(&conversation()).await.unwrap_err(), ProviderError::Upstream { status: 400, .. }));
    let mut filtered = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": null},
                                           "finish_reason": "content_filter"}]});
    filtered["model"] = json!("gpt-test");
    upstream.push(FakeResponse::json(200, filtered));
    assert!(matches!(p.complete(&conversation()).await.unwrap_err(), ProviderError::ContentFiltered { .. }));
    assert_eq!(upstream.requests().len(), 2, "neither was retried");
}

#[tokio::test]
async fn a_reset_connection_is_retried() {
    let upstream = FakeUpstream::start().await;
    upstream.push(answer("after the reset", "gpt-test"));
    let front = FlakyFront::start(&upstream.host, 1).await;
    let p = guarded(&front.url, settings(2, 5, Duration::from_secs(30)));
    let completion = p.complete(&conversation()).await.unwrap();
    assert_eq!(completion.text, "after the reset");
    assert_eq!(front.resets(), 1);
    assert_eq!(upstream.requests().len(), 1);

    // Without retries the reset is the caller's error.
    let front = FlakyFront::start(&upstream.host, 1).await;
    let p = guarded(&front.url, settings(0, 5, Duration::from_secs(30)));
    assert!(matches!(p.complete(&conversation()).await.unwrap_err(), ProviderError::Transport(_)));
}

#[tokio::test]
async fn insufficient_quota_is_not_retried() {
    let upstream = FakeUpstream::start().await;
    upstream.set_default(FakeResponse::json(
        429,
        json!({"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
                         "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}),
    ));
    let p = guarded(&upstream.url, settings(2, 5, Duration::from_secs(30)));
    let err = p.complete(&conversation()).await.unwrap_err();
    assert!(matches!(&err, ProviderError::QuotaExhausted { message } if message.contains("current quota")), "{err:?}");
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn the_breaker_opens_fails_fast_then_probes_and_closes() {
    let upstream = FakeUpstream::start().await;
    let p = guarded(&upstream.url, settings(0, 2, Duration::from_millis(600)));
    // Rate limits do not count.
    for _ in 0..3 {
        upstream.push(rate_limited());
        assert!(matches!(p.complete(&conversation()).await.unwrap_err(), ProviderError::RateLimited { .. }));
    }
    assert_eq!(p.health().breaker, BreakerState::Closed);
    // Two consecutive server errors open it.
    for _ in 0..2 {
        upstream.push(server_error(503));
        p.complete(&conversation()).await.unwrap_err();
    }
    assert_eq!(p.health().breaker, BreakerState::Open);
    let err = p.complete(&conversation()).await.unwrap_err();
    assert!(
        matches!(err, ProviderError::Unavailable { retry_after } if retry_after <= Duration::from_millis(600)),
        "{err:?}"
    );
    assert_eq!(upstream.requests().len(), 5, "the open breaker made no request");

    // After the cooldown one probe goes through; failing, it opens the breaker again.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(p.health().breaker, BreakerState::HalfOpen);
    upstream.push(server_error(500));
    p.complete(&conversation()).await.unwrap_err();
    assert_eq!(p.health().breaker, BreakerState::Open);
    assert!(matches!(p.complete(&conversation()).await.unwrap_err(), ProviderError::Unavailable { .. }));
    assert_eq!(upstream.requests().len(), 6);

    // A successful probe closes it.
    tokio::time::sleep(Duration::from_millis(700)).await;
    upstream.push(answer("back", "gpt-test"));
    assert_eq!(p.complete(&conversation()).await.unwrap().text, "back");
    assert_eq!(p.health().breaker, BreakerState::Closed);
    upstream.push(answer("again", "gpt-test"));
    assert_eq!(p.complete(&conversation()).await.unwrap().text, "again");
}

#[tokio::test]
async fn the_fallback_answers_when_retries_are_spent_or_the_breaker_is_open() {
    let primary = FakeUpstream::start().await;
    primary.set_default(server_error(503));
    let secondary = FakeUpstream::start().await;
    secondary.set_default(answer("from the fallback", "llama-fallback"));
    let config = settings(1, 2, Duration::from_secs(30));
    let metrics = Arc::new(Metrics::new());
    let p = Fallback::new(
        guarded_as(&primary.url, "gpt-test", "primary", config),
        guarded_as(&secondary.url, "llama-fallback", "fallback", config),
        metrics,
    );
    assert_eq!((p.name(), p.model()), ("openai", "gpt-test"));
    // Retries spent (2 attempts), then the fallback.
    let completion = p.complete(&conversation()).await.unwrap();
    assert_eq!((completion.text.as_str(), completion.model.as_str()), ("from the fallback", "llama-fallback"));
    assert_eq!(primary.requests().len(), 2);
    assert_eq!(secondary.requests().len(), 1);
    // Two failed attempts opened the primary's breaker: straight to the fallback.
    let health = p.upstreams();
    assert_eq!(health[0].breaker, BreakerState::Open);
    assert_eq!(health[1].breaker, BreakerState::Closed);
    let (deltas, _) = {
        secondary.push(FakeResponse::sse(vec![
            chunk(Some("stre"), None),
            chunk(Some("amed"), Some("stop")),
            "[DONE]".into(),
        ]));
        collect_stream(&p, &conversation()).await.unwrap()
    };
    assert_eq!(deltas.concat(), "streamed");
    assert_eq!(primary.requests().len(), 2, "the open breaker kept the primary out");
    assert_eq!(secondary.requests().len(), 2);
    // A client error is the primary's answer, not a reason to fall back.
    let primary_ok = FakeUpstream::start().await;
    primary_ok.push(FakeResponse::json(400, json!({"error": {"message": "bad", "type": "invalid_request_error"}})));
    let p = Fallback::new(
        guarded_as(&primary_ok.url, "gpt-test", "primary", config),
        guarded_as(&secondary.url, "llama-fallback", "fallback", config),
        Arc::new(Metrics::new()),
    );
    assert!(matches!(p.complete(&conversation()).await.unwrap_err(), ProviderError::Upstream { status: 400, .. }));
    assert_eq!(secondary.requests().len(), 2);
}

#[tokio::test]
async fn a_stream_is_retried_before_its_first_delta_only() {
    // A 503 before anything was streamed: retried.
    let upstream = FakeUpstream::start().await;
    upstream.push(server_error(503));
    upstream.push(FakeResponse::sse(vec![chunk(Some("Fo"), None), chunk(Some("ur"), Some("stop")), "[DONE]".into()]));
    let p = guarded(&upstream.url, settings(2, 5, Duration::from_secs(30)));
    let (deltas, _) = collect_stream(&p, &conversation()).await.unwrap();
    assert_eq!(deltas.concat(), "Four");
    assert_eq!(upstream.requests().len(), 2);

    // An error event before the first delta: nothing reached the caller, retried.
    let upstream = FakeUpstream::start().await;
    upstream.push(FakeResponse::sse(vec![
        json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error",
                         "code": 500}})
        .to_string(),
    ]));
    upstream.push(FakeResponse::sse(vec![chunk(Some("ok"), Some("stop")), "[DONE]".into()]));
    let p = guarded(&upstream.url, settings(2, 5, Duration::from_secs(30)));
    let (deltas, _) = collect_stream(&p, &conversation()).await.unwrap();
    assert_eq!(deltas.concat(), "ok");
    assert_eq!(upstream.requests().len(), 2);

    // The same failure after a delta reached the caller: its error, no second request.
    let upstream = FakeUpstream::start().await;
    upstream.push(FakeResponse::sse(vec![
        chunk(Some("Half an ans"), None),
        json!({"error": {"message": "The server had an error", "type": "server_error", "code": 500}}).to_string(),
    ]));
    upstream.set_default(FakeResponse::sse(vec![chunk(Some("never"), Some("stop")), "[DONE]".into()]));
    let p = guarded(&upstream.url, settings(2, 5, Duration::from_secs(30)));
    let mut stream = p.stream(&conversation()).await.unwrap();
    assert_eq!(stream.next().await, Some(Ok(StreamEvent::Delta("Half an ans".into()))));
    assert!(matches!(stream.next().await, Some(Err(ProviderError::Upstream { status: 500, .. }))));
    assert!(stream.next().await.is_none());
    assert_eq!(upstream.requests().len(), 1);
}

#[tokio::test]
async fn the_metadata_token_survives_transient_failures() {
    use chat_api::llm::vertex::VertexAi;
    let metadata = FakeUpstream::start().await;
    metadata.push(FakeResponse::raw(503, "text/plain", "Service Unavailable"));
    metadata.push(FakeResponse::raw(500, "text/plain", "internal error"));
    metadata.set_default(FakeResponse::json(
        200,
        json!({"access_token": "ya29.transient-test-token", "expires_in": 3599, "token_type": "Bearer"}),
    ));
    let vertex = FakeUpstream::start().await;
    vertex.push(FakeResponse::json(
        200,
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}, "finishReason": "STOP"}],
               "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4},
               "modelVersion": "gemini-2.0-flash-001"}),
    ));
    let p = VertexAi::new(
        &clients(),
        vertex.url.clone(),
        "colloquy-prod".into(),
        "europe-west4".into(),
        "gemini-2.0-flash".into(),
        &metadata.host,
        TIMEOUT,
    );
    let completion = p.complete(&conversation()).await.unwrap();
    assert_eq!(completion.text, "Hi");
    assert_eq!(metadata.requests().len(), 3);
    assert_eq!(vertex.single_request().header("authorization").as_deref(), Some("Bearer ya29.transient-test-token"));

    // A 404 (no service account) is not transient: one request, an Auth error.
    let metadata = FakeUpstream::start().await;
    metadata.set_default(FakeResponse::raw(404, "text/plain", "not found"));
    let p = VertexAi::new(
        &clients(),
        vertex.url.clone(),
        "colloquy-prod".into(),
        "europe-west4".into(),
        "gemini-2.0-flash".into(),
        &metadata.host,
        TIMEOUT,
    );
    assert!(matches!(p.complete(&conversation()).await.unwrap_err(), ProviderError::Auth(_)));
    assert_eq!(metadata.requests().len(), 1);
}

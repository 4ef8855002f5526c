//! Azure OpenAI chat completions.

use std::time::Duration;

use chat_api::config::Secret;
use chat_api::llm::openai::{Endpoint, OpenAiChat};
use chat_api::llm::{ChatProvider, CompletionRequest, ProviderError, Usage};
use serde_json::json;

use crate::support::{FakeResponse, FakeUpstream};
use crate::{
    LONG_DELAY, SHORT_TIMEOUT, TIMEOUT, assert_done, assert_no_secret, collect_stream, connections, conversation,
};

const KEY: &str = "azure-test-key-0123456789abcdef";

fn provider(upstream: &FakeUpstream, timeout: Duration) -> OpenAiChat {
    azure_at(&format!("{}/", upstream.url), timeout) // a trailing slash must not double up
}

fn azure_at(endpoint: &str, timeout: Duration) -> OpenAiChat {
    OpenAiChat::new(connections(), Endpoint::azure(endpoint, "gpt-4o-prod", "2024-10-21", Secret::new(KEY)), timeout)
}

fn success_body() -> serde_json::Value {
    json!({
        "id": "chatcmpl-AbC123",
        "object": "chat.completion",
        "created": 1_732_000_000,
        "model": "gpt-4o-2024-08-06",
        "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {
            "hate": {"filtered": false, "severity": "safe"}}}],
        "choices": [{
            "index": 0,
            "finish_reason": "stop",
            "logprobs": null,
            "message": {"role": "assistant", "content": "4.", "refusal": null},
            "content_filter_results": {"hate": {"filtered": false, "severity": "safe"}}
        }],
        "system_fingerprint": "fp_abc",
        "usage": {"prompt_tokens": 31, "completion_tokens": 2, "total_tokens": 33}
    })
}

#[tokio::test]
async fn azure_sends_the_exact_request_and_parses_the_answer() {
    let upstream = FakeUpstream::start().await;
    upstream.push(FakeResponse::json(200, success_body()));
    let p = provider(&upstream, TIMEOUT);
    assert_eq!(p.name(), "azure-openai");
    assert_eq!(p.model(), "gpt-4o-prod");

    let completion = p.complete(&conversation()).await.unwrap();
    assert_eq!(completion.text, "4.");
    assert_eq!(completion.model, "gpt-4o-2024-08-06");
    assert_eq!(completion.finish_reason.as_deref(), Some("stop"));
    assert_eq!(completion.usage, Some(Usage { prompt_tokens: 31, completion_tokens: 2, total_tokens: 33 }));

    let req = upstream.single_request();
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/openai/deployments/gpt-4o-prod/chat/completions");
    assert_eq!(req.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(req.header("api-key").as_deref(), Some(KEY));
    assert_eq!(req.header("authorization"), None);
    assert_eq!(req.header("content-type").as_deref(), Some("application/json"));
    assert_eq!(req.header("x-ms-client-request-id").as_deref(), Some("req-123"));
    assert_eq!(req.header("traceparent").as_deref(), Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    assert_eq!(
        req.json(),
        json!({"messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "What is 2+2?"}
        ]})
    );
}

#[tokio::test]
async fn azure_omits_traceparent_when_there_is_none() {
    let upstream = FakeUpstream::start().await;
    upstream.push(FakeResponse::json(200, success_body()));
    let request = CompletionRequest { traceparent: None, ..conversation() };
    provider(&upstream, TIMEOUT).complete(&request).await.unwrap();
    assert_eq!(upstream.single_request().header("traceparent"), None);
}

#[tokio::test]
async fn azure_500_is_upstream_with_the_upstream_message() {
    let upstream = FakeUpstream::start().await;
    upstream.push(FakeResponse::json(
        500,
        json!({"error": {"code": "InternalServerError", "message": "The server had an error while processing your request."}}),
    ));
    let err = provider(&upstream, TIMEOUT).complete(&conversation()).await.unwrap_err();
    assert_eq!(
        err,
        ProviderError::Upstream {
            status: 500,
            code: Some("InternalServerError".into()),
            message: "The server had an error while processing your request.".into(),
        }
    );
}

#[tokio::test]
async fn azure_non_json_error_body_is_truncated_into_the_message() {
    let upstream = FakeUpstream::start().await;
    let page = format!("<html><body>Bad Gateway {}</body></html>", "x".repeat(1000));
    upstream.push(FakeResponse::raw(502, "text/html", page));
    match provider(&upstream, TIMEOUT).complete(&conversation()).await.unwrap_err() {
        ProviderError::Upstream { status: 502, code: None, message } => {
            assert!(message.starts_with("<html><body>Bad Gateway"), "{message}");
            assert!(message.chars().count() <= 201, "not truncated: {} chars", message.len());
        }
        other => panic!("expected Upstream 502, got {other:?}"),
    }
}

#[tokio::test]
async fn azure_429_is_rate_limited_with_retry_after() {
    let upstream = FakeUpstream::start().await;
    upstream.push(
        FakeResponse::json(429, json!({"error": {"code": "429", "message": "Requests to the ChatCompletions_Create Operation have exceeded token rate limit. Please retry after 7 seconds."}}))
            .with_header("Retry-After", "7"),
    );
    match provider(&upstream, TIMEOUT).complete(&conversation()).await.unwrap_err() {
        ProviderError::RateLimited { retry_after, message } => {
            assert_eq!(retry_after, Some(Duration::from_secs(7)));
            assert!(message.contains("exceeded token rate limit"), "{message}");
        }
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

#[tokio::test]
async fn azure_429_prefers_retry_after_ms() {
    let upstream = FakeUpstream::start().await;
    upstream.push(
        FakeResponse::json(429, json!({"error": {"code": "429", "message": "slow down"}}))
            .with_header("retry-after", "7")
            .with_header("retry-after-ms", "6500"),
    );
    let err = provider(&upstream, TIMEOUT).complete(&conversation()).await.unwrap_err();
    assert_eq!(
        err,
        ProviderError::RateLimited { retry_after: Some(Duration::from_millis(6500)), message: "slow down".into() }
    );
}

#[tokio::test]
async fn azure_400_content_filter_is_content_filtered() {
    let upstream = FakeUpstream::start().await;
    upstream.push(FakeResponse::json(
        400,
        json!({"error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
            "type": null,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": {
                    "hate": {"filtered": false, "severity": "safe"},
                    "self_harm": {"filtered": false, "severity": "safe"},
                    "sexual": {"filtered": false, "severity": "safe"},
                    "violence": {"filtered": true, "severity": "medium"}
                }
            }
        }}),
    ));
    match provider(&upstream, TIMEOUT).complete(&conversation()).await.unwrap_err() {
        ProviderError::ContentFiltered { message } => assert!(message.contains("violence"), "{message}"),
        other => panic!("expected ContentFiltered, got {other:?}"),
    }
}

#[tokio::test]
async fn azure_400_other_errors_stay_upstream() {
    let upstream = FakeUpstream::start().await;
    upstream.push(FakeResponse::json(
        400,
        json!({"error": {"code": "context_length_exceeded", "message": "This model's maximum context length is 128000 tokens.", "param": "messages", "type": "invalid_request_error"}}),
    ));
    let err = provider(&upstream, TIMEOUT).complete(&conversation()).await.unwrap_err();
    assert_eq!(
        err,
        ProviderError::Upstream {
            status: 400,
            code: Some("context_length_exceeded".into()),
            message: "This model's maximum context length is 128000 tokens.".into(),
        }
    );
}

#[tokio::test]
async fn azure_finish_reason_content_filter_is_content_filtered() {
    let upstream = FakeUpstream::start().await;
    upstream.push(FakeResponse::json(
        200,
        json!({
            "id": "chatcmpl-x", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{
                "index": 0, "finish_reason": "content_filter",
                "message": {"role": "assistant", "content": null},
                "content_filter_results": {"hate": {"filtered": true, "severity": "high"}, "sexual": {"filtered": false, "severity": "safe"}}
            }],
            "usage": {"prompt_tokens": 10, "completion_tokens": 0, "total_tokens": 10}
        }),
    ));
    match provider(&upstream, TIMEOUT).complete(&conversation()).await.unwrap_err() {
        ProviderError::ContentFiltered { message } => {
            assert!(message.contains("hate") && !message.contains("sexual"), "{message}")
        }
        other => panic!("expected ContentFiltered, got {other:?}"),
    }
}

#[tokio::test]
async fn azure_slow_answer_is_a_timeout() {
    let upstream = FakeUpstream::start().await;
    upstream.push(FakeResponse::json(200, success_body()).with_delay(LONG_DELAY));
    let started = std::time::Instant::now();
    let err = provider(&upstream, SHORT_TIMEOUT).complete(&conversation()).await.unwrap_err();
    assert_eq!(err, ProviderError::Timeout(SHORT_TIMEOUT));
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn azure_garbage_json_is_invalid_response() {
    let upstream = FakeUpstream::start().await;
    upstream.push(FakeResponse::raw(200, "application/json", "{\"choices\": [tru"));
    let err = provider(&upstream, TIMEOUT).complete(&conversation()).await.unwrap_err();
    assert!(matches!(err, ProviderError::InvalidResponse(_)), "{err:?}");

    upstream.push(FakeResponse::json(200, json!({"id": "x", "choices": []})));
    let err = provider(&upstream, TIMEOUT).complete(&conversation()).await.unwrap_err();
    assert!(matches!(err, ProviderError::InvalidResponse(_)), "{err:?}");
}

#[tokio::test]
async fn azure_401_says_the_key_was_rejected_without_echoing_it() {
    let upstream = FakeUpstream::start().await;
    // An upstream that quotes the key back must not make us leak it.
    upstream.push(FakeResponse::json(
        401,
        json!({"error": {"code": "401", "message": format!("Access denied due to invalid subscription key {KEY} or wrong API endpoint.")}}),
    ));
    upstream.push(FakeResponse::json(500, json!({"error": {"code": "oops", "message": format!("bad key {KEY}")}})));
    let p = provider(&upstream, TIMEOUT);

    let err = p.complete(&conversation()).await.unwrap_err();
    match &err {
        ProviderError::Upstream { status: 401, message, .. } => {
            assert!(message.contains("key was rejected"), "{message}")
        }
        other => panic!("expected Upstream 401, got {other:?}"),
    }
    assert_no_secret(&err, KEY);

    let err = p.complete(&conversation()).await.unwrap_err();
    assert!(matches!(err, ProviderError::Upstream { status: 500, .. }), "{err:?}");
    assert_no_secret(&err, KEY);
}

#[tokio::test]
async fn azure_unreachable_is_transport_without_url_or_key() {
    // Bind then drop a listener: nothing listens on that port any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let p = azure_at(&format!("http://127.0.0.1:{port}"), TIMEOUT);
    let err = p.complete(&conversation()).await.unwrap_err();
    assert!(matches!(err, ProviderError::Transport(_)), "{err:?}");
    assert_no_secret(&err, KEY);
    assert!(!err.to_string().contains("api-version"), "{err}");
}

fn chunk(delta: serde_json::Value, finish_reason: Option<&str>) -> String {
    json!({
        "id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "content_filter_results": {}}]
    })
    .to_string()
}

#[tokio::test]
async fn azure_streams_deltas_then_usage() {
    let upstream = FakeUpstream::start().await;
    upstream.push(FakeResponse::sse(vec![
        // Azure's first chunk: prompt filter results, no choices, empty model.
        json!({"id": "", "object": "", "created": 0, "model": "", "choices": [],
               "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]})
        .to_string(),
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": "Two plus"}), None),
        chunk(json!({"content": " two is 4."}), None),
        chunk(json!({}), Some("stop")),
        json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-2024-08-06",
               "choices": [], "usage": {"prompt_tokens": 31, "completion_tokens": 6, "total_tokens": 37}})
        .to_string(),
        "[DONE]".into(),
    ]));
    let p = provider(&upstream, TIMEOUT);
    let (deltas, done) = collect_stream(&p, &conversation()).await.unwrap();
    assert_eq!(deltas, vec!["Two plus", " two is 4."]);
    assert_done(
        &done,
        Some(Usage { prompt_tokens: 31, completion_tokens: 6, total_tokens: 37 }),
        "gpt-4o-2024-08-06",
        "stop",
    );

    let req = upstream.single_request();
    assert_eq!(req.path, "/openai/deployments/gpt-4o-prod/chat/completions");
    assert_eq!(req.query.as_deref(), Some("api-version=2024-10-21"));
    assert_eq!(req.header("api-key").as_deref(), Some(KEY));
    let body = req.json();
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert_eq!(body["messages"].as_array().unwrap().len(), 4);
    assert!(body.get("model").is_none());
}

#[tokio::test]
async fn azure_stream_content_filter_is_an_error_event() {
    let upstream = FakeUpstream::start().await;
    upstream.push(FakeResponse::sse(vec![
        chunk(json!({"content": "Here is how to"}), None),
        chunk(json!({}), Some("content_filter")),
        "[DONE]".into(),
    ]));
    let err = collect_stream(&provider(&upstream, TIMEOUT), &conversation()).await.unwrap_err();
    assert!(matches!(err, ProviderError::ContentFiltered { .. }), "{err:?}");
}

#[tokio::test]
async fn azure_stream_error_status_fails_before_streaming() {
    let upstream = FakeUpstream::start().await;
    upstream.push(
        FakeResponse::json(429, json!({"error": {"code": "429", "message": "Rate limit is exceeded."}}))
            .with_header("Retry-After", "7"),
    );
    let err = provider(&upstream, TIMEOUT).stream(&conversation()).await.err().expect("an error");
    assert_eq!(
        err,
        ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
            message: "Rate limit is exceeded.".into()
        }
    );
}

#[tokio::test]
async fn azure_stream_slow_start_is_a_timeout() {
    let upstream = FakeUpstream::start().await;
    upstream.push(FakeResponse::sse(vec!["[DONE]".into()]).with_delay(LONG_DELAY));
    let err = provider(&upstream, SHORT_TIMEOUT).stream(&conversation()).await.err().expect("an error");
    assert_eq!(err, ProviderError::Timeout(SHORT_TIMEOUT));
}

#[tokio::test]
async fn azure_400_content_filter_in_the_specification_spelling() {
    let upstream = FakeUpstream::start().await;
    // The 2024-10-21 specification: `inner_error.content_filter_results`.
    upstream.push(FakeResponse::json(
        400,
        json!({"error": {
            "code": "content_filter",
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's content management policy.",
            "param": "prompt",
            "inner_error": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_results": {
                    "hate": {"filtered": false, "severity": "safe"},
                    "self_harm": {"filtered": true, "severity": "high"}
                }
            }
        }}),
    ));
    match provider(&upstream, TIMEOUT).complete(&conversation()).await.unwrap_err() {
        ProviderError::ContentFiltered { message } => {
            assert!(message.contains("self_harm") && !message.contains("hate"), "{message}")
        }
        other => panic!("expected ContentFiltered, got {other:?}"),
    }
}

#[tokio::test]
async fn azure_stream_with_filter_only_chunks_and_no_usage_chunk() {
    let upstream = FakeUpstream::start().await;
    upstream.push(FakeResponse::sse(vec![
        json!({"id": "", "object": "", "created": 0, "model": "", "choices": [],
               "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {"hate": {"filtered": false, "severity": "safe"}}}]})
        .to_string(),
        chunk(json!({"content": "Safe "}), None),
        // A chunk that carries only content-filter results (asynchronous filter annotations).
        json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-2024-08-06",
               "choices": [{"index": 0, "finish_reason": null,
                            "content_filter_results": {"hate": {"filtered": false, "severity": "safe"}},
                            "content_filter_offsets": {"check_offset": 0, "start_offset": 0, "end_offset": 5}}]})
        .to_string(),
        chunk(json!({"content": "answer."}), None),
        chunk(json!({}), Some("stop")),
        "[DONE]".into(),
    ]));
    let (deltas, done) = collect_stream(&provider(&upstream, TIMEOUT), &conversation()).await.unwrap();
    assert_eq!(deltas, vec!["Safe ", "answer."]);
    assert_done(&done, None, "gpt-4o-2024-08-06", "stop");
}

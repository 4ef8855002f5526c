//! OpenAI-compatible chat completions (OpenAI, vLLM, Ollama, ...).

use std::time::Duration;

use bytes::Bytes;
use chat_api::config::Secret;
use chat_api::llm::openai::{Endpoint, OpenAiChat};
use chat_api::llm::{ChatProvider, ProviderError, Usage};
use serde_json::json;

use crate::support::{FakeResponse, FakeUpstream};
use crate::{
    LONG_DELAY, SHORT_TIMEOUT, TIMEOUT, assert_done, assert_no_secret, collect_stream, connections, conversation,
};

const KEY: &str = "sk-proj-test0123456789abcdefXYZ";

fn provider(upstream: &FakeUpstream, key: Option<&str>, timeout: Duration) -> OpenAiChat {
    let endpoint = Endpoint::compatible(&format!("{}/v1", upstream.url), "llama-3.1-8b", key.map(Secret::new));
    OpenAiChat::new(connections(), endpoint, timeout)
}

fn success_body() -> serde_json::Value {
    json!({
        "id": "chatcmpl-123",
        "object": "chat.completion",
        "created": 1_732_000_000,
        "model": "meta-llama/Llama-3.1-8B-Instruct",
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": "4", "refusal": null},
            "logprobs": null,
            "finish_reason": "length"
        }],
        "usage": {"prompt_tokens": 25, "completion_tokens": 1, "total_tokens": 26}
    })
}

#[tokio::test]
async fn openai_sends_model_and_bearer_key_and_parses_the_answer() {
    let upstream = FakeUpstream::start().await;
    upstream.push(FakeResponse::json(200, success_body()));
    let p = provider(&upstream, Some(KEY), TIMEOUT);
    assert_eq!(p.name(), "openai");
    assert_eq!(p.model(), "llama-3.1-8b");

    let completion = p.complete(&conversation()).await.unwrap();
    assert_eq!(completion.text, "4");
    assert_eq!(completion.model, "meta-llama/Llama-3.1-8B-Instruct");
    assert_eq!(completion.finish_reason.as_deref(), Some("length"));
    assert_eq!(completion.usage, Some(Usage { prompt_tokens: 25, completion_tokens: 1, total_tokens: 26 }));

    let req = upstream.single_request();
    assert_eq!(req.method, "POST");
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(req.query, None);
    assert_eq!(req.header("authorization"), Some(format!("Bearer {KEY}")));
    assert_eq!(req.header("api-key"), None);
    assert_eq!(req.header("content-type").as_deref(), Some("application/json"));
    assert_eq!(req.header("x-request-id").as_deref(), Some("req-123"));
    assert_eq!(req.header("traceparent").as_deref(), Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
    assert_eq!(
        req.json(),
        json!({
            "model": "llama-3.1-8b",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "What is 2+2?"}
            ]
        })
    );
}

#[tokio::test]
async fn openai_without_a_key_sends_no_authorization() {
    let upstream = FakeUpstream::start().await;
    upstream
        .push(FakeResponse::json(200, json!({"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]})));
    let completion = provider(&upstream, None, TIMEOUT).complete(&conversation()).await.unwrap();
    // No model nor usage in the answer: fall back to the configured model, no usage.
    assert_eq!(completion.text, "ok");
    assert_eq!(completion.model, "llama-3.1-8b");
    assert_eq!(completion.usage, None);
    assert_eq!(upstream.single_request().header("authorization"), None);
}

#[tokio::test]
async fn openai_500_is_upstream_with_the_upstream_message() {
    let upstream = FakeUpstream::start().await;
    upstream.push(FakeResponse::json(
        500,
        json!({"error": {"message": "The server had an error processing your request.", "type": "server_error", "param": null, "code": null}}),
    ));
    let err = provider(&upstream, Some(KEY), TIMEOUT).complete(&conversation()).await.unwrap_err();
    assert_eq!(
        err,
        ProviderError::Upstream {
            status: 500,
            code: Some("server_error".into()),
            message: "The server had an error processing your request.".into(),
        }
    );
}

#[tokio::test]
async fn openai_429_is_rate_limited_with_retry_after() {
    let upstream = FakeUpstream::start().await;
    upstream.push(
        FakeResponse::json(
            429,
            json!({"error": {"message": "Rate limit reached for requests", "type": "requests", "param": null, "code": "rate_limit_exceeded"}}),
        )
        .with_header("retry-after", "7"),
    );
    let err = provider(&upstream, Some(KEY), TIMEOUT).complete(&conversation()).await.unwrap_err();
    assert_eq!(
        err,
        ProviderError::RateLimited {
            retry_after: Some(Duration::from_secs(7)),
            message: "Rate limit reached for requests".into()
        }
    );
}

#[tokio::test]
async fn openai_401_does_not_echo_the_key() {
    let upstream = FakeUpstream::start().await;
    // OpenAI quotes (part of) the key it rejected.
    upstream.push(FakeResponse::json(
        401,
        json!({"error": {"message": format!("Incorrect API key provided: {KEY}. You can find your API key at https://platform.openai.com/account/api-keys."), "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
    ));
    let err = provider(&upstream, Some(KEY), TIMEOUT).complete(&conversation()).await.unwrap_err();
    match &err {
        ProviderError::Upstream { status: 401, code, message } => {
            assert_eq!(code.as_deref(), Some("invalid_api_key"));
            assert!(message.contains("API key was rejected"), "{message}");
        }
        other => panic!("expected Upstream 401, got {other:?}"),
    }
    assert_no_secret(&err, KEY);
    assert_no_secret(&err, &KEY[..12]);
}

#[tokio::test]
async fn openai_slow_answer_is_a_timeout() {
    let upstream = FakeUpstream::start().await;
    upstream.push(FakeResponse::json(200, success_body()).with_delay(LONG_DELAY));
    let err = provider(&upstream, None, SHORT_TIMEOUT).complete(&conversation()).await.unwrap_err();
    assert_eq!(err, ProviderError::Timeout(SHORT_TIMEOUT));
}

#[tokio::test]
async fn openai_garbage_is_invalid_response() {
    let upstream = FakeUpstream::start().await;
    upstream.push(FakeResponse::raw(200, "application/json", "not json at all"));
    upstream.push(FakeResponse::json(
        200,
        json!({"choices": [{"message": {"role": "assistant"}, "finish_reason": "tool_calls"}]}),
    ));
    let p = provider(&upstream, None, TIMEOUT);
    let err = p.complete(&conversation()).await.unwrap_err();
    assert!(matches!(&err, ProviderError::InvalidResponse(m) if m.contains("not json")), "{err:?}");
    // No text (a tool call we never asked for): no answer, never an empty success.
    let err = p.complete(&conversation()).await.unwrap_err();
    assert!(matches!(&err, ProviderError::NoAnswer(m) if m.contains("tool_calls")), "{err:?}");
}

fn chunk(content: Option<&str>, finish_reason: Option<&str>) -> String {
    let delta = match content {
        Some(c) => json!({"content": c}),
        None => json!({}),
    };
    json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "llama-3.1-8b-instruct",
           "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]})
    .to_string()
}

#[tokio::test]
async fn openai_streams_deltas_then_usage() {
    let upstream = FakeUpstream::start().await;
    upstream.push(FakeResponse::sse(vec![
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "llama-3.1-8b-instruct",
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]})
        .to_string(),
        chunk(Some("Fo"), None),
        chunk(Some("ur."), None),
        chunk(None, Some("stop")),
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "llama-3.1-8b-instruct",
               "choices": [], "usage": {"prompt_tokens": 25, "completion_tokens": 3, "total_tokens": 28}})
        .to_string(),
        "[DONE]".into(),
    ]));
    let p = provider(&upstream, Some(KEY), TIMEOUT);
    let (deltas, done) = collect_stream(&p, &conversation()).await.unwrap();
    assert_eq!(deltas.concat(), "Four.");
    assert_done(
        &done,
        Some(Usage { prompt_tokens: 25, completion_tokens: 3, total_tokens: 28 }),
        "llama-3.1-8b-instruct",
        "stop",
    );

    let req = upstream.single_request();
    assert_eq!(req.path, "/v1/chat/completions");
    assert_eq!(req.header("authorization"), Some(format!("Bearer {KEY}")));
    let body = req.json();
    assert_eq!(body["model"], "llama-3.1-8b");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
}

#[tokio::test]
async fn openai_stream_survives_events_split_across_reads() {
    let upstream = FakeUpstream::start().await;
    let body = format!(
        "data: {}\r\n\r\n: keep-alive\n\ndata: {}\n\ndata: [DONE]\n\n",
        chunk(Some("héllo wörld"), None),
        chunk(None, Some("stop"))
    );
    // Cut into 7-byte pieces: splits lines, CRLFs and multi-byte characters.
    let pieces: Vec<Bytes> = body.as_bytes().chunks(7).map(Bytes::copy_from_slice).collect();
    upstream.push(FakeResponse::sse_chunks(pieces).with_chunk_delay(Duration::from_millis(1)));
    let (deltas, done) = collect_stream(&provider(&upstream, None, TIMEOUT), &conversation()).await.unwrap();
    assert_eq!(deltas, vec!["héllo wörld"]);
    // No usage chunk: no usage rather than a failure.
    assert_done(&done, None, "llama-3.1-8b-instruct", "stop");
}

#[tokio::test]
async fn openai_stream_cut_short_is_invalid_response() {
    let upstream = FakeUpstream::start().await;
    upstream.push(FakeResponse::sse(vec![chunk(Some("Half an ans"), None)]));
    let mut stream = provider(&upstream, None, TIMEOUT).stream(&conversation()).await.unwrap();
    use futures::StreamExt;
    assert_eq!(stream.next().await, Some(Ok(chat_api::llm::StreamEvent::Delta("Half an ans".into()))));
    assert!(matches!(stream.next().await, Some(Err(ProviderError::InvalidResponse(_)))));
    assert_eq!(stream.next().await, None);
}

#[tokio::test]
async fn openai_stream_stalling_mid_answer_is_a_timeout() {
    let upstream = FakeUpstream::start().await;
    upstream.push(
        FakeResponse::sse(vec![chunk(Some("Hel"), None), chunk(Some("lo"), Some("stop")), "[DONE]".into()])
            .with_chunk_delay(LONG_DELAY),
    );
    let err = collect_stream(&provider(&upstream, None, SHORT_TIMEOUT), &conversation()).await.unwrap_err();
    assert_eq!(err, ProviderError::Timeout(SHORT_TIMEOUT));
}

#[tokio::test]
async fn openai_stream_error_event_is_upstream() {
    let upstream = FakeUpstream::start().await;
    upstream.push(FakeResponse::sse(vec![
        chunk(Some("Hi"), None),
        json!({"error": {"message": "The server had an error while processing your request.", "type": "server_error", "code": null}}).to_string(),
    ]));
    let err = collect_stream(&provider(&upstream, None, TIMEOUT), &conversation()).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Upstream { message, .. } if message.contains("server had an error")),
        "{err:?}"
    );
}

#[tokio::test]
async fn openai_stream_from_vllm_with_a_null_choices_usage_chunk() {
    let upstream = FakeUpstream::start().await;
    upstream.push(FakeResponse::sse(vec![
        chunk(Some("Fo"), None),
        chunk(Some("ur"), Some("stop")),
        // vLLM's final usage chunk: `"choices": null` rather than `[]`.
        json!({"id": "cmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "meta-llama/Llama-3.1-8B-Instruct",
               "choices": null, "usage": {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11}})
        .to_string(),
        "[DONE]".into(),
    ]));
    let (deltas, done) = collect_stream(&provider(&upstream, None, TIMEOUT), &conversation()).await.unwrap();
    assert_eq!(deltas.concat(), "Four");
    assert_done(
        &done,
        Some(Usage { prompt_tokens: 9, completion_tokens: 2, total_tokens: 11 }),
        "meta-llama/Llama-3.1-8B-Instruct",
        "stop",
    );
}

#[tokio::test]
async fn openai_empty_answer_is_an_error_not_an_empty_success() {
    let upstream = FakeUpstream::start().await;
    upstream.push(FakeResponse::json(200, json!({"choices": [{"message": {"content": ""}, "finish_reason": "stop"}]})));
    upstream.push(FakeResponse::sse(vec![chunk(Some(""), Some("stop")), "[DONE]".into()]));
    let p = provider(&upstream, None, TIMEOUT);
    assert!(matches!(p.complete(&conversation()).await, Err(ProviderError::NoAnswer(_))));
    assert!(matches!(collect_stream(&p, &conversation()).await, Err(ProviderError::NoAnswer(_))));
}

#[tokio::test]
async fn openai_server_ignoring_stream_true_is_passed_on_whole() {
    let upstream = FakeUpstream::start().await;
    upstream.push(FakeResponse::json(200, success_body()));
    let (deltas, done) = collect_stream(&provider(&upstream, None, TIMEOUT), &conversation()).await.unwrap();
    assert_eq!(deltas, vec!["4"]);
    assert_done(
        &done,
        Some(Usage { prompt_tokens: 25, completion_tokens: 1, total_tokens: 26 }),
        "meta-llama/Llama-3.1-8B-Instruct",
        "length",
    );
}

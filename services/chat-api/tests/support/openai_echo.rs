//! A fake OpenAI-compatible upstream that answers from the request, in the
//! real wire format of `POST /v1/chat/completions` (whole JSON, or an SSE
//! stream of `chat.completion.chunk`s with a usage chunk when
//! `stream_options.include_usage` asks for one, then `data: [DONE]`):
//!
//! * the answer is `echo: <last user message>`, streamed word by word;
//! * a last user message starting with `rate-limit` gets a 429 with
//!   `Retry-After: 1` and OpenAI's error body.

use serde_json::{Value, json};

use super::{FakeResponse, FakeUpstream, RecordedRequest};

/// The answer to `request`.
pub fn echo(request: &RecordedRequest) -> FakeResponse {
    let body = request.json();
    let messages = body["messages"].as_array().cloned().unwrap_or_default();
    let last = messages.iter().rev().find(|m| m["role"] == "user").and_then(|m| m["content"].as_str()).unwrap_or("");
    if last.starts_with("rate-limit") {
        return FakeResponse::json(
            429,
            json!({"error": {"message": "Rate limit reached for requests", "type": "requests",
                             "param": null, "code": "rate_limit_exceeded"}}),
        )
        .with_header("retry-after", "1");
    }
    let answer = format!("echo: {last}");
    let prompt_tokens = messages.len() as u64 * 5;
    let completion_tokens = answer.split_whitespace().count() as u64;
    let usage = json!({"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                       "total_tokens": prompt_tokens + completion_tokens});
    let model = body["model"].clone();
    if body["stream"] != true {
        return FakeResponse::json(
            200,
            json!({"id": "chatcmpl-echo", "object": "chat.completion", "created": 1_700_000_000, "model": model,
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
                   "usage": usage}),
        );
    }
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-echo", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), Value::Null)];
    let words: Vec<&str> = answer.split_inclusive(' ').collect();
    events.extend(words.iter().map(|w| chunk(json!({"content": w}), Value::Null)));
    events.push(chunk(json!({}), json!("stop")));
    if body["stream_options"]["include_usage"] == true {
        events.push(
            json!({"id": "chatcmpl-echo", "object": "chat.completion.chunk", "created": 1_700_000_000,
                   "model": model, "choices": [], "usage": usage})
            .to_string(),
        );
    }
    events.push("[DONE]".to_owned());
    FakeResponse::sse(events)
}

/// A fake upstream answering every request with [`echo`].
pub async fn start() -> FakeUpstream {
    let upstream = FakeUpstream::start().await;
    upstream.set_responder(echo);
    upstream
}

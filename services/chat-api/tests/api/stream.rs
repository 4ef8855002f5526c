//! Streamed turns (`"stream": true` or `Accept: text/event-stream`), end to end
//! through the router against real PostgreSQL and fake upstreams speaking each
//! provider's streaming wire format.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chat_api::config::Config;
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt;

use crate::harness::*;
use crate::support::sse::{SseEvent, all_events, events, shape, streamed_text};
use crate::support::{FakeResponse, FakeUpstream};

/// The answer every provider gives below, in pieces.
const PIECES: &[&str] = &["Colloquy ", "streams ", "answers, ", "piece by piece."];

/// A streamed request's reply: status, headers and (when it is a stream) its events.
pub struct StreamReply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub events: Vec<SseEvent>,
    pub json: Value,
}

/// Sends a chat turn and reads the whole reply, streamed or not.
pub async fn send_stream(app: &TestApp, headers: &[(&str, &str)], body: Value) -> StreamReply {
    let response = app.router.clone().oneshot(chat_request(headers, body)).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let is_stream = headers.get("content-type").is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
    if is_stream {
        StreamReply { status, headers, events: all_events(response.into_body()).await, json: Value::Null }
    } else {
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        StreamReply { status, headers, events: Vec::new(), json: serde_json::from_slice(&bytes).unwrap() }
    }
}

pub fn chat_request(headers: &[(&str, &str)], body: Value) -> Request<Body> {
    let mut builder = Request::builder().method("POST").uri("/api/ai/chat").header("content-type", "application/json");
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder.body(Body::from(body.to_string())).unwrap()
}

pub fn proxy() -> [(&'static str, &'static str); 1] {
    [("x-api-key", API_KEY)]
}

fn last(events: &[SseEvent]) -> &SseEvent {
    events.last().expect("at least one event")
}

// ---------------------------------------------------------------------------
// Providers: configuration and wire formats of the same answer
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Kind {
    OpenAi,
    Azure,
    Vertex,
}

struct Upstreams {
    llm: FakeUpstream,
    _metadata: FakeUpstream,
}

fn config_for(vars: &[(&str, &str)], secrets: &[(&str, &str)]) -> Config {
    // No provider retries: each scripted answer is the only attempt (tests/api/resilience.rs has them).
    let mut all = vec![
        ("LLM_MAX_RETRIES", "0"),
        ("DATABASE_URL", "postgres://unused@127.0.0.1:1/unused"),
        ("INTERNAL_API_KEY", API_KEY),
        ("JWT_SECRET", JWT_SECRET),
    ];
    all.extend_from_slice(secrets);
    all.extend_from_slice(vars);
    Config::from_vars(&all).expect("test configuration is valid")
}

async fn app_for(pool: PgPool, kind: Kind) -> (TestApp, Upstreams) {
    let llm = FakeUpstream::start().await;
    let metadata = FakeUpstream::start().await;
    metadata.set_default(FakeResponse::json(200, json!({"access_token": "ya29.t", "expires_in": 3600})));
    let base = format!("{}/v1", llm.url);
    let config = match kind {
        Kind::OpenAi => config_for(
            &[
                ("LLM_PROVIDER", "openai"),
                ("OPENAI_BASE_URL", &base),
                ("OPENAI_MODEL", "gpt-test"),
                ("LOG_FORMAT", "text"),
            ],
            &[],
        ),
        Kind::Azure => config_for(
            &[("LLM_PROVIDER", "azure-openai"), ("LOG_FORMAT", "text")],
            &[
                ("AZURE_OPENAI_ENDPOINT", &llm.url),
                ("AZURE_OPENAI_DEPLOYMENT_NAME", "gpt-4o-prod"),
                ("AZURE_OPENAI_API_KEY", "azure-key-0123456789"),
            ],
        ),
        Kind::Vertex => config_for(
            &[
                ("LLM_PROVIDER", "vertex-ai"),
                ("VERTEX_PROJECT_ID", "p"),
                ("VERTEX_LOCATION", "europe-west4"),
                ("VERTEX_MODEL", "gemini-2.0-flash"),
                ("VERTEX_ENDPOINT", &llm.url),
                ("GCE_METADATA_HOST", &metadata.host),
                ("LOG_FORMAT", "text"),
            ],
            &[],
        ),
    };
    (app_with(pool, &config), Upstreams { llm, _metadata: metadata })
}

fn whole_answer(kind: Kind) -> FakeResponse {
    let text: String = PIECES.concat();
    match kind {
        Kind::OpenAi | Kind::Azure => FakeResponse::json(200, completion(&text, 12, 7)),
        Kind::Vertex => FakeResponse::json(
            200,
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": "STOP"}],
                   "usageMetadata": {"promptTokenCount": 12, "candidatesTokenCount": 7, "totalTokenCount": 19},
                   "modelVersion": "gpt-test"}),
        ),
    }
}

fn openai_chunk(delta: Value, finish_reason: Option<&str>) -> String {
    json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})
    .to_string()
}

/// The same answer streamed in the provider's format; `usage` false leaves the usage out.
fn streamed_events(kind: Kind, usage: bool) -> Vec<String> {
    match kind {
        Kind::OpenAi | Kind::Azure => {
            let mut out = Vec::new();
            if matches!(kind, Kind::Azure) {
                out.push(
                    json!({"id": "", "object": "", "created": 0, "model": "", "choices": [],
                           "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]})
                    .to_string(),
                );
            }
            out.push(openai_chunk(json!({"role": "assistant", "content": ""}), None));
            out.extend(PIECES.iter().map(|p| openai_chunk(json!({"content": p}), None)));
            out.push(openai_chunk(json!({}), Some("stop")));
            if usage {
                out.push(
                    json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test",
                           "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}})
                    .to_string(),
                );
            }
            out.push("[DONE]".to_owned());
            out
        }
        Kind::Vertex => {
            let n = PIECES.len();
            PIECES
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let mut event = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": p}]}}],
                                           "modelVersion": "gpt-test"});
                    if i + 1 == n {
                        event["candidates"][0]["finishReason"] = json!("STOP");
                        if usage {
                            event["usageMetadata"] =
                                json!({"promptTokenCount": 12, "candidatesTokenCount": 7, "totalTokenCount": 19});
                        }
                    }
                    event.to_string()
                })
                .collect()
        }
    }
}

async fn stored_texts(app: &TestApp, id: &str) -> Vec<(String, String)> {
    let got = app.get(&format!("/api/conversations/{id}"), &[("x-api-key", API_KEY)]).await;
    got.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap().to_owned(), m["content"]["text"].as_str().unwrap().to_owned()))
        .collect()
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

async fn streamed_equals_stored_equals_whole(pool: PgPool, kind: Kind) {
    let (app, up) = app_for(pool, kind).await;
    up.llm.push(whole_answer(kind));
    let whole = app.chat(json!({"user_message": "Tell me", "client_user_id": USER})).await;
    assert_eq!(whole.status, 200, "{kind:?}: {}", whole.body);

    up.llm.push(FakeResponse::sse(streamed_events(kind, true)));
    let reply =
        send_stream(&app, &proxy(), json!({"user_message": "Tell me", "client_user_id": USER, "stream": true})).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["content-type"], "text/event-stream");
    assert_eq!(reply.headers["cache-control"], "no-cache");
    assert_eq!(reply.headers["x-accel-buffering"], "no");
    assert_eq!(shape(&reply.events), ["conversation", "delta*", "done"], "{kind:?}: {:?}", reply.events);
    let deltas: Vec<&str> =
        reply.events.iter().filter(|e| e.event == "delta").map(|e| e.data["text"].as_str().unwrap()).collect();
    assert_eq!(deltas, PIECES, "{kind:?}: one delta per upstream chunk with text");

    let conversation = &reply.events[0].data;
    let id = conversation["conversation_id"].as_str().unwrap();
    assert_eq!(conversation["request_id"], reply.headers["x-request-id"].to_str().unwrap());
    let done = &last(&reply.events).data;
    // The done event is exactly the non-streamed body (same keys, same values but ids).
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(done), keys(&whole.body));
    assert_eq!(done["conversation_id"], id);
    assert_eq!(done["usage"], whole.body["usage"], "{kind:?}");
    assert_eq!(done["meta"]["model"], whole.body["meta"]["model"]);
    assert_eq!(done["meta"]["request_id"], conversation["request_id"]);
    let text = PIECES.concat();
    assert_eq!(streamed_text(&reply.events), text);
    assert_eq!(done["ai_response"], text.as_str());
    assert_eq!(whole.body["ai_response"], text.as_str());
    assert_eq!(stored_texts(&app, id).await, [("user".into(), "Tell me".into()), ("assistant".into(), text)]);

    // The upstream was asked to stream, with usage.
    let sent = &up.llm.requests()[1];
    match kind {
        Kind::Vertex => {
            assert!(sent.path.ends_with(":streamGenerateContent"), "{}", sent.path);
            assert_eq!(sent.query.as_deref(), Some("alt=sse"));
        }
        _ => {
            assert_eq!(sent.json()["stream"], true);
            assert_eq!(sent.json()["stream_options"], json!({"include_usage": true}));
        }
    }
    let (_, usage, title) = app.conversation_row(id).await;
    assert_eq!(usage.unwrap(), json!({"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19, "turns": 1}));
    assert_eq!(title.as_deref(), Some("Tell me"));
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn openai_streamed_text_equals_stored_and_whole_text(pool: PgPool) {
    streamed_equals_stored_equals_whole(pool, Kind::OpenAi).await;
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn azure_streamed_text_equals_stored_and_whole_text(pool: PgPool) {
    streamed_equals_stored_equals_whole(pool, Kind::Azure).await;
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn vertex_streamed_text_equals_stored_and_whole_text(pool: PgPool) {
    streamed_equals_stored_equals_whole(pool, Kind::Vertex).await;
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn mock_streams_word_by_word_and_matches_the_whole_answer(pool: PgPool) {
    let app = app(pool);
    let whole = app.chat(json!({"user_message": "Hello there", "client_user_id": USER})).await;
    let reply = send_stream(
        &app,
        &[("x-api-key", API_KEY), ("accept", "text/event-stream")],
        json!({"user_message": "Hello there", "client_user_id": USER}),
    )
    .await;
    assert_eq!(shape(&reply.events), ["conversation", "delta*", "done"]);
    let deltas = reply.events.iter().filter(|e| e.event == "delta").count();
    assert!(deltas > 5, "word by word: {deltas} deltas");
    assert_eq!(streamed_text(&reply.events), whole.body["ai_response"].as_str().unwrap());
    assert_eq!(last(&reply.events).data["ai_response"], whole.body["ai_response"]);
    assert_eq!(last(&reply.events).data["usage"], whole.body["usage"]);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn bearer_stream_ends_with_the_simple_shape(pool: PgPool) {
    let app = app(pool);
    let token = bearer(USER, 3600);
    let reply = send_stream(&app, &[("authorization", &token)], json!({"message": "Hi", "stream": true})).await;
    assert_eq!(reply.status, 200);
    let done = &last(&reply.events).data;
    let keys: Vec<&String> = done.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["conversation_id", "response"]);
    assert_eq!(done["response"].as_str().unwrap(), streamed_text(&reply.events));
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn failures_before_the_stream_are_plain_json(pool: PgPool) {
    let app = app(pool);
    let unknown = uuid::Uuid::new_v4().to_string();
    let cases = [
        (&proxy()[..], json!({"user_message": "  ", "client_user_id": USER, "stream": true}), 400, "message_empty"),
        (
            &proxy()[..],
            json!({"conversation_id": unknown, "user_message": "hi", "client_user_id": USER, "stream": true}),
            404,
            "not_found",
        ),
        (
            &[("x-api-key", "wrong-key-wrong-key")][..],
            json!({"user_message": "hi", "stream": true}),
            401,
            "unauthorized",
        ),
    ];
    for (headers, body, status, code) in cases {
        let mut headers = headers.to_vec();
        headers.push(("accept", "text/event-stream"));
        let reply = send_stream(&app, &headers, body.clone()).await;
        assert_eq!(reply.status, status, "{body}");
        assert!(reply.headers["content-type"].to_str().unwrap().starts_with("application/json"), "{body}");
        assert_eq!(reply.json["error"]["code"], code, "{body}");
    }
    assert_eq!(app.message_count().await, 0);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn failures_after_the_stream_began_are_error_events_and_store_nothing(pool: PgPool) {
    let (app, up) = app_for(pool, Kind::OpenAi).await;
    up.llm.push(whole_answer(Kind::OpenAi));
    let first = app.chat(json!({"user_message": "first", "client_user_id": USER})).await;
    let id = first.body["conversation_id"].as_str().unwrap().to_owned();
    let turn = json!({"conversation_id": id, "user_message": "next", "client_user_id": USER, "stream": true});

    // The provider refuses at once (rate limit): the stream had begun with `conversation`.
    up.llm.push(
        FakeResponse::json(429, json!({"error": {"message": "Rate limit reached", "type": "requests"}}))
            .with_header("retry-after", "3"),
    );
    // A content filter stops the answer midway.
    up.llm.push(FakeResponse::sse(vec![
        openai_chunk(json!({"content": "Here is how"}), None),
        openai_chunk(json!({}), Some("content_filter")),
        "[DONE]".into(),
    ]));
    // The upstream fails midway.
    up.llm.push(FakeResponse::sse(vec![
        openai_chunk(json!({"content": "Half"}), None),
        json!({"error": {"message": "The server had an error", "type": "server_error"}}).to_string(),
    ]));
    // The upstream stream ends before the answer does.
    up.llm.push(FakeResponse::sse(vec![openai_chunk(json!({"content": "Half"}), None)]));
    for code in ["upstream_rate_limited", "content_filtered", "upstream_error", "upstream_error"] {
        let reply = send_stream(&app, &proxy(), turn.clone()).await;
        assert_eq!(reply.status, 200);
        let error = last(&reply.events);
        assert_eq!(error.event, "error", "{code}: {:?}", reply.events);
        assert_eq!(error.data["error"]["code"], code, "{:?}", reply.events);
        assert_eq!(error.data["error"]["request_id"], reply.headers["x-request-id"].to_str().unwrap());
        assert!(!error.data["error"]["message"].as_str().unwrap().is_empty());
        assert_eq!(reply.events[0].event, "conversation");
    }
    assert_eq!(stored_texts(&app, &id).await.len(), 2, "nothing of the failed turns is stored");
    // And the conversation is free again.
    up.llm.push(whole_answer(Kind::OpenAi));
    let next = app.chat(json!({"conversation_id": id, "user_message": "again", "client_user_id": USER})).await;
    assert_eq!(next.status, 200, "{}", next.body);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn missing_usage_is_estimated_and_marked(pool: PgPool) {
    for kind in [Kind::OpenAi, Kind::Vertex] {
        let (app, up) = app_for(pool.clone(), kind).await;
        up.llm.push(FakeResponse::sse(streamed_events(kind, false)));
        let reply = send_stream(
            &app,
            &proxy(),
            json!({"user_message": "How are you?", "client_user_id": USER, "stream": true}),
        )
        .await;
        let done = &last(&reply.events).data;
        assert_eq!(last(&reply.events).event, "done", "{:?}", reply.events);
        // The mock's tokenizer: "How are you?" is 4 tokens; the answer 8.
        assert_eq!(done["usage"], json!({"prompt_tokens": 4, "completion_tokens": 8, "total_tokens": 12}), "{kind:?}");
        let (_, usage, _) = app.conversation_row(done["conversation_id"].as_str().unwrap()).await;
        assert_eq!(
            usage.unwrap(),
            json!({"prompt_tokens": 4, "completion_tokens": 8, "total_tokens": 12, "turns": 1, "estimated_turns": 1})
        );
    }
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn a_turn_streams_over_http2_to_the_provider_when_set(pool: PgPool) {
    let llm = FakeUpstream::start().await;
    let base = format!("{}/v1", llm.url);
    let config = config_for(
        &[
            ("LLM_PROVIDER", "openai"),
            ("OPENAI_BASE_URL", &base),
            ("OPENAI_MODEL", "gpt-test"),
            ("LLM_HTTP_VERSION", "http2"),
        ],
        &[],
    );
    let app = app_with(pool, &config);
    llm.push(FakeResponse::sse(streamed_events(Kind::OpenAi, true)));
    let reply =
        send_stream(&app, &proxy(), json!({"user_message": "Tell me", "client_user_id": USER, "stream": true})).await;
    assert_eq!(shape(&reply.events), ["conversation", "delta*", "done"], "{:?}", reply.events);
    let id = reply.events[0].data["conversation_id"].as_str().unwrap();
    assert_eq!(stored_texts(&app, id).await[1], ("assistant".into(), PIECES.concat()));
    llm.push(whole_answer(Kind::OpenAi));
    let whole = app.chat(json!({"user_message": "Tell me", "client_user_id": USER})).await;
    assert_eq!(whole.body["ai_response"], PIECES.concat().as_str());
    let seen = llm.requests();
    assert!(seen.iter().all(|r| r.version == http::Version::HTTP_2), "{:?}", seen.iter().map(|r| r.version));
    assert_eq!(seen[0].peer, seen[1].peer, "both calls on one HTTP/2 connection");

    // The connection set's gauges: a call held by the upstream is in flight until answered.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    llm.push(whole_answer(Kind::OpenAi).held_until(gate.clone()));
    let held = {
        let app = app.router.clone();
        let request = chat_request(&proxy(), json!({"user_message": "Hold on", "client_user_id": USER}));
        tokio::spawn(async move { app.oneshot(request).await.unwrap().status() })
    };
    while llm.requests().len() < 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let during = app.metrics().await;
    assert!(during.lines().any(|l| l == "colloquy_provider_calls_in_flight 1"), "{during}");
    assert!(during.lines().any(|l| l == "colloquy_provider_clients 1"), "{during}");
    gate.add_permits(1);
    assert_eq!(held.await.unwrap(), StatusCode::OK);
    let after = app.metrics().await;
    assert!(after.lines().any(|l| l == "colloquy_provider_calls_in_flight 0"), "{after}");
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn client_disconnect_stores_nothing_and_closes_the_upstream_connection(pool: PgPool) {
    let (app, up) = app_for(pool, Kind::OpenAi).await;
    up.llm.push(whole_answer(Kind::OpenAi));
    let first = app.chat(json!({"user_message": "first", "client_user_id": USER})).await;
    let id = first.body["conversation_id"].as_str().unwrap().to_owned();

    // A slow upstream: a chunk every 100 ms, 100 of them.
    let mut slow: Vec<String> = (0..100).map(|i| openai_chunk(json!({"content": format!("w{i} ")}), None)).collect();
    slow.push(openai_chunk(json!({}), Some("stop")));
    slow.push("[DONE]".into());
    up.llm.push(FakeResponse::sse(slow).with_chunk_delay(Duration::from_millis(100)));
    let turn = json!({"conversation_id": id, "user_message": "long one", "client_user_id": USER, "stream": true});
    let response = app.router.clone().oneshot(chat_request(&proxy(), turn)).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = events(response.into_body());
    assert_eq!(stream.next().await.unwrap().event, "conversation");
    assert_eq!(stream.next().await.unwrap().data["text"], "w0 ");
    assert_eq!(stream.next().await.unwrap().data["text"], "w1 ");
    drop(stream); // the client goes away

    assert_eq!(up.llm.wait_dropped_streams(1, Duration::from_secs(5)).await, 1, "the upstream saw its stream closed");
    assert_eq!(stored_texts(&app, &id).await.len(), 2, "nothing of the cancelled turn is stored");
    // The claim was released: the next turn goes through at once.
    up.llm.push(whole_answer(Kind::OpenAi));
    let started = std::time::Instant::now();
    let next = app.chat(json!({"conversation_id": id, "user_message": "again", "client_user_id": USER})).await;
    assert_eq!(next.status, 200, "{}", next.body);
    assert!(started.elapsed() < Duration::from_secs(5), "waited {:?}", started.elapsed());
    let metrics = app.metrics().await;
    assert!(
        metrics.lines().any(|l| l.starts_with(r#"colloquy_chat_stream_duration_seconds_count{outcome="cancelled"} 1"#)),
        "{metrics}"
    );
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn stream_metrics_time_to_first_token_and_outcomes(pool: PgPool) {
    let (app, up) = app_for(pool, Kind::OpenAi).await;
    up.llm.push(FakeResponse::sse(streamed_events(Kind::OpenAi, true)));
    send_stream(&app, &proxy(), json!({"user_message": "a", "client_user_id": USER, "stream": true})).await;
    up.llm.push(FakeResponse::json(500, json!({"error": {"message": "boom"}})));
    send_stream(&app, &proxy(), json!({"user_message": "b", "client_user_id": USER, "stream": true})).await;
    let text = app.metrics().await;
    let has = |needle: &str| text.lines().any(|l| l.starts_with(needle));
    assert!(
        has(
            r#"gen_ai_server_time_to_first_token_seconds_count{gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="gpt-test"} 1"#
        ),
        "{text}"
    );
    assert!(has(r#"colloquy_chat_stream_duration_seconds_count{outcome="completed"} 1"#), "{text}");
    assert!(has(r#"colloquy_chat_stream_duration_seconds_count{outcome="failed"} 1"#), "{text}");
    assert!(
        has(
            r#"gen_ai_client_operation_duration_seconds_count{error_type="",gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="gpt-test"} 1"#
        ),
        "{text}"
    );
    assert!(
        has(
            r#"gen_ai_client_operation_duration_seconds_count{error_type="error",gen_ai_operation_name="chat",gen_ai_provider_name="openai",gen_ai_request_model="gpt-test"} 1"#
        ),
        "{text}"
    );
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn the_openapi_document_describes_the_event_stream(pool: PgPool) {
    let app = app(pool);
    let spec = app.get("/openapi.json", &[]).await;
    let ok = &spec.body["paths"]["/api/ai/chat"]["post"]["responses"]["200"];
    assert!(ok["content"].get("text/event-stream").is_some(), "{ok}");
    assert!(ok["content"].get("application/json").is_some(), "{ok}");
    assert!(spec.body["paths"]["/api/ai/chat"]["post"]["responses"].get("409").is_some());
    let schemas = &spec.body["components"]["schemas"];
    for name in
        ["ChatEventStream", "StreamConversationEvent", "StreamDeltaEvent", "ProxyChatResponse", "SimpleChatResponse"]
    {
        assert!(schemas.get(name).is_some(), "{name} missing from the components");
    }
    let request = &schemas["ChatRequest"]["properties"];
    assert!(request.get("stream").is_some(), "{request}");
}

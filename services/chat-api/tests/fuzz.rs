//! Hostile input, generated (proptest strategies, run without shrinking so
//! the targets can be async): request bodies through the real router, whole
//! and streamed provider answers through each provider against a fake
//! upstream, and bearer tokens through the JWT verifier. Every target checks
//! that nothing panics, that answers keep their contract (a 4xx with a JSON
//! error, a stream that ends once), and that nothing grows without bound
//! (provider bodies are capped).
//!
//! Each target runs `FUZZ_CASES` cases (default 200) or for `FUZZ_SECONDS`
//! (default 10), whichever ends first: bounded in `cargo test`, longer from
//! `scripts/fuzz.sh`. A failure prints the input that caused it.

mod support;

#[path = "api/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::time::{Duration, Instant};

use axum::http::Method;
use bytes::Bytes;
use chat_api::config::{JwtConfig, Secret};
use chat_api::llm::openai::{Endpoint, OpenAiChat};
use chat_api::llm::vertex::VertexAi;
use chat_api::llm::{ChatMessage, ChatProvider, CompletionRequest, ProviderError, Role, StreamEvent};
use futures::StreamExt;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Value, json};
use sqlx::PgPool;

use harness::{API_KEY, USER};
use support::{FakeResponse, FakeUpstream};

/// Runs `check` on values drawn from `strategy` until the case count or the
/// time budget is reached.
async fn fuzz<S, F, Fut>(name: &str, strategy: S, mut check: F)
where
    S: Strategy,
    S::Value: std::fmt::Debug + Clone,
    F: FnMut(S::Value) -> Fut,
    Fut: Future<Output = ()>,
{
    let env = |name: &str, default: u64| std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let (cases, budget) = (env("FUZZ_CASES", 200), Duration::from_secs(env("FUZZ_SECONDS", 10)));
    let mut runner = TestRunner::default();
    let started = Instant::now();
    let mut ran = 0;
    while ran < cases && started.elapsed() < budget {
        let value = strategy.new_tree(&mut runner).expect("strategy makes values").current();
        check(value).await;
        ran += 1;
    }
    eprintln!("{name}: {ran} cases in {:?}", started.elapsed());
}

/// Any JSON value, nested a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,40}".prop_map(Value::String),
        Just(Value::String(USER.into())),
        Just(Value::String("x".repeat(40_000))),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::hash_map(".{0,12}", inner, 0..6).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A chat request body: the real fields with plausible or hostile values, and extra keys.
fn chat_body() -> impl Strategy<Value = Value> {
    let field = |good: BoxedStrategy<Value>| prop::option::of(prop_oneof![3 => good, 1 => any_json()]);
    (
        field(prop_oneof![".{0,60}".prop_map(Value::String), Just(json!("   "))].boxed()),
        field(Just(json!(USER)).boxed()),
        field(prop_oneof![Just(json!(uuid::Uuid::new_v4())), Just(json!("not-a-uuid"))].boxed()),
        field(prop::collection::vec(".{0,20}".prop_map(Value::String), 0..5).prop_map(Value::Array).boxed()),
        field(any::<bool>().prop_map(Value::Bool).boxed()),
        prop::option::of(any_json()),
    )
        .prop_map(|(message, user, conversation, history, stream, extra)| {
            let mut body = serde_json::Map::new();
            for (key, value) in [
                ("user_message", message),
                ("client_user_id", user),
                ("conversation_id", conversation),
                ("history", history),
                ("stream", stream),
                ("extra", extra),
            ] {
                if let Some(v) = value {
                    body.insert(key.to_owned(), v);
                }
            }
            Value::Object(body)
        })
}

/// A raw body: JSON text, JSON cut short, deep nesting, or bytes.
fn raw_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        chat_body().prop_map(|v| v.to_string().into_bytes()),
        (chat_body(), any::<prop::sample::Index>()).prop_map(|(v, cut)| {
            let text = v.to_string().into_bytes();
            let at = cut.index(text.len() + 1);
            text[..at].to_vec()
        }),
        (1usize..5000).prop_map(|depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()),
        prop::collection::vec(any::<u8>(), 0..300),
    ]
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn request_bodies_get_an_answer_or_a_json_4xx(pool: PgPool) {
    let app = harness::app(pool);
    let routes = ["/api/ai/chat", "/api/ai/start-conversation"];
    fuzz("request bodies", (raw_body(), 0..routes.len()), |(body, route)| {
        let app = &app;
        async move {
            let headers = [("content-type", "application/json"), ("x-api-key", API_KEY)];
            let text = String::from_utf8_lossy(&body).into_owned();
            let reply = app.request(Method::POST, routes[route], &headers, Some(text.clone())).await;
            let shown = || format!("{} <- {}", reply.status, show(&text));
            assert!(!reply.status.is_server_error(), "{}: {}", shown(), reply.body);
            if reply.status.is_client_error() {
                let code = reply.body["error"]["code"].as_str();
                assert!(code.is_some_and(|c| !c.is_empty()), "no error code: {}: {}", shown(), reply.body);
            }
        }
    })
    .await;
}

fn conversation() -> CompletionRequest {
    CompletionRequest {
        messages: vec![ChatMessage::new(Role::User, "hi")],
        request_id: "fuzz".into(),
        traceparent: None,
    }
}

/// A provider answer body: JSON shaped like OpenAI's or Google's with hostile values, or bytes.
fn answer_body() -> impl Strategy<Value = Vec<u8>> {
    let openai = (any_json(), any_json(), prop::option::of(".{0,20}")).prop_map(|(content, usage, finish)| {
        json!({"model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
               "finish_reason": finish}], "usage": usage})
    });
    let vertex = (any_json(), any_json(), any_json()).prop_map(|(parts, usage, feedback)| {
        json!({"candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP"}],
               "usageMetadata": usage, "promptFeedback": feedback})
    });
    let error = any_json().prop_map(|e| json!({"error": e}));
    prop_oneof![
        openai.prop_map(|v| v.to_string().into_bytes()),
        vertex.prop_map(|v| v.to_string().into_bytes()),
        error.prop_map(|v| v.to_string().into_bytes()),
        any_json().prop_map(|v| v.to_string().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..200),
    ]
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![3 => Just(200u16), 1 => prop::sample::select(vec![400u16, 401, 403, 404, 429, 500, 502, 503])]
}

/// The start of an input, for failure messages.
fn show(input: &dyn std::fmt::Debug) -> String {
    let text = format!("{input:?}");
    text.chars().take(600).collect()
}

/// An error's text is bounded (upstream messages are cut) and never empty.
fn assert_sane(err: &ProviderError, input: &dyn std::fmt::Debug) {
    let text = err.to_string();
    assert!(!text.is_empty() && text.len() < 2000, "{} chars ({:.2500}) for {}", text.len(), text, show(input));
}

struct Providers {
    openai: OpenAiChat,
    vertex: VertexAi,
    _metadata: FakeUpstream,
}

fn providers(upstream: &FakeUpstream, metadata: FakeUpstream) -> Providers {
    let connections = chat_api::llm::Connections::new(Default::default()).unwrap();
    let clients = chat_api::llm::Clients { connections: connections.clone(), http: reqwest::Client::new() };
    let timeout = Duration::from_secs(5);
    let endpoint = Endpoint::compatible(&format!("{}/v1", upstream.url), "m", Some(Secret::new("sk-fuzz-key-0123")));
    let url = upstream.url.clone();
    Providers {
        openai: OpenAiChat::new(connections, endpoint, timeout),
        vertex: VertexAi::new(&clients, url, "p".into(), "l".into(), "m".into(), &metadata.host, timeout),
        _metadata: metadata,
    }
}

async fn metadata() -> FakeUpstream {
    let metadata = FakeUpstream::start().await;
    metadata.set_default(FakeResponse::json(200, json!({"access_token": "ya29.fuzz", "expires_in": 3600})));
    metadata
}

#[tokio::test]
async fn whole_provider_answers_parse_or_fail_cleanly() {
    let upstream = FakeUpstream::start().await;
    let p = providers(&upstream, metadata().await);
    fuzz("provider answers", (status(), answer_body()), |(status, body)| {
        let (upstream, p) = (&upstream, &p);
        async move {
            for provider in [&p.openai as &dyn ChatProvider, &p.vertex] {
                upstream.push(FakeResponse::raw(status, "application/json", body.clone()));
                match provider.complete(&conversation()).await {
                    Ok(c) => assert!(!c.text.is_empty(), "empty success for {status} {}", show(&body)),
                    Err(e) => assert_sane(&e, &(status, String::from_utf8_lossy(&body))),
                }
            }
        }
    })
    .await;
}

/// An event stream: events (valid chunks, odd ones, bytes) cut at arbitrary places.
fn event_stream() -> impl Strategy<Value = Vec<Bytes>> {
    let event = prop_oneof![
        (".{0,10}", prop::option::of(".{0,8}")).prop_map(|(text, finish)| {
            let chunk = json!({"model": "m", "choices": [{"index": 0, "delta": {"content": text},
                               "finish_reason": finish}]});
            format!("data: {chunk}\n\n")
        }),
        ".{0,10}".prop_map(|text| {
            let chunk = json!({"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}}]});
            format!("data: {chunk}\n\n")
        }),
        any_json().prop_map(|v| format!("data: {v}\n\n")),
        Just("data: [DONE]\n\n".to_owned()),
        Just(": keep-alive\n\n".to_owned()),
        "[a-z:\\n\\r ]{0,20}",
    ];
    (prop::collection::vec(event, 0..12), prop::collection::vec(any::<prop::sample::Index>(), 0..6)).prop_map(
        |(events, cuts)| {
            let bytes = events.concat().into_bytes();
            let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
            at.sort_unstable();
            at.dedup();
            let mut chunks = Vec::new();
            let mut start = 0;
            for cut in at.into_iter().chain([bytes.len()]) {
                if cut > start {
                    chunks.push(Bytes::copy_from_slice(&bytes[start..cut]));
                    start = cut;
                }
            }
            chunks
        },
    )
}

#[tokio::test]
async fn streamed_provider_answers_end_exactly_once() {
    let upstream = FakeUpstream::start().await;
    let p = providers(&upstream, metadata().await);
    fuzz("event streams", event_stream(), |chunks| {
        let (upstream, p) = (&upstream, &p);
        async move {
            for provider in [&p.openai as &dyn ChatProvider, &p.vertex] {
                upstream.push(FakeResponse::sse_chunks(chunks.clone()));
                let mut stream = match provider.stream(&conversation()).await {
                    Ok(stream) => stream,
                    Err(e) => {
                        assert_sane(&e, &chunks);
                        continue;
                    }
                };
                let mut deltas = 0;
                loop {
                    match stream.next().await {
                        Some(Ok(StreamEvent::Delta(text))) => {
                            assert!(!text.is_empty(), "empty delta for {}", show(&chunks));
                            deltas += 1;
                        }
                        Some(Ok(StreamEvent::Done { .. })) => {
                            assert!(deltas > 0, "Done without text for {}", show(&chunks));
                            break;
                        }
                        Some(Err(e)) => {
                            assert_sane(&e, &chunks);
                            break;
                        }
                        None => panic!("the stream ended without Done or an error for {}", show(&chunks)),
                    }
                }
                assert!(stream.next().await.is_none(), "events after the end for {}", show(&chunks));
            }
        }
    })
    .await;
}

#[tokio::test]
async fn an_endless_answer_is_cut_at_the_size_cap() {
    // One event that never ends: 17 MiB without a blank line.
    let upstream = FakeUpstream::start().await;
    let p = providers(&upstream, metadata().await);
    let piece = Bytes::from(vec![b'a'; 1024 * 1024]);
    let mut chunks = vec![Bytes::from_static(b"data: ")];
    chunks.extend(std::iter::repeat_n(piece.clone(), 17));
    upstream.push(FakeResponse::sse_chunks(chunks));
    let err = match p.openai.stream(&conversation()).await {
        Ok(mut stream) => stream.next().await.expect("an event").unwrap_err(),
        Err(e) => e,
    };
    assert!(matches!(&err, ProviderError::InvalidResponse(m) if m.contains("larger than")), "{err:?}");
    // And a whole answer as large.
    upstream.push(FakeResponse::raw(200, "application/json", vec![b' '; 17 * 1024 * 1024]));
    let err = p.openai.complete(&conversation()).await.unwrap_err();
    assert!(matches!(&err, ProviderError::InvalidResponse(m) if m.contains("larger than")), "{err:?}");
}

const JWT_SECRET: &str = "fuzz-jwt-secret-that-is-long-enough-32";

fn sign(header: &Value, claims: &Value) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
    let message =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256).unwrap();
    format!("{message}.{signature}")
}

/// Tokens: random text, three random segments, correctly signed hostile
/// claims or headers, and valid tokens with one byte changed; with whether
/// they must pass (`Some(true)`), must fail (`Some(false)`), or either.
fn token() -> impl Strategy<Value = (String, Option<bool>)> {
    let now = chrono::Utc::now().timestamp();
    let valid_claims = json!({"sub": "user-1", "exp": now + 3600});
    let valid = sign(&json!({"alg": "HS256", "typ": "JWT"}), &valid_claims);
    prop_oneof![
        ".{0,200}".prop_map(|t| (t, Some(false))),
        ("[A-Za-z0-9_-]{0,60}", "[A-Za-z0-9_-]{0,200}", "[A-Za-z0-9_-]{0,60}")
            .prop_map(|(a, b, c)| (format!("{a}.{b}.{c}"), Some(false))),
        (any_json(), any_json(), prop::option::of(any_json())).prop_map(move |(sub, exp, nbf)| {
            let mut claims = json!({"sub": sub, "exp": exp});
            if let Some(nbf) = nbf {
                claims["nbf"] = nbf;
            }
            (sign(&json!({"alg": "HS256"}), &claims), None)
        }),
        (".{1,30}", (now + 300)..(now + 100_000)).prop_map(move |(sub, exp)| {
            (sign(&json!({"alg": "HS256", "typ": "JWT"}), &json!({"sub": sub, "exp": exp})), Some(true))
        }),
        any_json().prop_map(move |claims| {
            let ok = claims["sub"].as_str().is_some_and(|s| !s.is_empty())
                && claims["exp"].as_i64().is_some_and(|e| e > now + 120)
                && claims.get("nbf").is_none_or(|n| n.as_i64().is_some_and(|n| n < now - 120));
            (sign(&json!({"alg": "HS256"}), &claims), ok.then_some(true))
        }),
        any_json().prop_map(move |header| (sign(&header, &valid_claims), None)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(move |(at, byte)| {
            let mut bytes = valid.clone().into_bytes();
            let i = at.index(bytes.len());
            let changed = bytes[i] != byte;
            bytes[i] = byte;
            (String::from_utf8_lossy(&bytes).into_owned(), Some(!changed))
        }),
    ]
}

#[tokio::test]
async fn bearer_tokens_verify_or_fail_cleanly() {
    let config = JwtConfig { secret: Some(Secret::new(JWT_SECRET)), ..JwtConfig::default() };
    let verifier = chat_api::auth::jwt::JwtVerifier::new(&config, reqwest::Client::new()).unwrap();
    fuzz("bearer tokens", token(), |(token, valid)| {
        let verifier = &verifier;
        async move {
            let result = verifier.verify(&token).await;
            if let Some(valid) = valid {
                assert_eq!(result.is_ok(), valid, "{token} -> {result:?}");
            }
        }
    })
    .await;
}

/// What the request fuzzing found: PostgreSQL text cannot hold NUL, so a
/// message or history item with one was a 500 (and a half-done turn). Any
/// string of the body with a NUL is refused now, before the handler.
#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn a_nul_character_is_a_400_not_a_500(pool: PgPool) {
    let app = harness::app(pool);
    let cases = [
        ("/api/ai/chat", json!({"user_message": "a\u{0}b", "client_user_id": USER}), "invalid_request"),
        (
            "/api/ai/chat",
            json!({"user_message": "hi", "client_user_id": USER, "history": ["x\u{0}", "y"]}),
            "invalid_request",
        ),
        ("/api/ai/start-conversation", json!({"client_user_id": USER, "history": ["\u{0}"]}), "invalid_request"),
    ];
    for (route, body, code) in cases {
        let reply = app.post(route, &[("x-api-key", API_KEY)], body.clone()).await;
        assert_eq!((reply.status.as_u16(), reply.error_code()), (400, code), "{body}: {}", reply.body);
    }
    assert_eq!(app.message_count().await, 0);
}

/// What the answer fuzzing found: upstream texts (a block reason, a finish
/// reason, a JSON value quoted by a parse error) went whole into the error
/// the caller sees. They are cut now.
#[tokio::test]
async fn huge_upstream_texts_are_cut_in_errors() {
    let upstream = FakeUpstream::start().await;
    let p = providers(&upstream, metadata().await);
    let huge = "x".repeat(50_000);
    let bodies = [
        json!({"promptFeedback": {"blockReason": huge, "blockReasonMessage": huge}}),
        json!({"candidates": [{"content": {"role": "model", "parts": []}, "finishReason": huge}]}),
        json!({"candidates": [{"content": {"role": "model", "parts": [huge]}}]}),
    ];
    for body in bodies {
        upstream.push(FakeResponse::json(200, body.clone()));
        let err = p.vertex.complete(&conversation()).await.unwrap_err();
        assert_sane(&err, &show(&body));
    }
    let openai =
        json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": null}, "finish_reason": huge}]});
    upstream.push(FakeResponse::json(200, openai.clone()));
    assert_sane(&p.openai.complete(&conversation()).await.unwrap_err(), &show(&openai));
}

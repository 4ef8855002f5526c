//! A streamed answer with an `Idempotency-Key` is atomic: its turn and its
//! recorded events commit in one transaction, before the final event (`done`,
//! `response.completed`) is sent. A failed commit stores neither and sends an
//! `error` event instead; a stream too long to record stores its turn and
//! frees its key; a client gone mid-way leaves nothing and frees the key.

use std::time::Duration;

use axum::http::Method;
use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt;

use crate::harness::*;
use crate::idempotency::{allow_completions, refuse_completions};
use crate::stream::{chat_request, send_stream};
use crate::stream_guards::{answer, chunk, current_key_state, key_state, names, streamed};
use crate::support::FakeResponse;
use crate::support::sse::events;
use crate::v1::{as_user, key};

fn keyed(key: &str) -> [(&str, &str); 2] {
    [("x-api-key", API_KEY), ("idempotency-key", key)]
}

async fn conversations(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM chatbot_conversation_audit").fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn a_streamed_turn_is_not_stored_when_its_record_cannot_be(pool: PgPool) {
    refuse_completions(&pool).await;
    let (app, upstream) = app_with_upstream(pool.clone(), &[]).await;
    upstream.push(answer());
    let failed = send_stream(&app, &keyed("atomic-s1"), streamed("once")).await;
    assert_eq!(failed.status, 200);
    let sent = names(&failed.events);
    assert_eq!((sent.first(), sent.last()), (Some(&"conversation"), Some(&"error")), "{sent:?}");
    assert!(!sent.contains(&"done"), "{sent:?}");
    let error = &failed.events.last().unwrap().data["error"];
    assert_eq!(error["code"], "internal_error", "{error}");
    assert_eq!(error["request_id"], failed.events[0].data["request_id"]);
    assert_eq!(app.message_count().await, 0, "the turn was rolled back with its record");
    assert_eq!(conversations(&pool).await, 0);
    key_state(&pool, "atomic-s1", None).await;

    // The key is free: a retry runs the turn, once.
    allow_completions(&pool).await;
    upstream.push(answer());
    let retried = send_stream(&app, &keyed("atomic-s1"), streamed("once")).await;
    assert_eq!(names(&retried.events).last(), Some(&"done"), "{:?}", retried.events);
    assert!(retried.headers.get("idempotent-replayed").is_none(), "run again, not replayed");
    assert_eq!(app.message_count().await, 2);
    assert_eq!(upstream.requests().len(), 2);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn the_key_is_completed_before_done_is_sent_and_a_repeat_replays_it(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool.clone(), &[]).await;
    upstream.push(answer());
    let request = || chat_request(&keyed("atomic-s2"), streamed("once"));
    let response = app.router.clone().oneshot(request()).await.unwrap();
    let mut stream = events(response.into_body());
    while let Some(event) = stream.next().await {
        if event.event == "done" {
            // Committed before the client could see it.
            assert_eq!(current_key_state(&pool, "atomic-s2").await.as_deref(), Some("completed"));
            assert_eq!(app.message_count().await, 2);
        }
    }
    let first = app.router.clone().oneshot(request()).await.unwrap();
    assert_eq!(first.headers()["idempotent-replayed"], "true");
    let replayed = axum::body::to_bytes(first.into_body(), usize::MAX).await.unwrap();
    let again = app.router.clone().oneshot(request()).await.unwrap();
    assert_eq!(axum::body::to_bytes(again.into_body(), usize::MAX).await.unwrap(), replayed);
    let text = String::from_utf8(replayed.to_vec()).unwrap();
    assert!(text.contains("event: done\n"), "{text}");
    assert_eq!(upstream.requests().len(), 1, "the provider answered once");
    assert_eq!(app.message_count().await, 2, "the turn is stored once");
}

/// The names and data of a `/v1` stream's events.
fn v1_events(bytes: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(bytes).unwrap();
    let names = text.lines().filter_map(|l| l.strip_prefix("event: ")).map(str::to_owned);
    let data = text.lines().filter_map(|l| l.strip_prefix("data: ")).map(|d| serde_json::from_str(d).unwrap());
    names.zip(data).collect()
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn a_v1_streamed_response_is_atomic_too(pool: PgPool) {
    refuse_completions(&pool).await;
    let app = app(pool.clone());
    let me = as_user(&key(), USER);
    let mut headers: Vec<(&str, &str)> = me.iter().map(|(k, v)| (*k, v.as_str())).collect();
    headers.push(("idempotency-key", "atomic-v1"));
    headers.push(("content-type", "application/json"));
    let body = json!({"input": "Tell me a story", "stream": true}).to_string();
    let send = || send_raw(&app.router, Method::POST, "/v1/responses", &headers, Some(body.clone()));

    let (status, _, bytes) = send().await;
    assert_eq!(status, 200);
    let failed = v1_events(&bytes);
    let (last, data) = failed.last().unwrap();
    assert_eq!(last, "error", "{failed:?}");
    assert!(!failed.iter().any(|(name, _)| name == "response.completed"));
    assert_eq!((data["type"].as_str(), data["code"].as_str()), (Some("error"), Some("internal_error")), "{data}");
    assert_eq!(data["sequence_number"], failed.len() - 1, "numbered in the completed event's place");
    assert_eq!(app.message_count().await, 0);
    key_state(&pool, "atomic-v1", None).await;

    allow_completions(&pool).await;
    let (_, reply_headers, bytes) = send().await;
    assert!(reply_headers.get("idempotent-replayed").is_none());
    assert_eq!(v1_events(&bytes).last().unwrap().0, "response.completed");
    assert_eq!(app.message_count().await, 2);
    // Completed with the turn: the repeat right after replays it.
    let (status, reply_headers, again) = send().await;
    assert_eq!(status, 200);
    assert_eq!(reply_headers["idempotent-replayed"], "true");
    assert_eq!(again, bytes);
    assert_eq!(app.message_count().await, 2);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn a_stream_too_long_to_record_stores_its_turn_and_frees_its_key(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool.clone(), &[]).await;
    // 5 MiB of answer: its deltas and its `done` (the whole answer again) are over 8 MiB.
    let piece = "x".repeat(1024 * 1024);
    let mut long: Vec<String> = (0..5).map(|_| chunk(json!({"content": piece}), None)).collect();
    long.push(chunk(json!({}), Some("stop")));
    long.push("[DONE]".into());
    upstream.push(FakeResponse::sse(long));
    let first = send_stream(&app, &keyed("atomic-long"), streamed("a lot")).await;
    assert_eq!(names(&first.events).last(), Some(&"done"));
    assert_eq!(app.message_count().await, 2, "the turn is stored");
    key_state(&pool, "atomic-long", None).await;
    let metrics = app.metrics().await;
    assert!(metrics.contains(r#"colloquy_idempotency_requests_total{outcome="too_large"} 1"#), "{metrics}");
    assert!(!metrics.contains(r#"outcome="stored""#), "{metrics}");

    // Nothing to replay: the same key runs again.
    upstream.push(answer());
    let again = send_stream(&app, &keyed("atomic-long"), streamed("a lot")).await;
    assert!(again.headers.get("idempotent-replayed").is_none());
    assert_eq!(names(&again.events).last(), Some(&"done"));
    assert_eq!(app.message_count().await, 4);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn a_client_gone_mid_stream_leaves_nothing_and_frees_the_key(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool.clone(), &[]).await;
    let mut slow: Vec<String> = (0..100).map(|i| chunk(json!({"content": format!("w{i} ")}), None)).collect();
    slow.push(chunk(json!({}), Some("stop")));
    slow.push("[DONE]".into());
    upstream.push(FakeResponse::sse(slow).with_chunk_delay(Duration::from_millis(100)));
    let response = app.router.clone().oneshot(chat_request(&keyed("atomic-gone"), streamed("long"))).await.unwrap();
    let mut stream = events(response.into_body());
    assert_eq!(stream.next().await.unwrap().event, "conversation");
    assert_eq!(stream.next().await.unwrap().data["text"], "w0 ");
    drop(stream);

    key_state(&pool, "atomic-gone", None).await;
    assert_eq!(app.message_count().await, 0);
    upstream.push(answer());
    let retried = send_stream(&app, &keyed("atomic-gone"), streamed("long")).await;
    assert!(retried.headers.get("idempotent-replayed").is_none());
    assert_eq!(names(&retried.events).last(), Some(&"done"));
    assert_eq!(app.message_count().await, 2);
}

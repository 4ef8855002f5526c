//! Streamed turns under the request guards: an `Idempotency-Key` replays a
//! stored stream, the in-flight limit counts a stream until it ends, and a
//! stream settles its real token usage with the rate limiter.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use tower::ServiceExt;
use uuid::Uuid;

use crate::harness::*;
use crate::stream::{chat_request, send_stream};
use crate::support::FakeResponse;
use crate::support::sse::{SseEvent, all_events, streamed_text};

pub fn chunk(delta: Value, finish_reason: Option<&str>) -> String {
    json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]})
    .to_string()
}

/// An OpenAI stream answering "Streamed once." and using 19 tokens.
pub fn answer() -> FakeResponse {
    FakeResponse::sse(vec![
        chunk(json!({"role": "assistant", "content": ""}), None),
        chunk(json!({"content": "Streamed "}), None),
        chunk(json!({"content": "once."}), None),
        chunk(json!({}), Some("stop")),
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test", "choices": [],
               "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}})
        .to_string(),
        "[DONE]".to_owned(),
    ])
}

pub fn streamed(message: &str) -> Value {
    json!({"user_message": message, "client_user_id": USER, "stream": true})
}

pub fn names(events: &[SseEvent]) -> Vec<&str> {
    events.iter().map(|e| e.event.as_str()).collect()
}

/// The state of the key's row (`None`: gone).
pub async fn current_key_state(pool: &PgPool, key: &str) -> Option<String> {
    sqlx::query_scalar("SELECT state FROM colloquy_idempotency_keys WHERE idempotency_key = $1")
        .bind(key)
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// Waits until the key's row is in `state` (`None`: gone).
pub async fn key_state(pool: &PgPool, key: &str, want: Option<&str>) {
    for _ in 0..250 {
        if current_key_state(pool, key).await.as_deref() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("key {key} never reached {want:?}");
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn a_streamed_turn_with_a_key_is_replayed_not_run_again(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool.clone(), &[]).await;
    upstream.push(answer());
    let headers = [("x-api-key", API_KEY), ("idempotency-key", "stream-1")];
    let first = send_stream(&app, &headers, streamed("tell me once")).await;
    assert_eq!(first.status, 200);
    assert_eq!(names(&first.events).last(), Some(&"done"), "{:?}", first.events);
    assert_eq!(streamed_text(&first.events), "Streamed once.");
    assert!(first.headers.get("idempotent-replayed").is_none());
    key_state(&pool, "stream-1", Some("completed")).await;

    let again = send_stream(&app, &headers, streamed("tell me once")).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert!(again.headers["content-type"].to_str().unwrap().starts_with("text/event-stream"));
    assert_eq!(names(&again.events), names(&first.events));
    assert_eq!(again.events.last().unwrap().data, first.events.last().unwrap().data, "the same done event");
    assert_eq!(upstream.requests().len(), 1, "the provider answered once");
    assert_eq!(app.message_count().await, 2, "the turn is stored once");

    // The same key for the whole (not streamed) answer is another request.
    let whole =
        app.post("/api/ai/chat", &headers, json!({"user_message": "tell me once", "client_user_id": USER})).await;
    assert_eq!(whole.status, 422, "{}", whole.body);
    assert_eq!(whole.error_code(), "idempotency_key_reused");
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn a_stream_that_fails_frees_its_key(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool.clone(), &[]).await;
    upstream.push(FakeResponse::json(500, json!({"error": {"message": "boom", "type": "server_error"}})));
    let headers = [("x-api-key", API_KEY), ("idempotency-key", "stream-2")];
    let failed = send_stream(&app, &headers, streamed("try me")).await;
    assert_eq!(names(&failed.events).last(), Some(&"error"), "{:?}", failed.events);
    key_state(&pool, "stream-2", None).await;

    upstream.push(answer());
    let retried = send_stream(&app, &headers, streamed("try me")).await;
    assert_eq!(names(&retried.events).last(), Some(&"done"), "{:?}", retried.events);
    assert!(retried.headers.get("idempotent-replayed").is_none(), "run again, not replayed");
    assert_eq!(app.message_count().await, 2);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn a_stream_counts_against_max_in_flight_until_it_ends(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[("MAX_IN_FLIGHT", "1")]).await;
    upstream.push(answer().with_chunk_delay(Duration::from_millis(150)));
    let response =
        app.router.clone().oneshot(chat_request(&[("x-api-key", API_KEY)], streamed("slowly"))).await.unwrap();
    assert_eq!(response.status(), 200);
    // The head is out; the stream still runs: no room for another request.
    let busy = app.get(&format!("/api/conversations?client_user_id={USER}"), &[("x-api-key", API_KEY)]).await;
    assert_eq!(busy.status, 503, "{}", busy.body);
    assert_eq!(busy.error_code(), "overloaded");
    let events = all_events(response.into_body()).await;
    assert_eq!(names(&events).last(), Some(&"done"));
    let free = app.get(&format!("/api/conversations?client_user_id={USER}"), &[("x-api-key", API_KEY)]).await;
    assert_eq!(free.status, 200, "{}", free.body);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn a_stream_settles_its_real_token_usage(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool.clone(), &[("RATE_LIMIT_TPM", "100000")]).await;
    upstream.push(answer());
    let reply = send_stream(&app, &[("x-api-key", API_KEY)], streamed("count me")).await;
    assert_eq!(names(&reply.events).last(), Some(&"done"));
    assert_eq!(reply.headers["x-ratelimit-limit-tokens"], "100000");
    let user = Uuid::parse_str(USER).unwrap();
    for _ in 0..250 {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT last_turn_tokens FROM colloquy_rate_limits WHERE user_id = $1")
                .bind(user)
                .fetch_optional(&pool)
                .await
                .unwrap();
        if last == Some(19) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the streamed turn's usage (19 tokens) was never settled");
}

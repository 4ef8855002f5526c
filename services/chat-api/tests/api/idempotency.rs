//! `Idempotency-Key` on the turn routes: replay, mismatch, in-flight repeats,
//! release on failure, atomicity with the turn, expiry, two replicas.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;

use crate::harness::*;
use crate::support::FakeResponse;

fn keyed(key: &str) -> [(&str, &str); 2] {
    [("x-api-key", API_KEY), ("idempotency-key", key)]
}

/// Makes recording a response fail: a trigger refuses to complete any key
/// (until [`allow_completions`]).
pub async fn refuse_completions(pool: &PgPool) {
    sqlx::query(
        "CREATE FUNCTION refuse_completion() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.state = 'completed' THEN RAISE EXCEPTION 'no completions today'; END IF; RETURN NEW; END $$",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_completion BEFORE UPDATE ON colloquy_idempotency_keys \
         FOR EACH ROW EXECUTE FUNCTION refuse_completion()",
    )
    .execute(pool)
    .await
    .unwrap();
}

pub async fn allow_completions(pool: &PgPool) {
    sqlx::query("DROP TRIGGER refuse_completion ON colloquy_idempotency_keys").execute(pool).await.unwrap();
}

async fn keys(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM colloquy_idempotency_keys").fetch_one(pool).await.unwrap()
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn a_repeat_gets_the_stored_response_and_stores_nothing(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[]).await;
    upstream.push(FakeResponse::json(200, completion("the one answer", 5, 3)));
    upstream.set_default(FakeResponse::json(200, completion("a second answer", 5, 3)));
    let body = json!({"user_message": "hi", "client_user_id": USER});
    let first = app.post("/api/ai/chat", &keyed("turn-1"), body.clone()).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(first.headers.get("idempotent-replayed").is_none());
    // Same JSON, other key order and spacing.
    let same = json!({"client_user_id": USER, "user_message": "hi"});
    let again = app.post("/api/ai/chat", &keyed("turn-1"), same).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, first.body, "same body, request id of the first included");
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(again.headers.get("content-type").unwrap(), "application/json");
    assert_eq!(upstream.requests().len(), 1, "the provider was asked once");
    assert_eq!(app.message_count().await, 2, "the turn was stored once");

    // A different body under the same key is refused.
    let other =
        app.post("/api/ai/chat", &keyed("turn-1"), json!({"user_message": "bye", "client_user_id": USER})).await;
    assert_eq!(other.status, 422, "{}", other.body);
    assert_eq!(other.error_code(), "idempotency_key_reused");
    // Keys are the caller's: another user's identical key is another request.
    let theirs =
        app.post("/api/ai/chat", &keyed("turn-1"), json!({"user_message": "hi", "client_user_id": OTHER_USER})).await;
    assert_eq!(theirs.status, 200);
    assert!(theirs.headers.get("idempotent-replayed").is_none());
    // So is a Bearer caller's.
    let bearer_reply = app
        .post(
            "/api/ai/chat",
            &[("authorization", &bearer(USER, 3600)), ("idempotency-key", "turn-1")],
            json!({"message": "hi"}),
        )
        .await;
    assert_eq!(bearer_reply.status, 200);
    assert!(bearer_reply.headers.get("idempotent-replayed").is_none());
    assert_eq!(app.message_count().await, 6);
    let text = app.metrics().await;
    assert!(text.contains(r#"colloquy_idempotency_requests_total{outcome="replayed"} 1"#), "{text}");
    assert!(text.contains(r#"colloquy_idempotency_requests_total{outcome="reused"} 1"#));
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn start_conversation_is_idempotent_too(pool: PgPool) {
    let app = app(pool);
    let body = json!({"client_user_id": USER, "history": ["hello", "hi, how can I help?"]});
    let first = app.post("/api/ai/start-conversation", &keyed("start-1"), body.clone()).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let again = app.post("/api/ai/start-conversation", &keyed("start-1"), body).await;
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    let conversations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM chatbot_conversation_audit").fetch_one(&app.pool).await.unwrap();
    assert_eq!(conversations, 1);
    // The same key on the other route is a different request.
    let chat = app.post("/api/ai/chat", &keyed("start-1"), json!({"user_message": "x", "client_user_id": USER})).await;
    assert_eq!(chat.status, 422);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn a_repeat_while_the_first_runs_is_409(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[]).await;
    upstream.push(FakeResponse::json(200, completion("slow answer", 5, 3)).with_delay(Duration::from_millis(1000)));
    let app = Arc::new(app);
    let body = json!({"user_message": "hi", "client_user_id": USER});
    let first = {
        let (app, body) = (app.clone(), body.clone());
        tokio::spawn(async move { app.post("/api/ai/chat", &keyed("slow-1"), body).await })
    };
    while upstream.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let repeat = app.post("/api/ai/chat", &keyed("slow-1"), body.clone()).await;
    assert_eq!(repeat.status, 409, "{}", repeat.body);
    assert_eq!(repeat.error_code(), "request_in_progress");
    assert_eq!(repeat.headers.get("retry-after").unwrap(), "1");
    let first = first.await.unwrap();
    assert_eq!(first.status, 200);
    let after = app.post("/api/ai/chat", &keyed("slow-1"), body).await;
    assert_eq!(after.body, first.body);
    assert_eq!(after.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(upstream.requests().len(), 1);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn a_failed_request_frees_its_key_for_a_retry(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[]).await;
    upstream.push(FakeResponse::json(503, json!({"error": {"message": "overloaded"}})));
    upstream.push(FakeResponse::json(200, completion("second try", 5, 3)));
    let body = json!({"user_message": "hi", "client_user_id": USER});
    let failed = app.post("/api/ai/chat", &keyed("retry-1"), body.clone()).await;
    assert_eq!(failed.status, 502);
    // The release is spawned as the request ends; give it a moment.
    for _ in 0..50 {
        if keys(&app.pool).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let retried = app.post("/api/ai/chat", &keyed("retry-1"), body).await;
    assert_eq!(retried.status, 200, "{}", retried.body);
    assert_eq!(retried.body["ai_response"], "second try");
    assert!(retried.headers.get("idempotent-replayed").is_none());
}

/// If recording the response fails, the turn is not stored either: both are
/// in one transaction. (A trigger makes the recording fail.)
#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn the_turn_and_its_stored_response_commit_together(pool: PgPool) {
    refuse_completions(&pool).await;
    let app = app(pool.clone());
    let reply =
        app.post("/api/ai/chat", &keyed("atomic-1"), json!({"user_message": "hi", "client_user_id": USER})).await;
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert_eq!(app.message_count().await, 0, "the turn was rolled back with its response");
    let conversations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM chatbot_conversation_audit").fetch_one(&pool).await.unwrap();
    assert_eq!(conversations, 0);
    // Without a key the same turn is stored as usual.
    assert_eq!(app.chat(json!({"user_message": "hi", "client_user_id": USER})).await.status, 200);
    assert_eq!(app.message_count().await, 2);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn two_replicas_share_the_keys(pool: PgPool) {
    let url = database_url(&pool);
    let settings = config(&[]);
    let a = app_with(service_pool(&url, 4), &settings);
    let b = app_with(service_pool(&url, 4), &settings);
    let body = json!({"user_message": "hi", "client_user_id": USER});
    let first = a.post("/api/ai/chat", &keyed("shared-1"), body.clone()).await;
    assert_eq!(first.status, 200);
    let on_b = b.post("/api/ai/chat", &keyed("shared-1"), body).await;
    assert_eq!(on_b.body, first.body);
    assert_eq!(on_b.headers.get("idempotent-replayed").unwrap(), "true");
    let mismatch =
        b.post("/api/ai/chat", &keyed("shared-1"), json!({"user_message": "no", "client_user_id": USER})).await;
    assert_eq!(mismatch.status, 422);
    assert_eq!(a.message_count().await, 2);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn keys_expire_and_are_swept(pool: PgPool) {
    let app = app_with(pool.clone(), &config(&[("IDEMPOTENCY_TTL_SECS", "1")]));
    let reply =
        app.post("/api/ai/chat", &keyed("short-1"), json!({"user_message": "hi", "client_user_id": USER})).await;
    assert_eq!(reply.status, 200);
    assert_eq!(keys(&pool).await, 1);
    assert_eq!(chat_api::sweep::once(&pool).await.unwrap(), 0, "not expired yet");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Expired: the key is free again, even for another body.
    let reuse =
        app.post("/api/ai/chat", &keyed("short-1"), json!({"user_message": "new", "client_user_id": USER})).await;
    assert_eq!(reuse.status, 200, "{}", reuse.body);
    assert!(reuse.headers.get("idempotent-replayed").is_none());
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(chat_api::sweep::once(&pool).await.unwrap(), 1);
    assert_eq!(keys(&pool).await, 0);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn bad_keys_are_refused_clearly(pool: PgPool) {
    let app = app(pool);
    let long = "k".repeat(256);
    let reply = app.post("/api/ai/chat", &keyed(&long), json!({"user_message": "hi", "client_user_id": USER})).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.error_code(), "invalid_idempotency_key");
    assert_eq!(app.message_count().await, 0);
}

//! Per-user rate limits in PostgreSQL: requests and tokens per minute, the
//! 429 and its headers, reservations under concurrency, two replicas.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::*;
use crate::support::FakeResponse;

fn header<'a>(reply: &'a Reply, name: &str) -> &'a str {
    reply.headers.get(name).unwrap_or_else(|| panic!("no {name} header")).to_str().unwrap()
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn requests_per_minute_refuse_with_429_and_headers(pool: PgPool) {
    let app = app_with(pool, &config(&[("RATE_LIMIT_RPM", "3")]));
    for remaining in ["2", "1", "0"] {
        let reply = app.chat(json!({"user_message": "hi", "client_user_id": USER})).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(header(&reply, "x-ratelimit-limit-requests"), "3");
        assert_eq!(header(&reply, "x-ratelimit-remaining-requests"), remaining);
        assert!(header(&reply, "x-ratelimit-reset-requests").ends_with('s'));
        assert!(reply.headers.get("x-ratelimit-limit-tokens").is_none(), "tokens are not limited");
    }
    let refused = app.chat(json!({"user_message": "one too many", "client_user_id": USER})).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.error_code(), "rate_limited");
    assert!(refused.body["error"]["message"].as_str().unwrap().contains("3 requests per minute"));
    assert_eq!(header(&refused, "x-ratelimit-remaining-requests"), "0");
    // One request every 20 s: the next fits in about 20 s.
    let retry: u64 = header(&refused, "retry-after").parse().unwrap();
    assert!((18..=20).contains(&retry), "Retry-After {retry}");
    assert_eq!(app.message_count().await, 6, "the refused turn stored nothing");

    // The same user through a Bearer token shares the limit; another user does not.
    let bearer_reply =
        app.post("/api/ai/chat", &[("authorization", &bearer(USER, 3600))], json!({"message": "hi"})).await;
    assert_eq!(bearer_reply.status, 429);
    let other = app.chat(json!({"user_message": "hi", "client_user_id": OTHER_USER})).await;
    assert_eq!(other.status, 200);
    assert_eq!(header(&other, "x-ratelimit-remaining-requests"), "2");
    // Reading counts as a request too.
    let id = other.body["conversation_id"].as_str().unwrap();
    let read =
        app.get(&format!("/api/conversations/{id}?client_user_id={OTHER_USER}"), &[("x-api-key", API_KEY)]).await;
    assert_eq!(read.status, 200);
    assert_eq!(header(&read, "x-ratelimit-remaining-requests"), "1");
    assert!(app.metrics().await.contains(r#"colloquy_http_rejected_total{reason="rate_limited_requests"} 2"#));
}

/// Waits until the user's last turn's usage is settled in the database.
async fn settled(pool: &PgPool, user: &str, tokens: i64) {
    let user = Uuid::parse_str(user).unwrap();
    for _ in 0..100 {
        let last: Option<i64> =
            sqlx::query_scalar("SELECT last_turn_tokens FROM colloquy_rate_limits WHERE user_id = $1")
                .bind(user)
                .fetch_optional(pool)
                .await
                .unwrap();
        if last == Some(tokens) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("usage of {user} never settled to {tokens}");
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn tokens_per_minute_count_the_real_usage(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool.clone(), &[("RATE_LIMIT_TPM", "1000")]).await;
    // Each answer really costs 400 tokens, more than the ~260 a short message reserves.
    upstream.set_default(FakeResponse::json(200, completion("answer", 350, 50)));
    let first = app.chat(json!({"user_message": "hi", "client_user_id": USER})).await;
    assert_eq!(first.status, 200, "{}", first.body);
    assert_eq!(header(&first, "x-ratelimit-limit-tokens"), "1000");
    assert!(first.headers.get("x-ratelimit-limit-requests").is_none());
    settled(&pool, USER, 400).await;
    let second = app.chat(json!({"user_message": "hi", "client_user_id": USER})).await;
    assert_eq!(second.status, 200, "{}", second.body);
    // 800 tokens used; the next turn reserves what the last one used (400).
    let remaining: u64 = header(&second, "x-ratelimit-remaining-tokens").parse().unwrap();
    assert!((190..=210).contains(&remaining), "remaining {remaining}");
    settled(&pool, USER, 400).await;
    let third = app.chat(json!({"user_message": "hi", "client_user_id": USER})).await;
    assert_eq!(third.status, 429, "{}", third.body);
    assert_eq!(third.error_code(), "rate_limited");
    assert!(third.body["error"]["message"].as_str().unwrap().contains("1000 tokens per minute"));
    assert!(third.headers.get("retry-after").is_some());
    assert_eq!(upstream.requests().len(), 2, "a refused turn never reaches the provider");
    // Reading costs no tokens: it is not refused by the token limit.
    let id = second.body["conversation_id"].as_str().unwrap();
    let read = app.get(&format!("/api/conversations/{id}?client_user_id={USER}"), &[("x-api-key", API_KEY)]).await;
    assert_eq!(read.status, 200, "{}", read.body);
    assert_eq!(header(&read, "x-ratelimit-limit-tokens"), "1000");

    // A failed turn gives its reservation back.
    let other = OTHER_USER;
    upstream.push(FakeResponse::json(500, json!({"error": {"message": "boom"}})));
    assert_eq!(app.chat(json!({"user_message": "hi", "client_user_id": other})).await.status, 502);
    let tokens_ahead: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM tokens_tat - now())::float8 FROM colloquy_rate_limits WHERE user_id = $1",
    )
    .bind(Uuid::parse_str(other).unwrap())
    .fetch_one(&pool)
    .await
    .unwrap();
    let mut refunded = tokens_ahead <= 0.5;
    for _ in 0..50 {
        if refunded {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let ahead: f64 = sqlx::query_scalar(
            "SELECT extract(epoch FROM tokens_tat - now())::float8 FROM colloquy_rate_limits WHERE user_id = $1",
        )
        .bind(Uuid::parse_str(other).unwrap())
        .fetch_one(&pool)
        .await
        .unwrap();
        refunded = ahead <= 0.5;
    }
    assert!(refunded, "the failed turn's reservation was not given back");
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn concurrent_turns_cannot_overshoot_the_token_limit(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[("RATE_LIMIT_TPM", "1000")]).await;
    upstream.set_default(FakeResponse::json(200, completion("slow", 250, 50)).with_delay(Duration::from_millis(800)));
    let app = Arc::new(app);
    let turns: Vec<_> = (0..6)
        .map(|_| {
            let app = app.clone();
            tokio::spawn(async move { app.chat(json!({"user_message": "hello there", "client_user_id": USER})).await })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in turns {
        statuses.push(t.await.unwrap().status.as_u16());
    }
    statuses.sort_unstable();
    // Each reserves ~260 tokens before its call: three fit in 1000, the rest wait.
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429]);
    assert_eq!(upstream.requests().len(), 3);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn two_replicas_share_one_limit(pool: PgPool) {
    let url = database_url(&pool);
    let settings = config(&[("RATE_LIMIT_RPM", "2")]);
    let a = app_with(service_pool(&url, 4), &settings);
    let b = app_with(service_pool(&url, 4), &settings);
    assert_eq!(a.chat(json!({"user_message": "on a", "client_user_id": USER})).await.status, 200);
    let on_b = b.chat(json!({"user_message": "on b", "client_user_id": USER})).await;
    assert_eq!(on_b.status, 200);
    assert_eq!(header(&on_b, "x-ratelimit-remaining-requests"), "0");
    assert_eq!(a.chat(json!({"user_message": "again", "client_user_id": USER})).await.status, 429);
    assert_eq!(b.chat(json!({"user_message": "again", "client_user_id": USER})).await.status, 429);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn limits_are_off_when_unset(pool: PgPool) {
    let app = app(pool.clone());
    for _ in 0..5 {
        let reply = app.chat(json!({"user_message": "hi", "client_user_id": USER})).await;
        assert_eq!(reply.status, 200);
        assert!(reply.headers.keys().all(|k| !k.as_str().starts_with("x-ratelimit")));
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM colloquy_rate_limits").fetch_one(&pool).await.unwrap();
    assert_eq!(rows, 0);
}

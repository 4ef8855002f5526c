//! Bad input and upstream failures: the right status and code, and nothing
//! stored or lost.

use serde_json::json;
use sqlx::PgPool;
use std::time::Duration;

use crate::harness::*;
use crate::support::tcp_proxy::TcpProxy;
use crate::support::{FakeResponse, FakeUpstream};

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn bad_input_is_a_400_with_a_code(pool: PgPool) {
    let app = app_with(pool, &config(&[("MAX_MESSAGE_CHARS", "20")]));
    let cases = [
        (json!({"user_message": "   ", "client_user_id": USER}), "message_empty"),
        (json!({"user_message": "x".repeat(21), "client_user_id": USER}), "message_too_long"),
        (json!({"user_message": "hi"}), "invalid_request"),
        (json!({"client_user_id": USER}), "invalid_request"),
        (json!({"user_message": 42, "client_user_id": USER}), "invalid_request"),
        (json!({"user_message": "hi", "client_user_id": "not-a-uuid"}), "invalid_request"),
        (json!({"user_message": "hi", "client_user_id": USER, "history": ["ok", ""]}), "history_item_empty"),
        (json!({"user_message": "hi", "client_user_id": USER, "conversation_id": "zzz"}), "invalid_request"),
    ];
    for (body, code) in cases {
        let reply = app.chat(body.clone()).await;
        assert_eq!(reply.status, 400, "{body} -> {}", reply.body);
        assert_eq!(reply.error_code(), code, "{body} -> {}", reply.body);
        assert!(reply.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    let malformed = app
        .request(
            axum::http::Method::POST,
            "/api/ai/chat",
            &[("content-type", "application/json"), ("x-api-key", API_KEY)],
            Some("{\"user_message\": ".to_owned()),
        )
        .await;
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.error_code(), "invalid_json");
    let unknown =
        app.chat(json!({"conversation_id": uuid::Uuid::new_v4(), "user_message": "hi", "client_user_id": USER})).await;
    assert_eq!(unknown.status, 404);
    assert_eq!(app.message_count().await, 0);
}

/// PostgreSQL's text cannot hold NUL: a NUL in a body string or a query
/// parameter is a 400, never a 500 from the failed statement (found by
/// schemathesis).
#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn nul_characters_are_a_400_not_a_500(pool: PgPool) {
    let app = app(pool);
    let reply = app.chat(json!({"user_message": "a\u{0}b", "client_user_id": USER})).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.error_code(), "invalid_request");
    let listing =
        app.get(&format!("/api/conversations?client_user_id={USER}&q=ab%00"), &[("x-api-key", API_KEY)]).await;
    assert_eq!(listing.status, 400, "{}", listing.body);
    assert_eq!(listing.error_code(), "invalid_query");
    let fine = app.chat(json!({"user_message": "a\\u0000b is just text", "client_user_id": USER})).await;
    assert_eq!(fine.status, 200, "{}", fine.body);
}

/// Starts a conversation with one good turn, then returns its id and state.
async fn conversation_with_one_turn(app: &TestApp, upstream: &crate::support::FakeUpstream) -> String {
    upstream.push(FakeResponse::json(200, completion("first answer", 5, 2)));
    let reply = app.chat(json!({"user_message": "first", "client_user_id": USER})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.body["conversation_id"].as_str().unwrap().to_owned()
}

async fn assert_unchanged(app: &TestApp, id: &str) {
    assert_eq!(app.message_count().await, 2);
    let (_, usage, _) = app.conversation_row(id).await;
    assert_eq!(usage.unwrap(), json!({"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7, "turns": 1}));
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn upstream_error_is_502_and_leaves_no_half_turn(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[]).await;
    let id = conversation_with_one_turn(&app, &upstream).await;
    upstream.push(FakeResponse::json(
        500,
        json!({"error": {"message": "The server had an error", "type": "server_error"}}),
    ));
    let reply = app.chat(json!({"conversation_id": id, "user_message": "second", "client_user_id": USER})).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(reply.error_code(), "upstream_error");
    assert!(reply.body["error"]["message"].as_str().unwrap().contains("The server had an error"));
    assert_unchanged(&app, &id).await;

    // A failed first turn creates no conversation at all.
    upstream.push(FakeResponse::json(503, json!({"error": {"message": "overloaded"}})));
    let reply = app.chat(json!({"user_message": "new", "client_user_id": USER})).await;
    assert_eq!(reply.status, 502);
    let conversations: i64 =
        sqlx::query_scalar("SELECT count(*) FROM chatbot_conversation_audit").fetch_one(&app.pool).await.unwrap();
    assert_eq!(conversations, 1);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn upstream_timeout_is_504(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[("LLM_TIMEOUT_SECS", "1")]).await;
    let id = conversation_with_one_turn(&app, &upstream).await;
    upstream.push(FakeResponse::json(200, completion("too late", 1, 1)).with_delay(Duration::from_secs(3)));
    let reply = app.chat(json!({"conversation_id": id, "user_message": "second", "client_user_id": USER})).await;
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert_eq!(reply.error_code(), "upstream_timeout");
    assert_unchanged(&app, &id).await;
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn content_filter_is_422(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[]).await;
    let id = conversation_with_one_turn(&app, &upstream).await;
    let mut filtered = completion("", 5, 0);
    filtered["choices"][0]["finish_reason"] = json!("content_filter");
    filtered["choices"][0]["message"]["content"] = serde_json::Value::Null;
    upstream.push(FakeResponse::json(200, filtered));
    let reply = app.chat(json!({"conversation_id": id, "user_message": "something bad", "client_user_id": USER})).await;
    assert_eq!(reply.status, 422, "{}", reply.body);
    assert_eq!(reply.error_code(), "content_filtered");
    assert_unchanged(&app, &id).await;
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn upstream_rate_limit_is_429_with_retry_after(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[]).await;
    upstream.push(
        FakeResponse::json(429, json!({"error": {"message": "Rate limit reached", "type": "requests"}}))
            .with_header("retry-after", "7"),
    );
    let reply = app.chat(json!({"user_message": "hi", "client_user_id": USER})).await;
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert_eq!(reply.error_code(), "upstream_rate_limited");
    assert_eq!(reply.headers.get("retry-after").unwrap(), "7");
    assert_eq!(app.message_count().await, 0);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn unreachable_database_is_503_not_401_or_500(pool: PgPool) {
    // A pool pointed at a port where nothing listens.
    let dead = chat_api::db::lazy_pool(&chat_api::config::DatabaseConfig {
        url: chat_api::config::Secret::new("postgres://postgres:x@127.0.0.1:1/none"),
        max_connections: 2,
        min_connections: 0,
        connect_timeout: Duration::from_secs(1),
    })
    .unwrap();
    drop(pool);
    let app = app_with(dead, &config(&[]));
    let reply = app.chat(json!({"user_message": "hi", "client_user_id": USER})).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.error_code(), "database_unavailable");
    assert_eq!(reply.headers.get("retry-after").unwrap(), "1");
    let conversation =
        app.get(&format!("/api/conversations/{}", uuid::Uuid::new_v4()), &[("x-api-key", API_KEY)]).await;
    assert_eq!(conversation.status, 503);
    let ready = app.get("/readyz", &[]).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.body["database"], "unreachable");
    assert_eq!(app.get("/livez", &[]).await.status, 200);
    // Bad credentials are still a 401, checked before the database.
    let unauthorized = app
        .post("/api/ai/chat", &[("x-api-key", "wrong")], json!({"user_message": "hi", "client_user_id": USER}))
        .await;
    assert_eq!(unauthorized.status, 401);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn an_exhausted_pool_is_503_not_a_queue(pool: PgPool) {
    let app = app_with(service_pool(&database_url(&pool), 1), &config(&[]));
    let held = app.state.pool.acquire().await.unwrap();
    let reply = app.chat(json!({"user_message": "hi", "client_user_id": USER})).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.error_code(), "database_unavailable");
    assert_eq!(reply.headers.get("retry-after").unwrap(), "1");
    assert_eq!(app.get("/livez", &[]).await.status, 200);
    drop(held);
    assert_eq!(app.chat(json!({"user_message": "hi", "client_user_id": USER})).await.status, 200);
}

/// A turn the provider has answered is not thrown away because every pooled
/// connection is busy at that moment: its write waits past the pool's 3 s
/// acquire timeout (as a burst of streams ending together needs) and stores.
#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn an_answered_turn_waits_for_a_busy_pool_and_is_stored(pool: PgPool) {
    let upstream = FakeUpstream::start().await;
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    upstream.set_default(FakeResponse::json(200, completion("kept", 5, 2)).held_until(gate.clone()));
    let base = format!("{}/v1", upstream.url);
    let settings = config(&[("LLM_PROVIDER", "openai"), ("OPENAI_BASE_URL", &base), ("OPENAI_MODEL", "gpt-test")]);
    let app = std::sync::Arc::new(app_with(service_pool(&database_url(&pool), 1), &settings));
    let turn = tokio::spawn({
        let app = app.clone();
        async move { app.chat(json!({"user_message": "hold on", "client_user_id": USER})).await }
    });
    for _ in 0..500 {
        if !upstream.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(upstream.requests().len(), 1, "the turn reached the provider");
    // The pool's only connection, busy while the answer arrives and for longer
    // than the pool's own acquire timeout.
    let held = tokio::time::timeout(Duration::from_secs(10), app.state.pool.acquire())
        .await
        .expect("the turn holds no connection while the provider answers")
        .unwrap();
    gate.add_permits(1);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!turn.is_finished(), "the answered turn is still waiting for a connection");
    drop(held);
    let reply = turn.await.unwrap();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["ai_response"], "kept");
    assert_eq!(app.message_count().await, 2);
}

/// An app on the OpenAI-compatible fake upstream whose database connections
/// go through a proxy the test can break.
async fn behind_proxy(pool: &PgPool) -> (TestApp, FakeUpstream, TcpProxy) {
    let url = reqwest::Url::parse(&database_url(pool)).unwrap();
    let target = format!("{}:{}", url.host_str().unwrap(), url.port().unwrap()).parse().unwrap();
    let proxy = TcpProxy::start(target).await;
    let mut proxied = url.clone();
    proxied.set_port(Some(proxy.addr.port())).unwrap();
    let upstream = FakeUpstream::start().await;
    let base = format!("{}/v1", upstream.url);
    let settings = config(&[("LLM_PROVIDER", "openai"), ("OPENAI_BASE_URL", &base), ("OPENAI_MODEL", "gpt-test")]);
    let mut app = app_with(service_pool(proxied.as_str(), 4), &settings);
    // Row counts are read on the test's own pool, which does not go through the proxy.
    app.pool = pool.clone();
    (app, upstream, proxy)
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn the_service_recovers_when_the_database_comes_back(pool: PgPool) {
    let (app, upstream, proxy) = behind_proxy(&pool).await;
    upstream.set_default(FakeResponse::json(200, completion("answer", 5, 2)));
    assert_eq!(app.chat(json!({"user_message": "before", "client_user_id": USER})).await.status, 200);
    proxy.down();
    let reply = app.chat(json!({"user_message": "during", "client_user_id": USER})).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.error_code(), "database_unavailable");
    let ready = app.get("/readyz", &[]).await;
    assert_eq!(ready.status, 503);
    assert_eq!(app.get("/livez", &[]).await.status, 200);
    proxy.up().await;
    // No restart: the next requests find the database again.
    let mut ready = app.get("/readyz", &[]).await;
    for _ in 0..50 {
        if ready.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        ready = app.get("/readyz", &[]).await;
    }
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(app.chat(json!({"user_message": "after", "client_user_id": USER})).await.status, 200);
    assert_eq!(app.message_count().await, 4);
}

/// A first turn stored, then a second whose provider answer takes a moment,
/// during which `fault` breaks the database: the conversation's id and the
/// second turn's reply.
async fn second_turn_while(
    app: TestApp,
    upstream: &FakeUpstream,
    proxy: &TcpProxy,
    fault: fn(&TcpProxy),
) -> (std::sync::Arc<TestApp>, String, Reply) {
    upstream.push(FakeResponse::json(200, completion("first", 5, 2)));
    let first = app.chat(json!({"user_message": "first", "client_user_id": USER})).await;
    assert_eq!(first.status, 200);
    let id = first.body["conversation_id"].as_str().unwrap().to_owned();
    upstream.push(FakeResponse::json(200, completion("second", 5, 2)).with_delay(Duration::from_millis(600)));
    let app = std::sync::Arc::new(app);
    let turn = {
        let (app, id) = (app.clone(), id.clone());
        tokio::spawn(async move {
            app.chat(json!({"conversation_id": id, "user_message": "second", "client_user_id": USER})).await
        })
    };
    while upstream.requests().len() < 2 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    fault(proxy);
    let reply = turn.await.unwrap();
    (app, id, reply)
}

/// PostgreSQL restarts while the provider answers: the pooled connection the
/// write gets is dead, and the write is retried once on a fresh connection.
#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn a_write_that_fails_is_retried_once_on_a_fresh_connection(pool: PgPool) {
    let (app, upstream, proxy) = behind_proxy(&pool).await;
    let (app, id, reply) = second_turn_while(app, &upstream, &proxy, TcpProxy::cut).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["ai_response"], "second");
    assert_eq!(app.message_count().await, 4, "stored exactly once");
    let (_, usage, _) = app.conversation_row(&id).await;
    assert_eq!(usage.unwrap()["turns"], 2);
}

/// If the retry fails too, the caller gets a 503 and nothing is stored.
#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn a_write_that_fails_twice_is_503_and_stores_nothing(pool: PgPool) {
    let (app, upstream, proxy) = behind_proxy(&pool).await;
    let (app, id, reply) = second_turn_while(app, &upstream, &proxy, TcpProxy::down).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.error_code(), "database_unavailable");
    proxy.up().await;
    assert_unchanged_after(&app, &id).await;
}

async fn assert_unchanged_after(app: &TestApp, id: &str) {
    assert_eq!(app.message_count().await, 2);
    let (_, usage, _) = app.conversation_row(id).await;
    assert_eq!(usage.unwrap()["turns"], 1);
}

/// A request dropped (its client gone) right after its write unit sent BEGIN
/// must not hand the pool a connection inside that transaction: the next
/// user's writes would run in it and not commit.
#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn a_write_dropped_after_begin_returns_no_open_transaction_to_the_pool(pool: PgPool) {
    use chat_api::db::turn_write;
    use futures::FutureExt;
    let service = service_pool(&database_url(&pool), 1);
    sqlx::query("SELECT 1").execute(&service).await.unwrap();
    // Poll a request by hand until the server has run its BEGIN (seen on the
    // test's own pool), then drop it without polling again: the point where
    // the answer to BEGIN is on its way and nothing else is done. A request
    // that completed between two looks (a busy machine) is tried again.
    let mut dropped_after_begin = false;
    'attempts: for _ in 0..20 {
        let unit = std::sync::Arc::new(turn_write::WriteUnit::default());
        let write = turn_write::write(&service, |_conn| Box::pin(async { Ok::<_, sqlx::Error>(()) }));
        let mut request = Box::pin(turn_write::in_unit(Some(unit), write));
        for _ in 0..20 {
            if (&mut request).now_or_never().is_some() {
                // Completed: its transaction sits in the unit, closed with it.
                continue 'attempts;
            }
            if service_in_transaction(&pool).await {
                drop(request);
                dropped_after_begin = true;
                break 'attempts;
            }
        }
    }
    assert!(dropped_after_begin, "a request was dropped after the server ran its BEGIN");
    // The pool's only connection, next time: not inside anyone's transaction
    // block (where a SAVEPOINT would be accepted).
    let mut conn = service.acquire().await.unwrap();
    let savepoint = sqlx::query("SAVEPOINT probe").execute(&mut *conn).await;
    let code = savepoint.as_ref().err().and_then(|e| e.as_database_error()).and_then(|e| e.code());
    assert_eq!(
        code.as_deref(),
        Some("25P01"),
        "a pooled connection was left inside a dropped request's transaction: {savepoint:?}"
    );
}

/// Whether the service's connection is idle inside a transaction, looked at
/// for up to 0.5 s.
async fn service_in_transaction(pool: &PgPool) -> bool {
    for _ in 0..100 {
        let seen: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = $1 AND state = 'idle in transaction'",
        )
        .bind(chat_api::db::APPLICATION_NAME)
        .fetch_one(pool)
        .await
        .unwrap();
        if seen == 1 {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    false
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn warming_opens_the_pools_minimum_before_any_request(pool: PgPool) {
    let warm = chat_api::db::lazy_pool(&chat_api::config::DatabaseConfig {
        url: chat_api::config::Secret::new(database_url(&pool)),
        max_connections: 8,
        min_connections: 3,
        connect_timeout: Duration::from_secs(5),
    })
    .unwrap();
    assert_eq!(warm.size(), 0, "lazy: nothing open yet");
    chat_api::db::warm(warm.clone()).await;
    // sqlx hands a dropped connection back to the pool from a task of its own.
    for _ in 0..100 {
        if warm.num_idle() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!((warm.size(), warm.num_idle()), (3, 3), "three connections open, all idle in the pool");
    let seen: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND datname = current_database()",
    )
    .bind(chat_api::db::APPLICATION_NAME)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(seen >= 3, "the server sees them: {seen}");

    // A database that is down is not waited for.
    let dead = chat_api::db::lazy_pool(&chat_api::config::DatabaseConfig {
        url: chat_api::config::Secret::new("postgres://postgres:x@127.0.0.1:1/none"),
        max_connections: 2,
        min_connections: 2,
        connect_timeout: Duration::from_secs(1),
    })
    .unwrap();
    chat_api::db::warm(dead.clone()).await;
    assert_eq!(dead.size(), 0);
}

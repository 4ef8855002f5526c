//! The layers in front of the handlers: authentication first, the in-flight
//! limit, the request timeout, CORS without credentials, docs on and off,
//! and the size limits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::Method;
use serde_json::json;
use sqlx::PgPool;

use crate::harness::*;
use crate::support::FakeResponse;

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn authentication_runs_before_the_body_is_read(pool: PgPool) {
    let app = app(pool);
    // Malformed, oversized or not: without credentials it is a 401.
    let reply = app
        .request(Method::POST, "/api/ai/chat", &[("content-type", "application/json")], Some("{not json".to_owned()))
        .await;
    assert_eq!(reply.status, 401, "{}", reply.body);
    let reply = app
        .request(
            Method::POST,
            "/api/ai/chat",
            &[("content-type", "application/json"), ("idempotency-key", "k1")],
            Some("{}".to_owned()),
        )
        .await;
    assert_eq!(reply.status, 401);
    assert_eq!(app.message_count().await, 0);
}

/// Captures formatted log lines.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn the_access_log_names_the_caller_and_user(pool: PgPool) {
    let app = app(pool);
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .json()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);
    let reply = app.chat(json!({"user_message": "hi", "client_user_id": USER})).await;
    assert_eq!(reply.status, 200);
    let bearer_reply =
        app.post("/api/ai/chat", &[("authorization", &bearer(OTHER_USER, 3600))], json!({"message": "hi"})).await;
    assert_eq!(bearer_reply.status, 200);
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "request")
        .collect();
    assert_eq!(lines.len(), 2, "{logs}");
    assert_eq!(lines[0]["fields"]["caller"], "api_key");
    assert_eq!(lines[0]["fields"]["user"], USER);
    assert_eq!(lines[1]["fields"]["caller"], "bearer");
    assert_eq!(lines[1]["fields"]["user"], OTHER_USER);
    assert!(!logs.contains(API_KEY) && !logs.contains("Bearer ey"), "credentials in the log:\n{logs}");
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn over_max_in_flight_is_503_overloaded_at_once(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[("MAX_IN_FLIGHT", "2")]).await;
    upstream.set_default(FakeResponse::json(200, completion("slow", 1, 1)).with_delay(Duration::from_millis(1500)));
    let app = Arc::new(app);
    let slow: Vec<_> = (0..2)
        .map(|i| {
            let app = app.clone();
            tokio::spawn(
                async move { app.chat(json!({"user_message": format!("slow {i}"), "client_user_id": USER})).await },
            )
        })
        .collect();
    while upstream.requests().len() < 2 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = std::time::Instant::now();
    let shed = app.chat(json!({"user_message": "one more", "client_user_id": USER})).await;
    assert!(started.elapsed() < Duration::from_millis(500), "queued for {:?}", started.elapsed());
    assert_eq!(shed.status, 503, "{}", shed.body);
    assert_eq!(shed.error_code(), "overloaded");
    assert_eq!(shed.headers.get("retry-after").unwrap(), "1");
    // Probes are not behind the limit.
    assert_eq!(app.get("/livez", &[]).await.status, 200);
    assert_eq!(app.get("/readyz", &[]).await.status, 200);
    for task in slow {
        assert_eq!(task.await.unwrap().status, 200);
    }
    // Capacity is back once they finished.
    upstream.set_default(FakeResponse::json(200, completion("fast", 1, 1)));
    assert_eq!(app.chat(json!({"user_message": "again", "client_user_id": USER})).await.status, 200);
    assert!(app.metrics().await.contains(r#"colloquy_http_rejected_total{reason="overloaded"} 1"#));
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn a_request_over_request_timeout_is_504_and_probes_are_exempt(pool: PgPool) {
    let app = app_with(pool.clone(), &config(&[("LLM_TIMEOUT_SECS", "1"), ("REQUEST_TIMEOUT_SECS", "2")]));
    let first = app.chat(json!({"user_message": "hi", "client_user_id": USER})).await;
    let id = first.body["conversation_id"].as_str().unwrap().to_owned();
    // Hold a lock that blocks the conversation's read: the request waits on the database.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE chatbot_conversation_audit IN ACCESS EXCLUSIVE MODE").execute(&mut *tx).await.unwrap();
    let started = std::time::Instant::now();
    let reply = app.get(&format!("/api/conversations/{id}"), &[("x-api-key", API_KEY)]).await;
    let waited = started.elapsed();
    assert_eq!(reply.status, 504, "{}", reply.body);
    assert_eq!(reply.error_code(), "request_timeout");
    assert!(waited >= Duration::from_secs(2) && waited < Duration::from_secs(4), "{waited:?}");
    tx.rollback().await.unwrap();
    assert_eq!(app.get(&format!("/api/conversations/{id}"), &[("x-api-key", API_KEY)]).await.status, 200);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn cors_any_origin_never_allows_credentials(pool: PgPool) {
    for app in [app(pool.clone()), app_with(pool, &config(&[("ALLOWED_ORIGINS", "https://app.example.com")]))] {
        let preflight = app
            .request(
                Method::OPTIONS,
                "/api/ai/chat",
                &[
                    ("origin", "https://app.example.com"),
                    ("access-control-request-method", "POST"),
                    ("access-control-request-headers", "content-type,x-api-key,idempotency-key"),
                ],
                None,
            )
            .await;
        assert!(preflight.headers.get("access-control-allow-origin").is_some());
        assert!(preflight.headers.get("access-control-allow-credentials").is_none());
        let allowed = preflight.headers.get("access-control-allow-headers").unwrap().to_str().unwrap();
        assert!(allowed.contains("idempotency-key"), "{allowed}");
        let simple = app.get("/health", &[("origin", "https://app.example.com")]).await;
        assert!(simple.headers.get("access-control-allow-credentials").is_none());
        let exposed = simple.headers.get("access-control-expose-headers").unwrap().to_str().unwrap();
        assert!(exposed.contains("retry-after") && exposed.contains("x-ratelimit-remaining-requests"), "{exposed}");
    }
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn api_docs_off_removes_docs_and_redoc(pool: PgPool) {
    let app = app_with(pool, &config(&[("API_DOCS", "off")]));
    assert_eq!(send_raw(&app.router, Method::GET, "/docs/", &[], None).await.0, 404);
    assert_eq!(send_raw(&app.router, Method::GET, "/redoc", &[], None).await.0, 404);
    assert_eq!(send_raw(&app.router, Method::GET, "/redoc/redoc.standalone.js", &[], None).await.0, 404);
    let spec = app.get("/openapi.json", &[]).await;
    assert_eq!(spec.status, 200);
    assert!(spec.body["paths"].get("/api/ai/chat").is_some());
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn the_openapi_document_describes_limits_and_idempotency(pool: PgPool) {
    let spec = app(pool).get("/openapi.json", &[]).await.body;
    let chat = &spec["paths"]["/api/ai/chat"]["post"];
    let params: Vec<&str> =
        chat["parameters"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(params.contains(&"idempotency-key"), "{params:?}");
    for status in ["409", "413", "422", "429", "503", "504"] {
        assert!(chat["responses"].get(status).is_some(), "no {status} in {}", chat["responses"]);
    }
    let too_many = &chat["responses"]["429"]["headers"];
    assert!(too_many.get("retry-after").is_some() && too_many.get("x-ratelimit-reset-tokens").is_some());
    assert!(chat["responses"]["200"]["headers"].get("idempotent-replayed").is_some());
    assert!(chat["responses"]["200"]["headers"].get("x-ratelimit-remaining-requests").is_some());
    assert!(chat["responses"]["503"]["headers"].get("retry-after").is_some());
    let get = &spec["paths"]["/api/conversations/{conversation_id}"]["get"];
    assert!(get["responses"].get("429").is_some());
    assert!(get["responses"].get("409").is_none(), "no idempotency outside the turn routes");
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn size_limits_are_clear_400s_and_413s(pool: PgPool) {
    let app = app_with(pool, &config(&[("MAX_BODY_BYTES", "2000"), ("RATE_LIMIT_RPM", "1000")]));
    // Body over MAX_BODY_BYTES, announced by Content-Length.
    let big = json!({"user_message": "x".repeat(3000), "client_user_id": USER});
    let reply = app.chat(big).await;
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert_eq!(reply.error_code(), "payload_too_large");
    assert!(reply.body["error"]["message"].as_str().unwrap().contains("2000"));
    // The same without limits on: the body extractor enforces it.
    let plain = app_with(app.pool.clone(), &config(&[("MAX_BODY_BYTES", "2000")]));
    let reply = plain.chat(json!({"user_message": "x".repeat(3000), "client_user_id": USER})).await;
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert_eq!(reply.error_code(), "payload_too_large");
    assert!(reply.body["error"]["message"].as_str().unwrap().contains("2000"));
    // Too many history entries.
    let history: Vec<String> = (0..201).map(|i| format!("h{i}")).collect();
    let reply = app.chat(json!({"user_message": "hi", "client_user_id": USER, "history": history})).await;
    assert_eq!(reply.status, 400);
    assert_eq!(reply.error_code(), "history_too_long");
    // Deeply nested JSON.
    let deep =
        format!(r#"{{"user_message": "hi", "client_user_id": "{USER}", "x": {}1{}}}"#, "[".repeat(40), "]".repeat(40));
    let reply = app
        .request(
            Method::POST,
            "/api/ai/chat",
            &[("content-type", "application/json"), ("x-api-key", API_KEY)],
            Some(deep),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_eq!(reply.error_code(), "json_too_deep");
    assert_eq!(app.message_count().await, 0);
}

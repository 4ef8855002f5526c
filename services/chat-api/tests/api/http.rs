//! The HTTP surface: health, docs, CORS, request ids, metrics.

use axum::http::Method;
use serde_json::json;
use sqlx::PgPool;

use crate::harness::*;

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn health_probes(pool: PgPool) {
    let app = app(pool);
    let health = app.get("/health", &[]).await;
    assert_eq!(health.status, 200);
    assert_eq!(health.body["status"], "healthy");
    let ts = health.body["timestamp"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
    assert_eq!(app.get("/livez", &[]).await.status, 200);
    let ready = app.get("/readyz", &[]).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["status"], "ready");
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn docs_are_served_offline(pool: PgPool) {
    let app = app(pool);
    let spec = app.get("/openapi.json", &[]).await;
    assert_eq!(spec.status, 200);
    for path in ["/api/ai/chat", "/api/ai/start-conversation", "/api/conversations/{conversation_id}", "/health"] {
        assert!(spec.body["paths"].get(path).is_some(), "{path} missing from the OpenAPI document");
    }
    let swagger = send_raw(&app.router, Method::GET, "/docs/", &[], None).await;
    assert_eq!(swagger.0, 200);
    assert!(String::from_utf8_lossy(&swagger.2).contains("swagger-ui"));
    let redoc = send_raw(&app.router, Method::GET, "/redoc", &[], None).await;
    assert_eq!(redoc.0, 200);
    let page = String::from_utf8_lossy(&redoc.2).into_owned();
    assert!(page.contains("/redoc/redoc.standalone.js") && !page.contains("cdn."), "{page}");
    let js = send_raw(&app.router, Method::GET, "/redoc/redoc.standalone.js", &[], None).await;
    assert_eq!(js.0, 200);
    assert!(js.2.len() > 100_000);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn cors_allows_configured_origins_only(pool: PgPool) {
    let app = app_with(pool, &config(&[("ALLOWED_ORIGINS", "https://app.example.com, https://admin.example.com")]));
    let preflight = [
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "content-type,x-api-key"),
    ];
    let allowed = app.request(Method::OPTIONS, "/api/ai/chat", &preflight, None).await;
    assert_eq!(allowed.headers.get("access-control-allow-origin").unwrap(), "https://app.example.com");
    let other = app
        .request(
            Method::OPTIONS,
            "/api/ai/chat",
            &[("origin", "https://evil.example.net"), ("access-control-request-method", "POST")],
            None,
        )
        .await;
    assert!(other.headers.get("access-control-allow-origin").is_none());
    let simple = app.get("/health", &[("origin", "https://admin.example.com")]).await;
    assert_eq!(simple.headers.get("access-control-allow-origin").unwrap(), "https://admin.example.com");
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn cors_defaults_to_any_origin(pool: PgPool) {
    let app = app(pool);
    let reply = app.get("/health", &[("origin", "https://anything.example")]).await;
    assert_eq!(reply.headers.get("access-control-allow-origin").unwrap(), "*");
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn request_id_is_echoed_and_in_error_bodies(pool: PgPool) {
    let app = app(pool);
    let reply = app.get("/health", &[("x-request-id", "req-abc-123")]).await;
    assert_eq!(reply.headers.get("x-request-id").unwrap(), "req-abc-123");
    let error = app.post("/api/ai/chat", &[("x-request-id", "req-err-9")], json!({})).await;
    assert_eq!(error.status, 401);
    assert_eq!(error.body["error"]["request_id"], "req-err-9");
    let generated = app.get("/health", &[]).await;
    let id = generated.headers.get("x-request-id").unwrap().to_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok());
    let ok = app.chat(json!({"user_message": "hi", "client_user_id": USER})).await;
    assert_eq!(ok.body["meta"]["request_id"], ok.headers.get("x-request-id").unwrap().to_str().unwrap());
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn unknown_routes_are_json_404(pool: PgPool) {
    let app = app(pool);
    let reply = app.get("/nope", &[]).await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.error_code(), "not_found");
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn metrics_count_requests_by_route_template(pool: PgPool) {
    let app = app(pool);
    let first = app.chat(json!({"user_message": "hi", "client_user_id": USER})).await;
    let id = first.body["conversation_id"].as_str().unwrap();
    app.chat(json!({"conversation_id": id, "user_message": "again", "client_user_id": USER})).await;
    app.chat(json!({"user_message": "", "client_user_id": USER})).await;
    let failed = app.chat(json!({"user_message": "/mock-error please", "client_user_id": USER})).await;
    assert_eq!(failed.status, 502);
    app.get(&format!("/api/conversations/{id}"), &[("x-api-key", API_KEY)]).await;
    let text = app.metrics().await;
    let line = |needle: &str| {
        text.lines().find(|l| l.starts_with(needle)).unwrap_or_else(|| panic!("no line {needle} in\n{text}")).to_owned()
    };
    assert!(line(r#"colloquy_http_requests_total{method="POST",route="/api/ai/chat",status="200"}"#).ends_with(" 2"));
    assert!(line(r#"colloquy_http_requests_total{method="POST",route="/api/ai/chat",status="400"}"#).ends_with(" 1"));
    assert!(line(r#"colloquy_http_requests_total{method="POST",route="/api/ai/chat",status="502"}"#).ends_with(" 1"));
    let calls = |error_type: &str| {
        line(&format!(
            r#"gen_ai_client_operation_duration_seconds_count{{error_type="{error_type}",gen_ai_operation_name="chat",gen_ai_provider_name="colloquy.mock",gen_ai_request_model="colloquy-mock"}}"#
        ))
    };
    assert!(calls("error").ends_with(" 1"));
    assert!(
        line(r#"colloquy_http_request_duration_seconds_count{method="POST",route="/api/ai/chat"}"#).ends_with(" 4")
    );
    assert!(line(r#"colloquy_db_query_duration_seconds_count{operation="append_turn"}"#).ends_with(" 1"));
    assert!(line(r#"colloquy_db_query_duration_seconds_count{operation="create_conversation"}"#).ends_with(" 1"));
    assert!(
        line(r#"colloquy_http_requests_total{method="GET",route="/api/conversations/{conversation_id}",status="200"}"#)
            .ends_with(" 1")
    );
    assert!(!text.contains(id), "conversation ids must not be metric labels");
    assert!(calls("").ends_with(" 2"));
    assert!(!text.contains("colloquy_llm_"), "provider calls are counted once, by the GenAI histograms");
    assert!(line("colloquy_conversations_created_total").ends_with(" 1"));
    assert!(line("colloquy_turns_stored_total").ends_with(" 2"));
}

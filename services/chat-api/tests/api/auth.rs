//! Authentication at the HTTP layer.

use serde_json::json;
use sqlx::PgPool;

use crate::harness::*;

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn missing_and_wrong_credentials_are_401(pool: PgPool) {
    let app = app(pool);
    let body = json!({"user_message": "hi", "client_user_id": USER});
    let none = app.post("/api/ai/chat", &[], body.clone()).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.error_code(), "unauthorized");
    assert_eq!(none.headers.get("www-authenticate").unwrap(), r#"Bearer realm="colloquy""#);

    let wrong_key = app.post("/api/ai/chat", &[("x-api-key", "not-the-key")], body.clone()).await;
    assert_eq!(wrong_key.status, 401);

    let expired = app.post("/api/ai/chat", &[("authorization", &bearer(USER, -3600))], json!({"message": "hi"})).await;
    assert_eq!(expired.status, 401);
    let challenge = expired.headers.get("www-authenticate").unwrap().to_str().unwrap();
    assert!(challenge.contains(r#"error="invalid_token""#), "{challenge}");

    let not_bearer =
        app.post("/api/ai/chat", &[("authorization", "Basic dXNlcjpwYXNz")], json!({"message": "hi"})).await;
    assert_eq!(not_bearer.status, 401);

    let get = app.get(&format!("/api/conversations/{}", uuid::Uuid::new_v4()), &[]).await;
    assert_eq!(get.status, 401);
    // Nothing was stored by any of them.
    assert_eq!(app.message_count().await, 0);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn bearer_is_refused_when_not_configured(pool: PgPool) {
    let mut config = config(&[]);
    config.jwt = Default::default();
    let app = app_with(pool, &config);
    let reply = app.post("/api/ai/chat", &[("authorization", &bearer(USER, 3600))], json!({"message": "hi"})).await;
    assert_eq!(reply.status, 401);
    assert!(reply.body["error"]["message"].as_str().unwrap().contains("not accepted"));
    // And no Bearer challenge is offered.
    let none = app.post("/api/ai/chat", &[], json!({"message": "hi"})).await;
    assert!(none.headers.get("www-authenticate").is_none());
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn start_conversation_needs_the_api_key(pool: PgPool) {
    let app = app(pool);
    let reply = app
        .post("/api/ai/start-conversation", &[("authorization", &bearer(USER, 3600))], json!({"client_user_id": USER}))
        .await;
    assert_eq!(reply.status, 401);
}

#[test]
fn api_key_comparison_is_constant_time() {
    // The comparison goes through `subtle` on fixed-size digests: check the source keeps it that way.
    let source = include_str!("../../src/auth/api_key.rs");
    assert!(source.contains("ct_eq"), "API key must be compared with subtle::ConstantTimeEq");
    assert!(!source.contains("== presented"), "no short-circuit comparison of keys");
    let key = chat_api::auth::api_key::ApiKey::new(&chat_api::config::Secret::new(API_KEY));
    assert!(key.matches(API_KEY.as_bytes()));
    assert!(!key.matches(&API_KEY.as_bytes()[..API_KEY.len() - 1]));
}

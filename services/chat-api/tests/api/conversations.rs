//! Reading conversations: ownership rules never leak another user's content.

use serde_json::json;
use sqlx::PgPool;

use crate::harness::*;

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn owner_rules_for_both_callers(pool: PgPool) {
    let app = app(pool);
    let reply = app.chat(json!({"user_message": "secret plans", "client_user_id": USER})).await;
    let id = reply.body["conversation_id"].as_str().unwrap().to_owned();
    let path = format!("/api/conversations/{id}");

    // API key without a user filter sees it; with the owner too; with another user: 404.
    assert_eq!(app.get(&path, &[("x-api-key", API_KEY)]).await.status, 200);
    assert_eq!(app.get(&format!("{path}?client_user_id={USER}"), &[("x-api-key", API_KEY)]).await.status, 200);
    let other = app.get(&format!("{path}?client_user_id={OTHER_USER}"), &[("x-api-key", API_KEY)]).await;
    assert_eq!(other.status, 404);
    assert_eq!(other.error_code(), "not_found");
    assert!(!other.body.to_string().contains("secret plans"));

    // Bearer: only the owner.
    assert_eq!(app.get(&path, &[("authorization", &bearer(USER, 3600))]).await.status, 200);
    let stranger = app.get(&path, &[("authorization", &bearer(OTHER_USER, 3600))]).await;
    assert_eq!(stranger.status, 404);
    assert!(!stranger.body.to_string().contains("secret plans"));

    // Seed shape.
    let got = app.get(&path, &[("x-api-key", API_KEY)]).await;
    let conversation = &got.body["conversation"];
    for key in ["conversation_id", "user_id", "title", "status", "created_at", "archived"] {
        assert!(conversation.get(key).is_some(), "missing {key} in {conversation}");
    }
    let message = &got.body["messages"][0];
    assert_eq!(message["role"], "user");
    assert_eq!(message["content"], json!({"text": "secret plans"}));
    assert!(message["id"].as_str().is_some() && message["created_at"].as_str().is_some());
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn unknown_and_malformed_ids(pool: PgPool) {
    let app = app(pool);
    let unknown = app.get(&format!("/api/conversations/{}", uuid::Uuid::new_v4()), &[("x-api-key", API_KEY)]).await;
    assert_eq!(unknown.status, 404);
    let malformed = app.get("/api/conversations/not-a-uuid", &[("x-api-key", API_KEY)]).await;
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.error_code(), "invalid_path");
    let bad_query = app
        .get(&format!("/api/conversations/{}?client_user_id=nope", uuid::Uuid::new_v4()), &[("x-api-key", API_KEY)])
        .await;
    assert_eq!(bad_query.status, 400);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn another_users_conversation_cannot_be_continued(pool: PgPool) {
    let app = app(pool);
    let reply = app.chat(json!({"user_message": "mine", "client_user_id": USER})).await;
    let id = reply.body["conversation_id"].as_str().unwrap();
    let before = app.message_count().await;
    let hijack = app.chat(json!({"conversation_id": id, "user_message": "theirs", "client_user_id": OTHER_USER})).await;
    assert_eq!(hijack.status, 404);
    assert_eq!(hijack.error_code(), "not_found");
    assert_eq!(app.message_count().await, before);
}

//! Chat turns and start-conversation, end to end through the router.

use serde_json::json;
use sqlx::PgPool;

use crate::harness::*;
use crate::support::FakeResponse;

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn proxy_chat_creates_a_conversation_and_stores_the_turn(pool: PgPool) {
    let app = app(pool);
    let reply = app.chat(json!({"user_message": "Hello, how are you?", "client_user_id": USER})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let id = reply.body["conversation_id"].as_str().unwrap().to_owned();
    let answer = reply.body["ai_response"].as_str().unwrap();
    assert!(answer.contains("Hello, how are you?"), "{answer}");
    assert_eq!(reply.body["meta"]["model"], "colloquy-mock");
    let usage = &reply.body["usage"];
    let (p, c, t) = (
        usage["prompt_tokens"].as_u64().unwrap(),
        usage["completion_tokens"].as_u64().unwrap(),
        usage["total_tokens"].as_u64().unwrap(),
    );
    assert!(p > 0 && c > 0);
    assert_eq!(p + c, t);

    let (model, token_usage, title) = app.conversation_row(&id).await;
    assert_eq!(model.as_deref(), Some("colloquy-mock"));
    assert_eq!(title.as_deref(), Some("Hello, how are you?"));
    assert_eq!(
        token_usage.unwrap(),
        json!({"prompt_tokens": p, "completion_tokens": c, "total_tokens": t, "turns": 1})
    );
    assert_eq!(app.message_count().await, 2);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn token_usage_accumulates_over_turns(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[]).await;
    upstream.push(FakeResponse::json(200, completion("one", 10, 3)));
    upstream.push(FakeResponse::json(200, completion("two", 20, 4)));
    upstream.push(FakeResponse::json(200, completion("three", 30, 5)));
    let first = app.chat(json!({"user_message": "a", "client_user_id": USER})).await;
    let id = first.body["conversation_id"].as_str().unwrap().to_owned();
    for text in ["b", "c"] {
        let reply = app.chat(json!({"conversation_id": id, "user_message": text, "client_user_id": USER})).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body["conversation_id"], id.as_str());
    }
    let (model, usage, _) = app.conversation_row(&id).await;
    assert_eq!(model.as_deref(), Some("gpt-test"));
    assert_eq!(usage.unwrap(), json!({"prompt_tokens": 60, "completion_tokens": 12, "total_tokens": 72, "turns": 3}));

    // The third call carried the whole conversation, oldest first.
    let sent = upstream.requests()[2].json();
    let roles_and_texts: Vec<(String, String)> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap().to_owned(), m["content"].as_str().unwrap().to_owned()))
        .collect();
    let expected: Vec<(String, String)> =
        [("user", "a"), ("assistant", "one"), ("user", "b"), ("assistant", "two"), ("user", "c")]
            .iter()
            .map(|(r, t)| ((*r).to_owned(), (*t).to_owned()))
            .collect();
    assert_eq!(roles_and_texts, expected);

    // Stored oldest first, alternating.
    let reply = app.get(&format!("/api/conversations/{id}"), &[("x-api-key", API_KEY)]).await;
    let texts: Vec<&str> =
        reply.body["messages"].as_array().unwrap().iter().map(|m| m["content"]["text"].as_str().unwrap()).collect();
    assert_eq!(texts, ["a", "one", "b", "two", "c", "three"]);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn context_is_system_prompt_then_newest_history_then_message(pool: PgPool) {
    let (app, upstream) =
        app_with_upstream(pool, &[("SYSTEM_PROMPT", "You are terse."), ("MAX_HISTORY_MESSAGES", "2")]).await;
    upstream.set_default(FakeResponse::json(200, completion("ok", 1, 1)));
    let history = json!(["h1", "h2", "h3", "h4"]);
    let first = app.chat(json!({"user_message": "m1", "client_user_id": USER, "history": history})).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let id = first.body["conversation_id"].as_str().unwrap();
    // The first call used the request history (newest 2), the second the stored messages (newest 2).
    let second = app
        .chat(json!({"conversation_id": id, "user_message": "m2", "client_user_id": USER, "history": ["ignored"]}))
        .await;
    assert_eq!(second.status, 200);
    let contents = |i: usize| -> Vec<String> {
        upstream.requests()[i].json()["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| format!("{}:{}", m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect()
    };
    assert_eq!(contents(0), ["system:You are terse.", "user:h3", "assistant:h4", "user:m1"]);
    assert_eq!(contents(1), ["system:You are terse.", "user:m1", "assistant:ok", "user:m2"]);
    // The request history was stored ahead of the first turn; the ignored one was not.
    assert_eq!(app.message_count().await, 4 + 2 + 2);
    let (_, _, title) = app.conversation_row(id).await;
    assert_eq!(title.as_deref(), Some("h1"));
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn start_conversation_without_history_answers_nothing(pool: PgPool) {
    let app = app(pool);
    let reply =
        app.post("/api/ai/start-conversation", &[("x-api-key", API_KEY)], json!({"client_user_id": USER})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["ai_response"], "");
    assert_eq!(reply.body["usage"], json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}));
    let id = reply.body["conversation_id"].as_str().unwrap();
    let got = app.get(&format!("/api/conversations/{id}?client_user_id={USER}"), &[("x-api-key", API_KEY)]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["conversation"]["user_id"], USER);
    assert_eq!(got.body["conversation"]["status"], "in-progress");
    assert_eq!(got.body["conversation"]["archived"], false);
    assert_eq!(got.body["messages"], json!([]));
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn start_conversation_stores_history_and_answers_a_trailing_user_message(pool: PgPool) {
    let app = app(pool);
    let even = app
        .post(
            "/api/ai/start-conversation",
            &[("x-api-key", API_KEY)],
            json!({"client_user_id": USER, "history": ["hi", "hello"]}),
        )
        .await;
    assert_eq!(even.status, 200);
    assert_eq!(even.body["ai_response"], "");
    assert_eq!(app.message_count().await, 2);

    let odd = app
        .post(
            "/api/ai/start-conversation",
            &[("x-api-key", API_KEY)],
            json!({"client_user_id": USER, "history": ["hi", "hello", "how are you?"]}),
        )
        .await;
    assert_eq!(odd.status, 200);
    assert!(odd.body["ai_response"].as_str().unwrap().contains("how are you?"));
    let id = odd.body["conversation_id"].as_str().unwrap();
    let got = app.get(&format!("/api/conversations/{id}"), &[("x-api-key", API_KEY)]).await;
    let roles: Vec<&str> =
        got.body["messages"].as_array().unwrap().iter().map(|m| m["role"].as_str().unwrap()).collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant"]);
    assert_eq!(got.body["conversation"]["title"], "hi");
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn bearer_caller_gets_the_simple_shape(pool: PgPool) {
    let app = app(pool);
    let token = bearer(USER, 3600);
    let reply = app.post("/api/ai/chat", &[("authorization", &token)], json!({"message": "Hello"})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let keys: Vec<&String> = reply.body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["conversation_id", "response"]);
    let id = reply.body["conversation_id"].as_str().unwrap();
    // Owned by the token's subject.
    let got = app.get(&format!("/api/conversations/{id}"), &[("authorization", &token)]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["conversation"]["user_id"], USER);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn long_titles_are_cut_at_a_character_boundary(pool: PgPool) {
    let app = app(pool);
    let message = "ü".repeat(300);
    let reply = app.chat(json!({"user_message": message, "client_user_id": USER})).await;
    let (_, _, title) = app.conversation_row(reply.body["conversation_id"].as_str().unwrap()).await;
    let title = title.unwrap();
    assert_eq!(title.chars().count(), 100);
    assert!(title.chars().all(|c| c == 'ü'));
}

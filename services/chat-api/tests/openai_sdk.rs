//! The official OpenAI SDKs (Python from PyPI, TypeScript from npm, pinned in
//! tests/openai-sdk/) as real clients of a live chat API on a real socket,
//! over PostgreSQL and a fake OpenAI-compatible upstream. The SDK scripts
//! check what each call returns and raises; this test then checks what they
//! read against what PostgreSQL holds and what the upstream received.

mod support;

#[allow(dead_code, reason = "the harness serves several test crates")]
#[path = "api/harness.rs"]
mod harness;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use sqlx::PgPool;

use harness::{API_KEY, OTHER_USER, USER};
use support::openai_echo;

const MODEL: &str = "gpt-test";

/// Serves the real router on 127.0.0.1 and runs `scripts/openai-sdk.sh <sdk>`
/// against it; returns the script's `RESULT` and the upstream.
async fn run_sdk(pool: PgPool, sdk: &'static str) -> (Value, support::FakeUpstream) {
    let upstream = openai_echo::start().await;
    let base = format!("{}/v1", upstream.url);
    let config = harness::config(&[("LLM_PROVIDER", "openai"), ("OPENAI_BASE_URL", &base), ("OPENAI_MODEL", MODEL)]);
    let app = harness::app_with(pool, &config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app.router.into_make_service()).await });

    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let jwt = harness::bearer(USER, 3600).trim_start_matches("Bearer ").to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("bash")
            .arg(repo.join("scripts/openai-sdk.sh"))
            .arg(sdk)
            .env("COLLOQUY_BASE_URL", &url)
            .env("COLLOQUY_API_KEY", API_KEY)
            .env("COLLOQUY_USER", USER)
            .env("COLLOQUY_OTHER_USER", OTHER_USER)
            .env("COLLOQUY_JWT", jwt)
            .env("COLLOQUY_MODEL", MODEL)
            .output()
            .expect("bash runs")
    })
    .await
    .unwrap();
    server.abort();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the {sdk} SDK script failed:\n{stdout}\n{stderr}");
    let result = stdout
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("no RESULT line from the {sdk} SDK script:\n{stdout}\n{stderr}"));
    (serde_json::from_str(result).unwrap(), upstream)
}

/// Texts of a conversation's stored messages, in stored order.
async fn stored_texts(pool: &PgPool, conversation: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT content->>'text' FROM chatbot_user_memory WHERE conversation_id = $1::uuid \
         ORDER BY created_at, id",
    )
    .bind(conversation)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The chat messages (role, content) of the upstream request whose last message is `last`.
fn upstream_context(upstream: &support::FakeUpstream, last: &str) -> Vec<(String, String)> {
    let request = upstream
        .requests()
        .into_iter()
        .find(|r| r.json()["messages"].as_array().and_then(|m| m.last()).is_some_and(|m| m["content"] == last))
        .unwrap_or_else(|| panic!("no upstream request ends with {last:?}"));
    request.json()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["role"].as_str().unwrap().to_owned(), m["content"].as_str().unwrap().to_owned()))
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(r, c)| ((*r).to_owned(), (*c).to_owned())).collect()
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn python_sdk(pool: PgPool) {
    let (result, upstream) = run_sdk(pool.clone(), "python").await;
    // What the SDK read back is what is stored.
    let conversation = result["conversation"].as_str().unwrap();
    let read: Vec<String> = serde_json::from_value(result["texts"].clone()).unwrap();
    assert_eq!(stored_texts(&pool, conversation).await, read);
    // The continued turn (previous_response_id) carried the earlier turns, and its instructions.
    assert_eq!(
        upstream_context(&upstream, "second turn"),
        pairs(&[
            ("system", "Answer kindly."),
            ("user", "Seeded question"),
            ("assistant", "Seeded answer"),
            ("user", "first turn"),
            ("assistant", "echo: first turn"),
            ("user", "second turn"),
        ])
    );
    // The chat completion went upstream as sent; nothing of it was stored.
    assert_eq!(upstream_context(&upstream, "Hello there"), pairs(&[("system", "Be brief."), ("user", "Hello there")]));
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM chatbot_user_memory WHERE content->>'text' IN ('Hello there', 'stream me please')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(stored, 0, "chat completions are stateless");
    // The rate-limited turn stored nothing; the deleted conversation is gone.
    assert!(!stored_texts(&pool, conversation).await.iter().any(|t| t.starts_with("rate-limit")));
    assert!(stored_texts(&pool, result["deleted"].as_str().unwrap()).await.is_empty());
    // Usage accumulated over the three answered turns.
    let usage: Value =
        sqlx::query_scalar("SELECT token_usage FROM chatbot_conversation_audit WHERE conversation_id = $1::uuid")
            .bind(conversation)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(usage["turns"], 3, "{usage}");
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn typescript_sdk(pool: PgPool) {
    let (result, upstream) = run_sdk(pool.clone(), "node").await;
    assert_eq!(
        upstream_context(&upstream, "node second"),
        pairs(&[("user", "node first"), ("assistant", "echo: node first"), ("user", "node second")])
    );
    // The script deleted its conversation at the end: nothing of it is left.
    let conversation = result["conversation"].as_str().unwrap();
    assert!(stored_texts(&pool, conversation).await.is_empty());
    assert_eq!(result["texts"].as_array().unwrap().len(), 7);
}

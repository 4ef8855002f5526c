//! Provider faults through the HTTP API: what the caller sees (status, code,
//! `Retry-After`, `meta.model`), `/readyz` and the metrics, and that nothing
//! is stored for a failed turn.

use serde_json::json;
use sqlx::PgPool;

use crate::harness::*;
use crate::stream::{proxy, send_stream};
use crate::support::{FakeResponse, FakeUpstream};

fn server_error() -> FakeResponse {
    FakeResponse::json(503, json!({"error": {"message": "The engine is currently overloaded", "type": "server_error"}}))
}

fn metric_line<'a>(metrics: &'a str, prefix: &str) -> Option<&'a str> {
    metrics.lines().find(|l| l.starts_with(prefix))
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn a_transient_fault_is_retried_and_the_turn_stored_once(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[("LLM_MAX_RETRIES", "2")]).await;
    upstream.push(server_error());
    upstream.push(
        FakeResponse::json(429, json!({"error": {"message": "Rate limit reached", "type": "requests"}}))
            .with_header("retry-after-ms", "50"),
    );
    upstream.push(FakeResponse::json(200, completion("third attempt", 4, 2)));
    let reply = app.chat(json!({"user_message": "hi", "client_user_id": USER})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["ai_response"], "third attempt");
    assert_eq!(upstream.requests().len(), 3);
    assert_eq!(app.message_count().await, 2);
    let metrics = app.metrics().await;
    for reason in ["server_error", "rate_limited"] {
        let prefix =
            format!(r#"colloquy_provider_retries_total{{endpoint="primary",provider="openai",reason="{reason}"}}"#);
        assert_eq!(metric_line(&metrics, &prefix), Some(format!("{prefix} 1").as_str()), "{metrics}");
    }
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn insufficient_quota_is_a_clear_502_without_retries(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[("LLM_MAX_RETRIES", "2")]).await;
    upstream.set_default(FakeResponse::json(
        429,
        json!({"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
                         "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}),
    ));
    let reply = app.chat(json!({"user_message": "hi", "client_user_id": USER})).await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(reply.error_code(), "upstream_quota_exhausted");
    assert!(reply.body["error"]["message"].as_str().unwrap().contains("quota"));
    assert!(reply.headers.get("retry-after").is_none());
    assert_eq!(upstream.requests().len(), 1);
    assert_eq!(app.message_count().await, 0);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn an_open_breaker_is_503_upstream_unavailable_and_readyz_stays_ready(pool: PgPool) {
    let (app, upstream) =
        app_with_upstream(pool, &[("LLM_BREAKER_FAILURES", "2"), ("LLM_BREAKER_COOLDOWN_SECS", "30")]).await;
    let ready = app.get("/readyz", &[]).await;
    assert_eq!(ready.body["providers"], json!([{"endpoint": "primary", "provider": "openai", "breaker": "closed"}]));
    upstream.set_default(server_error());
    for _ in 0..2 {
        assert_eq!(app.chat(json!({"user_message": "hi", "client_user_id": USER})).await.status, 502);
    }
    let reply = app.chat(json!({"user_message": "hi", "client_user_id": USER})).await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.error_code(), "upstream_unavailable");
    let retry_after: u64 = reply.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((29..=30).contains(&retry_after), "{retry_after}");
    assert_eq!(upstream.requests().len(), 2, "the open breaker made no request");
    // Streamed turns fail fast too.
    let streamed =
        send_stream(&app, &proxy(), json!({"user_message": "hi", "client_user_id": USER, "stream": true})).await;
    let last = streamed.events.last().unwrap();
    assert_eq!((last.event.as_str(), &last.data["error"]["code"]), ("error", &json!("upstream_unavailable")));
    assert_eq!(upstream.requests().len(), 2);

    let ready = app.get("/readyz", &[]).await;
    assert_eq!(ready.status, 200, "the pod stays ready: {}", ready.body);
    assert_eq!(ready.body["status"], "ready");
    assert_eq!(ready.body["providers"][0]["breaker"], "open");
    assert!(ready.body["providers"][0]["retry_after_secs"].as_u64().is_some_and(|s| s <= 30));
    let metrics = app.metrics().await;
    let gauge = r#"colloquy_provider_breaker_state{endpoint="primary",provider="openai"}"#;
    assert_eq!(metric_line(&metrics, gauge), Some(format!("{gauge} 1").as_str()), "{metrics}");
    assert_eq!(app.message_count().await, 0);
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn the_fallback_provider_answers_and_meta_model_says_so(pool: PgPool) {
    let fallback = FakeUpstream::start().await;
    let mut answer = completion("the fallback answers", 4, 3);
    answer["model"] = json!("llama-3.1-8b-instruct");
    fallback.set_default(FakeResponse::json(200, answer));
    let fallback_base = format!("{}/v1", fallback.url);
    let (app, upstream) = app_with_upstream(
        pool,
        &[
            ("LLM_MAX_RETRIES", "1"),
            ("FALLBACK_LLM_PROVIDER", "openai"),
            ("FALLBACK_OPENAI_BASE_URL", &fallback_base),
            ("FALLBACK_OPENAI_MODEL", "llama-3.1-8b-instruct"),
        ],
    )
    .await;
    upstream.set_default(server_error());
    let reply = app.chat(json!({"user_message": "hi", "client_user_id": USER})).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["ai_response"], "the fallback answers");
    assert_eq!(reply.body["meta"]["model"], "llama-3.1-8b-instruct");
    assert_eq!(upstream.requests().len(), 2, "the primary was tried and retried first");
    assert_eq!(fallback.single_request().json()["model"], "llama-3.1-8b-instruct");
    let id = reply.body["conversation_id"].as_str().unwrap();
    assert_eq!(app.conversation_row(id).await.0.as_deref(), Some("llama-3.1-8b-instruct"));

    let ready = app.get("/readyz", &[]).await;
    let endpoints: Vec<&str> =
        ready.body["providers"].as_array().unwrap().iter().map(|p| p["endpoint"].as_str().unwrap()).collect();
    assert_eq!(endpoints, ["primary", "fallback"]);
    let metrics = app.metrics().await;
    let counter =
        r#"colloquy_provider_fallbacks_total{fallback_provider="openai",provider="openai",reason="retries_exhausted"}"#;
    assert_eq!(metric_line(&metrics, counter), Some(format!("{counter} 1").as_str()), "{metrics}");
}

#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn a_streamed_turn_is_retried_before_its_first_delta_only(pool: PgPool) {
    let (app, upstream) = app_with_upstream(pool, &[("LLM_MAX_RETRIES", "2")]).await;
    let chunk = |content: &str, finish: Option<&str>| {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test",
               "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]})
        .to_string()
    };
    upstream.push(server_error());
    upstream.push(FakeResponse::sse(vec![chunk("Re", None), chunk("tried", Some("stop")), "[DONE]".into()]));
    let body = json!({"user_message": "hi", "client_user_id": USER, "stream": true});
    let reply = send_stream(&app, &proxy(), body.clone()).await;
    let kinds: Vec<&str> = reply.events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds, ["conversation", "delta", "delta", "done"], "{:?}", reply.events);
    assert_eq!(upstream.requests().len(), 2);
    assert_eq!(app.message_count().await, 2);

    // Failing after its first delta reached the caller: an error event, no retry.
    upstream.push(FakeResponse::sse(vec![
        chunk("Half", None),
        json!({"error": {"message": "The server had an error", "type": "server_error", "code": 500}}).to_string(),
    ]));
    upstream.set_default(FakeResponse::sse(vec![chunk("never sent", Some("stop")), "[DONE]".into()]));
    let reply = send_stream(&app, &proxy(), body).await;
    let kinds: Vec<&str> = reply.events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds, ["conversation", "delta", "error"], "{:?}", reply.events);
    assert_eq!(upstream.requests().len(), 3);
    assert_eq!(app.message_count().await, 2);
}

async fn load(pairs: &[(&str, &str)]) -> Result<chat_api::config::Config, chat_api::config::ConfigError> {
    let mut all = vec![
        ("DATABASE_URL", "postgres://u:p@localhost/db"),
        ("INTERNAL_API_KEY", "0123456789abcdef"),
        ("LLM_PROVIDER", "mock"),
    ];
    all.extend_from_slice(pairs);
    let timeout = chat_api::config::secrets::SECRET_MANAGER_TIMEOUT;
    chat_api::config::Config::load_vars(&all, &reqwest::Client::new(), timeout).await
}

#[tokio::test]
async fn retry_breaker_and_fallback_settings_are_read_and_checked() {
    use chat_api::config::{ConfigError, ProviderConfig};
    use chat_api::llm::resilience::ResilienceConfig;
    use std::time::Duration;

    let defaults = load(&[]).await.unwrap();
    assert_eq!(
        defaults.resilience,
        ResilienceConfig { max_retries: 2, breaker_failures: 5, breaker_cooldown: Duration::from_secs(30) }
    );
    assert_eq!(defaults.fallback_provider, None);

    let dir = std::env::temp_dir().join(format!("colloquy-fallback-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("key");
    std::fs::write(&key_file, "sk-fallback-from-file\n").unwrap();
    let config = load(&[
        ("LLM_MAX_RETRIES", "0"),
        ("LLM_BREAKER_FAILURES", "0"),
        ("LLM_BREAKER_COOLDOWN_SECS", "7"),
        ("FALLBACK_LLM_PROVIDER", "openai"),
        ("FALLBACK_OPENAI_BASE_URL", "http://vllm:8000/v1/"),
        ("FALLBACK_OPENAI_MODEL", "llama"),
        ("FALLBACK_OPENAI_API_KEY_FILE", key_file.to_str().unwrap()),
    ])
    .await
    .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        config.resilience,
        ResilienceConfig { max_retries: 0, breaker_failures: 0, breaker_cooldown: Duration::from_secs(7) }
    );
    match config.fallback_provider {
        Some(ProviderConfig::OpenAi { base_url, model, api_key }) => {
            assert_eq!((base_url.as_str(), model.as_str()), ("http://vllm:8000/v1", "llama"));
            assert_eq!(api_key.unwrap().expose(), "sk-fallback-from-file");
        }
        other => panic!("expected the OpenAI fallback, got {other:?}"),
    }
    assert_eq!(config.provider, ProviderConfig::Mock, "the primary is untouched");

    let var = |err: ConfigError| match err {
        ConfigError::Missing { var, .. } | ConfigError::Invalid { var, .. } | ConfigError::Unreadable { var, .. } => {
            var
        }
    };
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("LLM_MAX_RETRIES", "-1")], "LLM_MAX_RETRIES"),
        (&[("LLM_MAX_RETRIES", "11")], "LLM_MAX_RETRIES"),
        (&[("LLM_BREAKER_FAILURES", "many")], "LLM_BREAKER_FAILURES"),
        (&[("LLM_BREAKER_COOLDOWN_SECS", "0")], "LLM_BREAKER_COOLDOWN_SECS"),
        (&[("FALLBACK_LLM_PROVIDER", "gpt")], "FALLBACK_LLM_PROVIDER"),
        (&[("FALLBACK_LLM_PROVIDER", "mock")], "FALLBACK_LLM_PROVIDER"),
        (&[("FALLBACK_LLM_PROVIDER", "openai"), ("FALLBACK_OPENAI_MODEL", "m")], "FALLBACK_OPENAI_BASE_URL"),
        (
            &[
                ("FALLBACK_LLM_PROVIDER", "openai"),
                ("FALLBACK_OPENAI_BASE_URL", "ftp://x"),
                ("FALLBACK_OPENAI_MODEL", "m"),
            ],
            "FALLBACK_OPENAI_BASE_URL",
        ),
        (&[("FALLBACK_LLM_PROVIDER", "azure-openai")], "FALLBACK_AZURE_OPENAI_ENDPOINT"),
        (
            &[("FALLBACK_LLM_PROVIDER", "vertex-ai"), ("FALLBACK_VERTEX_LOCATION", "us-central1")],
            "FALLBACK_VERTEX_PROJECT_ID",
        ),
    ];
    for (pairs, expected) in cases {
        let err = load(pairs).await.expect_err(&format!("{pairs:?} should fail"));
        assert_eq!(var(err), *expected, "{pairs:?}");
    }
}

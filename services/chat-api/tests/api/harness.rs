//! Builds the real application router over a test database and calls it in-process.

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use chat_api::config::Config;
use chat_api::server;
use serde_json::Value;
use sqlx::PgPool;
use tower::ServiceExt;

use crate::support::FakeUpstream;

pub const API_KEY: &str = "test-internal-api-key-0123";
pub const JWT_SECRET: &str = "test-jwt-secret-that-is-long-enough";
pub const USER: &str = "2f1a4d4e-8c36-4c5c-9b1b-6a3b6a4a1b2c";
pub const OTHER_USER: &str = "7d3c2a1b-0000-4000-8000-000000000002";

pub struct TestApp {
    pub router: Router,
    pub pool: PgPool,
    pub metrics_router: Router,
    pub state: chat_api::routes::AppState,
    /// Stops the background worker when the app is dropped.
    _worker_stop: tokio::sync::watch::Sender<bool>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn error_code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_else(|| panic!("no error code in {}", self.body))
    }
}

/// Configuration for tests: mock provider unless `vars` say otherwise, and
/// summaries off (the service's default is on): a background summary call
/// would take scripted upstream answers meant for turns. Summary tests turn
/// them on with `("SUMMARIES", "on")`. No provider retries either: each
/// scripted upstream answer is the only attempt unless a test turns them on.
pub fn config(vars: &[(&str, &str)]) -> Config {
    let mut all = vec![
        ("LLM_PROVIDER", "mock"),
        ("LOG_FORMAT", "text"),
        ("LLM_MAX_RETRIES", "0"),
        ("SUMMARIES", "off"),
        ("DATABASE_URL", "postgres://unused@127.0.0.1:1/unused"),
        ("INTERNAL_API_KEY", API_KEY),
        ("JWT_SECRET", JWT_SECRET),
    ];
    all.extend_from_slice(vars);
    Config::from_vars(&all).expect("test configuration is valid")
}

/// The app over `pool`, with its background worker running (as in `serve`).
pub fn app_with(pool: PgPool, config: &Config) -> TestApp {
    let state = server::state(config, pool.clone(), server::http_client());
    let router = chat_api::routes::api_router(state.clone());
    let metrics_router = chat_api::routes::metrics_router(state.metrics.clone(), pool.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(chat_api::chat::worker::run(state.chat.clone(), stopped));
    TestApp { router, pool, metrics_router, state, _worker_stop: stop }
}

pub fn app(pool: PgPool) -> TestApp {
    app_with(pool, &config(&[]))
}

/// The URL of the test database behind `pool` (the test script's
/// `DATABASE_URL`, with the per-test database's name).
pub fn database_url(pool: &PgPool) -> String {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for the tests");
    let mut url = reqwest::Url::parse(&base).expect("DATABASE_URL is a URL");
    url.set_path(pool.connect_options().get_database().expect("the test pool names its database"));
    url.to_string()
}

/// A second, independent pool on the same database, with the service's own
/// pool settings (what another replica would have).
pub fn service_pool(url: &str, max_connections: u32) -> PgPool {
    chat_api::db::lazy_pool(&chat_api::config::DatabaseConfig {
        url: chat_api::config::Secret::new(url),
        max_connections,
        min_connections: 0,
        connect_timeout: std::time::Duration::from_secs(5),
    })
    .expect("valid database URL")
}

/// The app with the OpenAI-compatible provider pointed at a fake upstream.
pub async fn app_with_upstream(pool: PgPool, vars: &[(&str, &str)]) -> (TestApp, FakeUpstream) {
    let upstream = FakeUpstream::start().await;
    let base = format!("{}/v1", upstream.url);
    let mut all = vec![("LLM_PROVIDER", "openai"), ("OPENAI_BASE_URL", base.as_str()), ("OPENAI_MODEL", "gpt-test")];
    all.extend_from_slice(vars);
    let app = app_with(pool, &config(&all));
    (app, upstream)
}

/// A real-shaped OpenAI chat completion.
pub fn completion(text: &str, prompt_tokens: u64, completion_tokens: u64) -> Value {
    serde_json::json!({
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-test",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                  "total_tokens": prompt_tokens + completion_tokens}
    })
}

impl TestApp {
    pub async fn request(&self, method: Method, uri: &str, headers: &[(&str, &str)], body: Option<String>) -> Reply {
        send(&self.router, method, uri, headers, body).await
    }

    pub async fn post(&self, uri: &str, headers: &[(&str, &str)], body: Value) -> Reply {
        self.request(Method::POST, uri, &with_json(headers), Some(body.to_string())).await
    }

    pub async fn get(&self, uri: &str, headers: &[(&str, &str)]) -> Reply {
        self.request(Method::GET, uri, headers, None).await
    }

    pub async fn patch(&self, uri: &str, headers: &[(&str, &str)], body: Value) -> Reply {
        self.request(Method::PATCH, uri, &with_json(headers), Some(body.to_string())).await
    }

    pub async fn delete(&self, uri: &str, headers: &[(&str, &str)]) -> Reply {
        self.request(Method::DELETE, uri, headers, None).await
    }

    /// A proxy-shape chat turn with the API key.
    pub async fn chat(&self, body: Value) -> Reply {
        self.post("/api/ai/chat", &[("x-api-key", API_KEY)], body).await
    }

    pub async fn metrics(&self) -> String {
        let reply = send_raw(&self.metrics_router, Method::GET, "/metrics", &[], None).await;
        String::from_utf8(reply.2).expect("metrics are UTF-8")
    }

    pub async fn message_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM chatbot_user_memory").fetch_one(&self.pool).await.unwrap()
    }

    pub async fn conversation_row(&self, id: &str) -> (Option<String>, Option<Value>, Option<String>) {
        sqlx::query_as(
            "SELECT model, token_usage, title FROM chatbot_conversation_audit WHERE conversation_id = $1::uuid",
        )
        .bind(id)
        .fetch_one(&self.pool)
        .await
        .unwrap()
    }
}

fn with_json<'a>(headers: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    all
}

pub async fn send_raw(
    router: &Router,
    method: Method,
    uri: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut builder = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let request = builder.body(body.map(Body::from).unwrap_or_else(Body::empty)).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, headers, bytes.to_vec())
}

pub async fn send(router: &Router, method: Method, uri: &str, headers: &[(&str, &str)], body: Option<String>) -> Reply {
    let (status, headers, bytes) = send_raw(router, method, uri, headers, body).await;
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Reply { status, headers, body }
}

/// An HS256 bearer token for `sub`, valid for an hour unless `exp_offset` says otherwise.
pub fn bearer(sub: &str, exp_offset_secs: i64) -> String {
    let exp = chrono::Utc::now().timestamp() + exp_offset_secs;
    let claims = serde_json::json!({"sub": sub, "exp": exp});
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    format!("Bearer {token}")
}

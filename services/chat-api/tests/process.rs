//! The real `chat-api` binary: command line and environment, and graceful
//! shutdown on SIGTERM.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;
use support::{FakeResponse, FakeUpstream};

const BIN: &str = env!("CARGO_BIN_EXE_chat-api");
const API_KEY: &str = "process-test-api-key-0123";
const USER: &str = "2f1a4d4e-8c36-4c5c-9b1b-6a3b6a4a1b2c";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The per-test database's URL.
fn database_url(pool: &PgPool) -> String {
    let mut url = reqwest::Url::parse(&std::env::var("DATABASE_URL").unwrap()).unwrap();
    url.set_path(pool.connect_options().get_database().unwrap());
    url.to_string()
}

fn chat_api(args: &[&str], vars: &[(&str, &str)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.args(args).env_clear().envs(vars.iter().copied()).kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn help_lists_settings_without_secret_values() {
    let out = chat_api(
        &["serve", "--help"],
        &[("INTERNAL_API_KEY", "super-secret-api-key-value"), ("PORT", "8123"), ("JWT_SECRET", "jwt-hidden-value")],
    )
    .output()
    .await
    .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(
        help.contains("INTERNAL_API_KEY") && help.contains("RATE_LIMIT_RPM") && help.contains("SHUTDOWN_GRACE_SECS")
    );
    assert!(help.contains("PORT=8123"), "plain values are shown:\n{help}");
    assert!(!help.contains("super-secret-api-key-value") && !help.contains("jwt-hidden-value"), "{help}");
}

#[tokio::test]
async fn a_bad_variable_stops_the_process_naming_it() {
    let out = chat_api(&["serve"], &[("PORT", "eighty"), ("INTERNAL_API_KEY", API_KEY)]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("PORT is invalid") && err.contains("eighty"), "{err}");
    let out = chat_api(&["migrate"], &[("LOG_FORMAT", "xml")]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("LOG_FORMAT"));
}

/// SIGTERM during a slow turn: readiness fails at once while connections are
/// still accepted, then new connections are refused, the turn completes and
/// is stored, and the process exits 0.
#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn sigterm_drains_finishes_the_turn_and_exits_0(pool: PgPool) {
    let upstream = FakeUpstream::start().await;
    upstream.set_default(
        FakeResponse::json(
            200,
            json!({"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-test",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": "finished"}, "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}),
        )
        .with_delay(Duration::from_secs(4)),
    );
    let (port, metrics_port) = (free_port(), free_port());
    let (port_s, metrics_s) = (port.to_string(), metrics_port.to_string());
    let db = database_url(&pool);
    let base = format!("{}/v1", upstream.url);
    let mut child = chat_api(
        &["serve"],
        &[
            ("HOST", "127.0.0.1"),
            ("PORT", &port_s),
            ("METRICS_PORT", &metrics_s),
            ("DATABASE_URL", &db),
            ("INTERNAL_API_KEY", API_KEY),
            ("LLM_PROVIDER", "openai"),
            ("OPENAI_BASE_URL", &base),
            ("OPENAI_MODEL", "gpt-test"),
            ("SHUTDOWN_DRAIN_SECS", "1"),
            ("SHUTDOWN_GRACE_SECS", "10"),
            ("RUST_LOG", "warn"),
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    // A new connection per request: what a load balancer's new clients do.
    let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let started = Instant::now();
    while http.get(format!("{url}/readyz")).send().await.map(|r| r.status() != 200).unwrap_or(true) {
        assert!(started.elapsed() < Duration::from_secs(20), "chat-api did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let turn = {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            http.post(format!("{url}/api/ai/chat"))
                .header("x-api-key", API_KEY)
                .json(&json!({"user_message": "take your time", "client_user_id": USER}))
                .send()
                .await
        })
    };
    while upstream.requests().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = i32::try_from(child.id().unwrap()).unwrap();
    // SAFETY: sends a signal to the child we spawned; no memory is touched.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let signalled = Instant::now();

    // Draining: not ready, but new connections are still accepted and served.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = http.get(format!("{url}/readyz")).send().await.expect("accepted during the drain");
    assert_eq!(ready.status(), 503);
    assert_eq!(ready.json::<serde_json::Value>().await.unwrap()["status"], "shutting_down");
    assert_eq!(http.get(format!("{url}/livez")).send().await.unwrap().status(), 200);

    // After the drain: refused.
    tokio::time::sleep(Duration::from_millis(1300).saturating_sub(signalled.elapsed())).await;
    let refused = http.get(format!("{url}/livez")).send().await;
    assert!(refused.as_ref().is_err_and(|e| e.is_connect()), "expected a refused connection, got {refused:?}");

    // The turn that was running finishes, is stored, and the process exits 0.
    let reply = turn.await.unwrap().expect("the in-flight turn was answered");
    assert_eq!(reply.status(), 200);
    assert_eq!(reply.json::<serde_json::Value>().await.unwrap()["ai_response"], "finished");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.expect("exited").unwrap();
    assert!(status.success(), "exit status {status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(8), "took {:?}", signalled.elapsed());
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM chatbot_user_memory").fetch_one(&pool).await.unwrap();
    assert_eq!(stored, 2);
}

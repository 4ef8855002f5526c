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
    while turn_calls(&upstream) == 0 {
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

/// `serve` probes the provider (`GET /models`) at start-up and every minute:
/// answered apart, so scripted answers are left to the turns.
fn answer_probes(upstream: &FakeUpstream) {
    upstream.respond_with(|r| {
        r.path.ends_with("/models").then(|| FakeResponse::json(200, json!({"object": "list", "data": []})))
    });
}

/// The chat completion calls `upstream` received (not the probes).
fn turn_calls(upstream: &FakeUpstream) -> usize {
    upstream.requests().iter().filter(|r| r.path.ends_with("/chat/completions")).count()
}

/// One `chat-api serve` process on `db`, talking to `upstream`, ready.
struct Server {
    child: tokio::process::Child,
    url: String,
}

impl Server {
    async fn start(db: &str, upstream: &FakeUpstream, vars: &[(&str, &str)]) -> Server {
        let (port, metrics_port) = (free_port().to_string(), free_port().to_string());
        let base = format!("{}/v1", upstream.url);
        let mut all: Vec<(&str, &str)> = vec![
            ("HOST", "127.0.0.1"),
            ("PORT", &port),
            ("METRICS_PORT", &metrics_port),
            ("DATABASE_URL", db),
            ("INTERNAL_API_KEY", API_KEY),
            ("LLM_PROVIDER", "openai"),
            ("OPENAI_BASE_URL", &base),
            ("OPENAI_MODEL", "gpt-test"),
            ("SUMMARIES", "off"),
        ];
        all.extend_from_slice(vars);
        answer_probes(upstream);
        let child = chat_api(&["serve"], &all).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        while reqwest::get(format!("{url}/readyz")).await.map(|r| r.status() != 200).unwrap_or(true) {
            assert!(started.elapsed() < Duration::from_secs(20), "chat-api did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Server { child, url }
    }

    fn chat(&self, http: &reqwest::Client, body: serde_json::Value) -> reqwest::RequestBuilder {
        http.post(format!("{}/api/ai/chat", self.url)).header("x-api-key", API_KEY).json(&body)
    }

    /// SIGTERM, wait for the exit, and everything the process wrote.
    async fn stop(self) -> String {
        let pid = i32::try_from(self.child.id().unwrap()).unwrap();
        // SAFETY: sends a signal to the child we spawned; no memory is touched.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        self.stop_after_signal().await
    }

    /// Waits for the exit (0) of a process already signalled; what it wrote.
    async fn stop_after_signal(self) -> String {
        let out = tokio::time::timeout(Duration::from_secs(30), self.child.wait_with_output())
            .await
            .expect("exited")
            .unwrap();
        assert!(out.status.success(), "exit status {:?}", out.status);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }
}

fn completion(content: &str) -> FakeResponse {
    FakeResponse::json(
        200,
        json!({"id": "c", "object": "chat.completion", "created": 1, "model": "gpt-test",
               "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
               "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}),
    )
}

/// Two processes on one database enforce one rate limit and one set of
/// idempotency keys: the counters and claims live in PostgreSQL, not in
/// either process.
#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn two_processes_share_the_limits_and_idempotency_keys(pool: PgPool) {
    let upstream = FakeUpstream::start().await;
    upstream.set_default(completion("shared"));
    let db = database_url(&pool);
    let limits = [("RATE_LIMIT_RPM", "3"), ("RUST_LOG", "warn")];
    let (a, b) = tokio::join!(Server::start(&db, &upstream, &limits), Server::start(&db, &upstream, &limits));
    let http = reqwest::Client::new();

    // The same key on the other process: replayed, not run again.
    let body = json!({"user_message": "once only", "client_user_id": USER});
    let first = a.chat(&http, body.clone()).header("idempotency-key", "k-1").send().await.unwrap();
    assert_eq!(first.status(), 200);
    let first: serde_json::Value = first.json().await.unwrap();
    let again = b.chat(&http, body).header("idempotency-key", "k-1").send().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<serde_json::Value>().await.unwrap(), first);
    assert_eq!(turn_calls(&upstream), 1, "the replay did not call the provider");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM chatbot_user_memory").fetch_one(&pool).await.unwrap();
    assert_eq!(stored, 2, "one turn, stored once");

    // Two requests counted so far (one per process); a third fits, the fourth
    // is over the one limit of 3 per minute whichever process gets it.
    let third = a.chat(&http, json!({"user_message": "three", "client_user_id": USER})).send().await.unwrap();
    assert_eq!(third.status(), 200);
    assert_eq!(third.headers()["x-ratelimit-remaining-requests"], "0");
    let fourth = b.chat(&http, json!({"user_message": "four", "client_user_id": USER})).send().await.unwrap();
    assert_eq!(fourth.status(), 429);
    assert!(fourth.headers().contains_key("retry-after"));
    assert_eq!(fourth.json::<serde_json::Value>().await.unwrap()["error"]["code"], "rate_limited");
    a.stop().await;
    b.stop().await;
}

/// The logs of a full run at `debug` (turns by key and by Bearer token, a
/// provider error, a rejected credential) hold none of the internal API key,
/// the provider key, the JWT secret, a JWT, or any message text.
#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn the_logs_of_a_run_hold_no_secrets_and_no_message_text(pool: PgPool) {
    const PROVIDER_KEY: &str = "sk-provider-key-that-must-not-leak-7f3a";
    const JWT_SECRET: &str = "jwt-secret-that-must-not-leak-0b9c22";
    const USER_TEXT: &str = "my secret diagnosis is quux-5521";
    const AI_TEXT: &str = "the answer mentions zork-9034";
    let upstream = FakeUpstream::start().await;
    upstream.push(completion(AI_TEXT));
    upstream.push(completion(AI_TEXT));
    upstream.push(FakeResponse::json(
        400,
        json!({"error": {"message": format!("bad request about {USER_TEXT}"), "type": "invalid_request_error", "code": null}}),
    ));
    let db = database_url(&pool);
    let server = Server::start(
        &db,
        &upstream,
        &[
            ("RUST_LOG", "debug"),
            ("LOG_FORMAT", "json"),
            ("OPENAI_API_KEY", PROVIDER_KEY),
            ("JWT_SECRET", JWT_SECRET),
            ("IDEMPOTENCY_TTL_SECS", "60"),
        ],
    )
    .await;
    let http = reqwest::Client::new();
    let turn = server.chat(&http, json!({"user_message": USER_TEXT, "client_user_id": USER})).send().await.unwrap();
    assert_eq!(turn.status(), 200);
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "log-test-user", "exp": chrono::Utc::now().timestamp() + 600}),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let bearer = http
        .post(format!("{}/api/ai/chat", server.url))
        .bearer_auth(&jwt)
        .header("idempotency-key", "log-key")
        .json(&json!({"message": USER_TEXT}))
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 200);
    let failed = server.chat(&http, json!({"user_message": USER_TEXT, "client_user_id": USER})).send().await.unwrap();
    assert_eq!(failed.status(), 502);
    let wrong = http
        .post(format!("{}/api/ai/chat", server.url))
        .header("x-api-key", format!("{API_KEY}-wrong"))
        .json(&json!({"user_message": USER_TEXT, "client_user_id": USER}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let call = upstream.requests().into_iter().find(|r| r.path.ends_with("/chat/completions")).unwrap();
    assert_eq!(call.header("authorization").as_deref(), Some(&*format!("Bearer {PROVIDER_KEY}")));

    let logs = server.stop().await;
    assert!(logs.lines().count() > 10, "the run logged: {logs}");
    assert!(logs.contains("502"), "the failed turn is logged: {logs}");
    let jwt_signature = jwt.rsplit('.').next().unwrap();
    for (what, needle) in [
        ("the internal API key", API_KEY),
        ("the provider key", PROVIDER_KEY),
        ("the JWT secret", JWT_SECRET),
        ("a JWT", jwt_signature),
        ("message text", "quux-5521"),
        ("answer text", "zork-9034"),
    ] {
        let leak = logs.lines().find(|l| l.contains(needle));
        assert!(leak.is_none(), "{what} appears in the logs: {}", leak.unwrap_or_default());
    }
}

/// SIGTERM while a streamed answer is open: the stream runs to its `done`
/// event (the turn is stored) before the process exits 0.
#[sqlx::test(migrator = "chat_api::db::MIGRATOR")]
async fn sigterm_lets_an_open_stream_finish(pool: PgPool) {
    let upstream = FakeUpstream::start().await;
    let chunk = |delta: serde_json::Value, finish: Option<&str>| {
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "gpt-test",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        .to_string()
    };
    let mut events = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    events.extend((0..8).map(|i| chunk(json!({"content": format!("piece {i} ")}), None)));
    events.push(chunk(json!({}), Some("stop")));
    events.push("[DONE]".to_owned());
    upstream.set_default(FakeResponse::sse(events).with_chunk_delay(Duration::from_millis(250)));
    let db = database_url(&pool);
    let server = Server::start(
        &db,
        &upstream,
        &[("SHUTDOWN_DRAIN_SECS", "0"), ("SHUTDOWN_GRACE_SECS", "20"), ("RUST_LOG", "warn")],
    )
    .await;
    let http = reqwest::Client::new();
    let mut reply = server
        .chat(&http, json!({"user_message": "stream slowly", "client_user_id": USER, "stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), 200);
    let mut text = String::from_utf8(reply.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(text.contains("event: conversation"), "{text}");

    let pid = i32::try_from(server.child.id().unwrap()).unwrap();
    // SAFETY: sends a signal to the child we spawned; no memory is touched.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let signalled = Instant::now();
    while let Some(bytes) = reply.chunk().await.expect("the stream is not cut") {
        text.push_str(&String::from_utf8_lossy(&bytes));
    }
    assert!(text.contains("event: done") && text.contains("piece 7"), "{text}");
    let logs = server.stop_after_signal().await;
    assert!(signalled.elapsed() < Duration::from_secs(15), "took {:?}\n{logs}", signalled.elapsed());
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM chatbot_user_memory").fetch_one(&pool).await.unwrap();
    assert_eq!(stored, 2);
}

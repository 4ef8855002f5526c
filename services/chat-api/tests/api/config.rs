//! Configuration: one clap parse (every variable an option with its default),
//! validation messages name the variable, secrets come from env, `X_FILE` or
//! Google Secret Manager and never show.

use std::collections::BTreeSet;
use std::time::Duration;

use chat_api::config::{AllowedOrigins, Config, ConfigError, ProviderConfig, cli};
use colloquy_contract::env as names;
use serde_json::json;

use crate::support::{FakeResponse, FakeUpstream};

const BASE: &[(&str, &str)] = &[
    ("DATABASE_URL", "postgres://u:p@localhost/db"),
    ("INTERNAL_API_KEY", "0123456789abcdef"),
    ("LLM_PROVIDER", "mock"),
];

fn with_base(pairs: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut all = BASE.to_vec();
    all.extend_from_slice(pairs);
    all
}

fn load(pairs: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
    Config::from_vars(&with_base(pairs))
}

#[test]
fn defaults_follow_the_seed_and_the_contract() {
    let config = load(&[]).unwrap();
    assert_eq!(config.port, 8000);
    assert_eq!(config.metrics_port, 9090);
    assert_eq!(config.host.to_string(), "0.0.0.0");
    assert_eq!(config.http.allowed_origins, AllowedOrigins::Any);
    assert!(config.http.api_docs);
    assert_eq!(config.http.max_body_bytes, 1024 * 1024);
    assert_eq!(config.http.max_in_flight, 1024);
    assert_eq!(config.max_history_messages, 50);
    assert_eq!(config.max_message_chars, 32_000);
    assert_eq!(config.llm_timeout.as_secs(), 60);
    assert_eq!(config.http.request_timeout.as_secs(), colloquy_contract::defaults::REQUEST_TIMEOUT_SECS);
    assert_eq!(config.shutdown.drain.as_secs(), colloquy_contract::defaults::SHUTDOWN_DRAIN_SECS);
    assert_eq!(config.shutdown.grace.as_secs(), colloquy_contract::defaults::SHUTDOWN_GRACE_SECS);
    assert_eq!(config.limits.requests_per_minute, None);
    assert_eq!(config.limits.tokens_per_minute, None);
    assert_eq!(config.limits.idempotency_ttl, Duration::from_secs(24 * 3600));
    assert!(!config.run_migrations);
    assert_eq!(config.provider, ProviderConfig::Mock);
    // The provider timeout fits in a request, and a request in the shutdown grace.
    assert!(config.llm_timeout < config.http.request_timeout);
    assert!(config.http.request_timeout <= config.shutdown.grace);
}

#[test]
fn derived_defaults_follow_the_settings_they_derive_from() {
    let config = load(&[("LLM_TIMEOUT_SECS", "100")]).unwrap();
    assert_eq!(config.http.request_timeout.as_secs(), 110);
    assert_eq!(config.shutdown.grace.as_secs(), 115);
    let config = load(&[("REQUEST_TIMEOUT_SECS", "90"), ("SHUTDOWN_GRACE_SECS", "120")]).unwrap();
    assert_eq!(config.http.request_timeout.as_secs(), 90);
    assert_eq!(config.shutdown.grace.as_secs(), 120);
    let config = load(&[("RATE_LIMIT_RPM", "0"), ("RATE_LIMIT_TPM", "5000"), ("API_DOCS", "off")]).unwrap();
    assert_eq!(config.limits.requests_per_minute, None, "0 is off");
    assert_eq!(config.limits.tokens_per_minute, Some(5000));
    assert!(!config.http.api_docs);
    assert!(load(&[("API_DOCS", "true")]).unwrap().http.api_docs);
    assert!(!load(&[("API_DOCS", "false")]).unwrap().http.api_docs);
}

#[test]
fn blank_values_count_as_unset() {
    let config = load(&[("PORT", ""), ("SYSTEM_PROMPT", "  "), ("ALLOWED_ORIGINS", "")]).unwrap();
    assert_eq!(config.port, 8000);
    assert_eq!(config.system_prompt, None);
    assert_eq!(config.http.allowed_origins, AllowedOrigins::Any);
}

#[test]
fn bad_values_name_their_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("PORT", "eighty")], "PORT"),
        (&[("HOST", "localhost:1")], "HOST"),
        (&[("LLM_TIMEOUT_SECS", "0")], "LLM_TIMEOUT_SECS"),
        (&[("MAX_HISTORY_MESSAGES", "-1")], "MAX_HISTORY_MESSAGES"),
        (&[("MAX_MESSAGE_CHARS", "0")], "MAX_MESSAGE_CHARS"),
        (&[("RUN_MIGRATIONS", "maybe")], "RUN_MIGRATIONS"),
        (&[("ALLOWED_ORIGINS", "https://ok.example, not an origin")], "ALLOWED_ORIGINS"),
        (&[("LLM_PROVIDER", "gpt")], "LLM_PROVIDER"),
        (&[("LLM_PROVIDER", "azure-openai")], "AZURE_OPENAI_ENDPOINT"),
        (&[("LLM_PROVIDER", "vertex-ai"), ("VERTEX_LOCATION", "us-central1")], "VERTEX_PROJECT_ID"),
        (&[("LLM_PROVIDER", "openai"), ("OPENAI_BASE_URL", "ftp://x")], "OPENAI_BASE_URL"),
        (&[("INTERNAL_API_KEY", "short")], "INTERNAL_API_KEY"),
        (&[("DATABASE_URL", "mysql://x")], "DATABASE_URL"),
        (&[("DATABASE_MAX_CONNECTIONS", "0")], "DATABASE_MAX_CONNECTIONS"),
        (&[("LOG_FORMAT", "xml")], "LOG_FORMAT"),
        (&[("API_DOCS", "sometimes")], "API_DOCS"),
        (&[("MAX_BODY_BYTES", "1MB")], "MAX_BODY_BYTES"),
        (&[("MAX_IN_FLIGHT", "0")], "MAX_IN_FLIGHT"),
        (&[("REQUEST_TIMEOUT_SECS", "0")], "REQUEST_TIMEOUT_SECS"),
        (&[("REQUEST_TIMEOUT_SECS", "30")], "REQUEST_TIMEOUT_SECS"),
        (&[("RATE_LIMIT_RPM", "-5")], "RATE_LIMIT_RPM"),
        (&[("RATE_LIMIT_TPM", "lots")], "RATE_LIMIT_TPM"),
        (&[("IDEMPOTENCY_TTL_SECS", "0")], "IDEMPOTENCY_TTL_SECS"),
        (&[("SHUTDOWN_DRAIN_SECS", "soon")], "SHUTDOWN_DRAIN_SECS"),
        (&[("SHUTDOWN_GRACE_SECS", "-1")], "SHUTDOWN_GRACE_SECS"),
        (&[("JWT_JWKS_URL", "not a url")], "JWT_JWKS_URL"),
        (&[("LLM_HTTP_VERSION", "h3")], "LLM_HTTP_VERSION"),
        (&[("LLM_STREAMS_PER_CONNECTION", "0")], "LLM_STREAMS_PER_CONNECTION"),
        (&[("DATABASE_MIN_CONNECTIONS", "17")], "DATABASE_MIN_CONNECTIONS"),
        (&[("DATABASE_MIN_CONNECTIONS", "-1")], "DATABASE_MIN_CONNECTIONS"),
    ];
    for (pairs, var) in cases {
        let mut all = BASE.to_vec();
        all.extend_from_slice(pairs);
        let err = Config::from_vars(&all).expect_err(&format!("{pairs:?} should fail"));
        assert_eq!(err.var(), *var, "{pairs:?}: {err}");
        assert!(err.to_string().contains(var), "{err}");
    }
    // Without INTERNAL_API_KEY at all, the service refuses to start.
    let err =
        Config::from_vars(&[("DATABASE_URL", "postgres://u:p@localhost/db"), ("LLM_PROVIDER", "mock")]).unwrap_err();
    assert_eq!(err.var(), "INTERNAL_API_KEY");
}

#[test]
fn errors_and_debug_never_contain_secret_values() {
    let err = load(&[("INTERNAL_API_KEY", "tiny-secret")]).unwrap_err();
    assert!(!err.to_string().contains("tiny-secret"), "{err}");
    let err = load(&[("DATABASE_URL", "mysql://user:hunter2@db")]).unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let config = load(&[("JWT_SECRET", "jwt-secret-value-xyz")]).unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("0123456789abcdef") && !debug.contains("jwt-secret-value-xyz"), "{debug}");
    let parsed = cli::parse_vars("serve", with_base(&[])).unwrap();
    let debug = format!("{parsed:?}");
    assert!(!debug.contains("0123456789abcdef") && !debug.contains("u:p@localhost"), "{debug}");
}

/// The settings registry: `serve` reads exactly `env::ALL` (plus the `_FILE`
/// and `_SECRET_NAME` sources of each secret), so a setting cannot be added
/// to the chat API without the controller learning of it.
#[test]
fn the_command_reads_exactly_the_settings_registry() {
    let secret_sources: BTreeSet<String> = names::SECRETS
        .iter()
        .flat_map(|s| [format!("{s}{}", names::FILE_SUFFIX), format!("{s}{}", names::SECRET_NAME_SUFFIX)])
        .collect();
    let serve = cli::env_names("serve");
    let unique: BTreeSet<String> = serve.iter().cloned().collect();
    assert_eq!(unique.len(), serve.len(), "a variable is read by two options: {serve:?}");
    let settings: BTreeSet<String> = unique.difference(&secret_sources).cloned().collect();
    let registry: BTreeSet<String> = names::ALL.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(
        settings,
        registry,
        "read but not in env::ALL: {:?}; in env::ALL but not read: {:?}",
        settings.difference(&registry).collect::<Vec<_>>(),
        registry.difference(&settings).collect::<Vec<_>>()
    );
    assert!(secret_sources.is_subset(&unique));
    // `migrate` reads a subset.
    let migrate: BTreeSet<String> = cli::env_names("migrate").into_iter().collect();
    assert!(migrate.is_subset(&unique), "{:?}", migrate.difference(&unique).collect::<Vec<_>>());
    assert!(migrate.contains(names::DATABASE_URL) && !migrate.contains(names::INTERNAL_API_KEY));
}

#[test]
fn help_lists_every_variable_with_its_default() {
    let mut cmd = cli::command();
    let serve = cmd.find_subcommand_mut("serve").unwrap();
    let help = serve.render_long_help().to_string();
    for name in cli::env_names("serve") {
        assert!(help.contains(&format!("env: {name}")), "--help does not list {name}:\n{help}");
    }
    for default in ["[default: 8000]", "[default: 1024]", "[default: 86400]", "[default: json]", "[default: *]"] {
        assert!(help.contains(default), "--help lacks {default}");
    }
}

#[tokio::test]
async fn secrets_can_come_from_files() {
    let dir = std::env::temp_dir().join(format!("colloquy-secret-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("key");
    std::fs::write(&key_file, "file-provided-key-0123\n").unwrap();
    let key_path = key_file.to_str().unwrap();
    let vars = [
        ("DATABASE_URL", "postgres://u:p@localhost/db"),
        ("INTERNAL_API_KEY_FILE", key_path),
        ("LLM_PROVIDER", "mock"),
    ];
    let http = reqwest::Client::new();
    let config = Config::load_vars(&vars, &http, Duration::from_secs(5)).await.unwrap();
    assert_eq!(config.internal_api_key.expose(), "file-provided-key-0123");

    let missing = [vars[0], ("INTERNAL_API_KEY_FILE", "/nonexistent/colloquy/key"), vars[2]];
    let err = Config::load_vars(&missing, &http, Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(err.var(), "INTERNAL_API_KEY_FILE");
    std::fs::remove_dir_all(dir).unwrap();
}

fn encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn metadata_server() -> FakeUpstream {
    let metadata = FakeUpstream::start().await;
    metadata.set_default(FakeResponse::json(
        200,
        json!({"access_token": "ya29.metadata-token", "expires_in": 3599, "token_type": "Bearer"}),
    ));
    metadata
}

#[tokio::test]
async fn secrets_can_come_from_secret_manager() {
    let metadata = metadata_server().await;
    let manager = FakeUpstream::start().await;
    manager.push(FakeResponse::json(
        200,
        json!({"name": "projects/123/secrets/database-url/versions/3",
               "payload": {"data": encode("postgres://sm:pw@db/sm"), "dataCrc32c": "1"}}),
    ));
    manager.push(FakeResponse::json(
        200,
        json!({"name": "projects/123/secrets/internal-key/versions/1", "payload": {"data": encode("secret-manager-key-0123")}}),
    ));
    let vars = [
        ("GCP_PROJECT_ID", "my-project"),
        ("DATABASE_URL_SECRET_NAME", "database-url"),
        ("INTERNAL_API_KEY_SECRET_NAME", "internal-key"),
        ("SECRET_MANAGER_ENDPOINT", &manager.url),
        ("GCE_METADATA_HOST", &metadata.host),
        ("LLM_PROVIDER", "mock"),
    ];
    let http = reqwest::Client::new();
    let config = Config::load_vars(&vars, &http, Duration::from_secs(5)).await.unwrap();
    assert_eq!(config.database.url.expose(), "postgres://sm:pw@db/sm");
    assert_eq!(config.internal_api_key.expose(), "secret-manager-key-0123");

    let requests = manager.requests();
    let paths: Vec<&str> = requests.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/v1/projects/my-project/secrets/database-url/versions/latest:access",
            "/v1/projects/my-project/secrets/internal-key/versions/latest:access"
        ]
    );
    assert!(requests.iter().all(|r| r.header("authorization").as_deref() == Some("Bearer ya29.metadata-token")));
    // One token fetch, cached for the second secret.
    let token_requests = metadata.requests();
    assert_eq!(token_requests.len(), 1);
    assert_eq!(token_requests[0].header("metadata-flavor").as_deref(), Some("Google"));
    assert_eq!(token_requests[0].path, "/computeMetadata/v1/instance/service-accounts/default/token");

    // A denied secret names the variable.
    manager.set_default(FakeResponse::json(
        403,
        json!({"error": {"code": 403, "message": "Permission denied", "status": "PERMISSION_DENIED"}}),
    ));
    let err = Config::load_vars(&vars, &http, Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(err.var(), "DATABASE_URL_SECRET_NAME");
    assert!(err.to_string().contains("403"), "{err}");
}

#[tokio::test]
async fn an_empty_secret_manager_payload_is_a_configuration_error() {
    let metadata = metadata_server().await;
    let manager = FakeUpstream::start().await;
    // proto3 JSON leaves out an empty `data`.
    manager.set_default(FakeResponse::json(
        200,
        json!({"name": "projects/123/secrets/internal-key/versions/2", "payload": {"dataCrc32c": "0"}}),
    ));
    let vars = [
        ("GCP_PROJECT_ID", "my-project"),
        ("DATABASE_URL", "postgres://u:p@localhost/db"),
        ("INTERNAL_API_KEY_SECRET_NAME", "internal-key"),
        ("SECRET_MANAGER_ENDPOINT", &manager.url),
        ("GCE_METADATA_HOST", &metadata.host),
        ("LLM_PROVIDER", "mock"),
    ];
    let err = Config::load_vars(&vars, &reqwest::Client::new(), Duration::from_secs(5)).await.unwrap_err();
    assert_eq!(err.var(), "INTERNAL_API_KEY_SECRET_NAME", "{err}");
    assert!(err.to_string().contains("empty payload"), "{err}");
}

#[tokio::test]
async fn secret_manager_at_start_up_has_an_overall_timeout() {
    let metadata = metadata_server().await;
    let manager = FakeUpstream::start().await;
    manager.set_default(
        FakeResponse::json(200, json!({"payload": {"data": encode("too-late-key-0123456")}}))
            .with_delay(Duration::from_secs(5)),
    );
    let vars = [
        ("GCP_PROJECT_ID", "my-project"),
        ("DATABASE_URL", "postgres://u:p@localhost/db"),
        ("INTERNAL_API_KEY_SECRET_NAME", "internal-key"),
        ("SECRET_MANAGER_ENDPOINT", &manager.url),
        ("GCE_METADATA_HOST", &metadata.host),
        ("LLM_PROVIDER", "mock"),
    ];
    let started = std::time::Instant::now();
    let err = Config::load_vars(&vars, &reqwest::Client::new(), Duration::from_millis(300)).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "waited {:?}", started.elapsed());
    assert_eq!(err.var(), "INTERNAL_API_KEY_SECRET_NAME", "{err}");
    assert!(err.to_string().contains("did not answer"), "{err}");
}

#[test]
fn conversation_features() {
    let config = load(&[]).unwrap();
    assert!(config.summaries, "summaries are on by default");
    assert_eq!(config.titles, chat_api::config::TitleMode::FirstMessage);
    let config = load(&[("SUMMARIES", "off"), ("TITLES", "provider")]).unwrap();
    assert!(!config.summaries);
    assert_eq!(config.titles, chat_api::config::TitleMode::Provider);
    for (pairs, var) in [([("SUMMARIES", "sometimes")], "SUMMARIES"), ([("TITLES", "ai")], "TITLES")] {
        let err = load(&pairs).unwrap_err();
        assert_eq!(err.var(), var, "{err}");
    }
}

#[test]
fn provider_connection_settings() {
    use chat_api::llm::connections::{ConnectionSettings, HttpVersion};
    let config = load(&[]).unwrap();
    assert_eq!(config.connections, ConnectionSettings { http_version: HttpVersion::Auto, streams_per_connection: 100 });
    let config = load(&[("LLM_HTTP_VERSION", "http2"), ("LLM_STREAMS_PER_CONNECTION", "32")]).unwrap();
    assert_eq!(config.connections, ConnectionSettings { http_version: HttpVersion::Http2, streams_per_connection: 32 });
    assert_eq!(load(&[("LLM_HTTP_VERSION", "http1")]).unwrap().connections.http_version, HttpVersion::Http1);
}

#[test]
fn database_min_connections_default_to_four_within_the_pool_size() {
    assert_eq!(load(&[]).unwrap().database.min_connections, 4);
    assert_eq!(load(&[("DATABASE_MAX_CONNECTIONS", "2")]).unwrap().database.min_connections, 2);
    assert_eq!(load(&[("DATABASE_MIN_CONNECTIONS", "0")]).unwrap().database.min_connections, 0);
    let both = load(&[("DATABASE_MIN_CONNECTIONS", "32"), ("DATABASE_MAX_CONNECTIONS", "32")]).unwrap();
    assert_eq!((both.database.min_connections, both.database.max_connections), (32, 32));
}

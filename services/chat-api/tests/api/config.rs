//! Configuration: validation messages name the variable; secrets come from
//! env, `X_FILE` or Google Secret Manager.

use std::collections::HashMap;

use chat_api::config::{Config, ConfigError, ProviderConfig, SecretValues};
use serde_json::json;

use crate::support::{FakeResponse, FakeUpstream};

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

const BASE: &[(&str, &str)] = &[
    ("DATABASE_URL", "postgres://u:p@localhost/db"),
    ("INTERNAL_API_KEY", "0123456789abcdef"),
    ("LLM_PROVIDER", "mock"),
];

async fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut all = BASE.to_vec();
    all.extend_from_slice(pairs);
    let env = env(&all);
    let secrets = SecretValues::resolve(&env, &reqwest::Client::new()).await?;
    Config::from_env(&env, &secrets)
}

fn var_of(err: &ConfigError) -> String {
    match err {
        ConfigError::Missing { var, .. } | ConfigError::Invalid { var, .. } | ConfigError::Unreadable { var, .. } => {
            var.clone()
        }
    }
}

#[tokio::test]
async fn defaults_follow_the_seed() {
    let config = load(&[]).await.unwrap();
    assert_eq!(config.port, 8000);
    assert_eq!(config.metrics_port, 9090);
    assert_eq!(config.host.to_string(), "0.0.0.0");
    assert_eq!(config.allowed_origins, chat_api::config::AllowedOrigins::Any);
    assert_eq!(config.max_history_messages, 50);
    assert_eq!(config.llm_timeout.as_secs(), 60);
    assert!(!config.run_migrations);
    assert_eq!(config.provider, ProviderConfig::Mock);
}

#[tokio::test]
async fn bad_values_name_their_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("PORT", "eighty")], "PORT"),
        (&[("LLM_TIMEOUT_SECS", "0")], "LLM_TIMEOUT_SECS"),
        (&[("MAX_HISTORY_MESSAGES", "-1")], "MAX_HISTORY_MESSAGES"),
        (&[("RUN_MIGRATIONS", "maybe")], "RUN_MIGRATIONS"),
        (&[("ALLOWED_ORIGINS", "https://ok.example, not an origin")], "ALLOWED_ORIGINS"),
        (&[("LLM_PROVIDER", "gpt")], "LLM_PROVIDER"),
        (&[("LLM_PROVIDER", "azure-openai")], "AZURE_OPENAI_ENDPOINT"),
        (&[("LLM_PROVIDER", "vertex-ai"), ("VERTEX_LOCATION", "us-central1")], "VERTEX_PROJECT_ID"),
        (&[("LLM_PROVIDER", "openai"), ("OPENAI_BASE_URL", "ftp://x")], "OPENAI_BASE_URL"),
        (&[("INTERNAL_API_KEY", "short")], "INTERNAL_API_KEY"),
        (&[("DATABASE_URL", "mysql://x")], "DATABASE_URL"),
        (&[("LOG_FORMAT", "xml")], "LOG_FORMAT"),
    ];
    for (pairs, var) in cases {
        let err = load(pairs).await.expect_err(&format!("{pairs:?} should fail"));
        assert_eq!(var_of(&err), *var, "{pairs:?}: {err}");
        assert!(err.to_string().contains(var), "{err}");
    }
    // Without INTERNAL_API_KEY at all, the service refuses to start.
    let env = env(&[("DATABASE_URL", "postgres://u:p@localhost/db"), ("LLM_PROVIDER", "mock")]);
    let secrets = SecretValues::resolve(&env, &reqwest::Client::new()).await.unwrap();
    let err = Config::from_env(&env, &secrets).unwrap_err();
    assert_eq!(var_of(&err), "INTERNAL_API_KEY");
}

#[tokio::test]
async fn errors_never_contain_secret_values() {
    let err = load(&[("INTERNAL_API_KEY", "tiny-secret")]).await.unwrap_err();
    assert!(!err.to_string().contains("tiny-secret"), "{err}");
    let err = load(&[("DATABASE_URL", "mysql://user:hunter2@db")]).await.unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    let config = load(&[]).await.unwrap();
    assert!(!format!("{config:?}").contains("0123456789abcdef"));
}

#[tokio::test]
async fn secrets_can_come_from_files() {
    let dir = std::env::temp_dir().join(format!("colloquy-secret-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("key");
    std::fs::write(&key_file, "file-provided-key-0123\n").unwrap();
    let env = env(&[
        ("DATABASE_URL", "postgres://u:p@localhost/db"),
        ("INTERNAL_API_KEY_FILE", key_file.to_str().unwrap()),
        ("LLM_PROVIDER", "mock"),
    ]);
    let secrets = SecretValues::resolve(&env, &reqwest::Client::new()).await.unwrap();
    let config = Config::from_env(&env, &secrets).unwrap();
    assert_eq!(config.internal_api_key.expose(), "file-provided-key-0123");

    let missing = env_with(&env, "INTERNAL_API_KEY_FILE", "/nonexistent/colloquy/key");
    let err = SecretValues::resolve(&missing, &reqwest::Client::new()).await.unwrap_err();
    assert_eq!(var_of(&err), "INTERNAL_API_KEY_FILE");
    std::fs::remove_dir_all(dir).unwrap();
}

fn env_with(base: &HashMap<String, String>, k: &str, v: &str) -> HashMap<String, String> {
    let mut env = base.clone();
    env.insert(k.to_owned(), v.to_owned());
    env
}

#[tokio::test]
async fn secrets_can_come_from_secret_manager() {
    let metadata = FakeUpstream::start().await;
    metadata.set_default(FakeResponse::json(
        200,
        json!({"access_token": "ya29.metadata-token", "expires_in": 3599, "token_type": "Bearer"}),
    ));
    let manager = FakeUpstream::start().await;
    use base64::Engine;
    let encode = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    manager.push(FakeResponse::json(
        200,
        json!({"name": "projects/123/secrets/database-url/versions/3",
               "payload": {"data": encode("postgres://sm:pw@db/sm"), "dataCrc32c": "1"}}),
    ));
    manager.push(FakeResponse::json(
        200,
        json!({"name": "projects/123/secrets/internal-key/versions/1", "payload": {"data": encode("secret-manager-key-0123")}}),
    ));
    let env = env(&[
        ("GCP_PROJECT_ID", "my-project"),
        ("DATABASE_URL_SECRET_NAME", "database-url"),
        ("INTERNAL_API_KEY_SECRET_NAME", "internal-key"),
        ("SECRET_MANAGER_ENDPOINT", &manager.url),
        ("GCE_METADATA_HOST", &metadata.host),
        ("LLM_PROVIDER", "mock"),
    ]);
    let secrets = SecretValues::resolve(&env, &reqwest::Client::new()).await.unwrap();
    let config = Config::from_env(&env, &secrets).unwrap();
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
    let err = SecretValues::resolve(&env, &reqwest::Client::new()).await.unwrap_err();
    assert_eq!(var_of(&err), "DATABASE_URL_SECRET_NAME");
    assert!(err.to_string().contains("403"), "{err}");
}

#[tokio::test]
async fn conversation_features() {
    let config = load(&[]).await.unwrap();
    assert!(config.summaries, "summaries are on by default");
    assert_eq!(config.titles, chat_api::config::TitleMode::FirstMessage);
    let config = load(&[("SUMMARIES", "off"), ("TITLES", "provider")]).await.unwrap();
    assert!(!config.summaries);
    assert_eq!(config.titles, chat_api::config::TitleMode::Provider);
    for (pairs, var) in [([("SUMMARIES", "sometimes")], "SUMMARIES"), ([("TITLES", "ai")], "TITLES")] {
        let err = load(&pairs).await.unwrap_err();
        assert_eq!(var_of(&err), var, "{err}");
    }
    // Every setting the chat API reads is in the registry the controller maps.
    for name in ["SUMMARIES", "TITLES"] {
        assert!(colloquy_contract::env::ALL.contains(&name), "{name}");
    }
}

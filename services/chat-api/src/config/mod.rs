//! Typed configuration, read and validated once at start-up. Every error names
//! the variable at fault; secrets never appear in messages.

mod env;
mod resilience;
mod secret;
pub mod secrets;

use std::net::IpAddr;
use std::time::Duration;

use colloquy_contract::{defaults, env as names, log_format, provider as provider_names};

pub use env::{EnvSource, ProcessEnv};
pub use secret::Secret;
pub use secrets::SecretValues;

/// A configuration problem, naming the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{var} is required{hint}")]
    Missing { var: String, hint: String },
    #[error("{var} is invalid: {message}")]
    Invalid { var: String, message: String },
    #[error("{var} could not be read: {message}")]
    Unreadable { var: String, message: String },
}

impl ConfigError {
    /// The same error about `prefix` + its variable (the fallback provider's).
    pub fn prefixed(self, prefix: &str) -> Self {
        match self {
            Self::Missing { var, hint } => Self::Missing { var: format!("{prefix}{var}"), hint },
            Self::Invalid { var, message } => Self::Invalid { var: format!("{prefix}{var}"), message },
            Self::Unreadable { var, message } => Self::Unreadable { var: format!("{prefix}{var}"), message },
        }
    }

    pub fn missing_with_hint(var: &str, hint: &str) -> Self {
        Self::Missing { var: var.to_owned(), hint: format!(" ({hint})") }
    }

    pub fn invalid(var: &str, message: impl Into<String>) -> Self {
        Self::Invalid { var: var.to_owned(), message: message.into() }
    }
}

/// CORS policy from `ALLOWED_ORIGINS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigins {
    Any,
    List(Vec<String>),
}

/// Log output format (`LOG_FORMAT`).
pub use colloquy_telemetry::LogFormat;

/// Which LLM provider answers, with its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderConfig {
    AzureOpenAi {
        endpoint: String,
        deployment: String,
        api_version: String,
        api_key: Secret,
    },
    VertexAi {
        project_id: String,
        location: String,
        model: String,
        /// Base URL; defaults to Google's endpoint for the location (`llm::vertex::default_endpoint`).
        endpoint: String,
        /// Host (and optional port) of the metadata server.
        metadata_host: String,
    },
    OpenAi {
        base_url: String,
        model: String,
        api_key: Option<Secret>,
    },
    Mock,
}

impl ProviderConfig {
    /// The `LLM_PROVIDER` value naming this provider.
    pub fn name(&self) -> &'static str {
        match self {
            Self::AzureOpenAi { .. } => provider_names::AZURE_OPENAI,
            Self::VertexAi { .. } => provider_names::VERTEX_AI,
            Self::OpenAi { .. } => provider_names::OPENAI,
            Self::Mock => provider_names::MOCK,
        }
    }
}

/// Bearer-token (JWT) settings. Bearer auth is off when neither a secret nor a JWKS URL is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JwtConfig {
    pub secret: Option<Secret>,
    pub jwks_url: Option<String>,
    pub audience: Option<String>,
    pub issuer: Option<String>,
}

impl JwtConfig {
    pub fn enabled(&self) -> bool {
        self.secret.is_some() || self.jwks_url.is_some()
    }
}

/// Everything `chat-api serve` needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: IpAddr,
    pub port: u16,
    pub metrics_port: u16,
    pub database: DatabaseConfig,
    pub run_migrations: bool,
    pub internal_api_key: Secret,
    pub allowed_origins: AllowedOrigins,
    pub provider: ProviderConfig,
    /// The provider answering when `provider` cannot (`FALLBACK_*`).
    pub fallback_provider: Option<ProviderConfig>,
    /// Retries and circuit breaker of provider calls.
    pub resilience: crate::llm::resilience::ResilienceConfig,
    pub llm_timeout: Duration,
    /// How long a turn waits for a conversation another turn holds.
    pub turn_wait: Duration,
    pub system_prompt: Option<String>,
    pub max_history_messages: usize,
    pub max_message_chars: usize,
    pub jwt: JwtConfig,
    pub log_format: LogFormat,
}

/// What both `serve` and `migrate` need to reach PostgreSQL.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: Secret,
    pub max_connections: u32,
    /// How long `migrate` (and start-up) keeps retrying an unreachable database.
    pub connect_timeout: Duration,
}

/// Largest user message accepted by default, in characters.
pub const DEFAULT_MAX_MESSAGE_CHARS: usize = 32_000;
const DEFAULT_MAX_CONNECTIONS: u32 = 16;
const DEFAULT_MIGRATE_TIMEOUT_SECS: u64 = 60;
const DEFAULT_METADATA_HOST: &str = "metadata.google.internal";

/// Reads plain (non-secret) variables, trimming blanks to "unset".
struct Vars<'a> {
    env: &'a dyn EnvSource,
}

impl Vars<'_> {
    fn get(&self, name: &str) -> Option<String> {
        self.env.get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    fn required(&self, name: &str, hint: &str) -> Result<String, ConfigError> {
        self.get(name).ok_or_else(|| ConfigError::missing_with_hint(name, hint))
    }

    fn parse<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|e| ConfigError::invalid(name, format!("{raw:?}: {e}"))),
        }
    }

    fn positive<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + PartialOrd + Default + Copy,
        T::Err: std::fmt::Display,
    {
        let value = self.parse(name, default)?;
        if value <= T::default() {
            return Err(ConfigError::invalid(name, "must be greater than zero"));
        }
        Ok(value)
    }

    fn bool(&self, name: &str) -> Result<bool, ConfigError> {
        match self.get(name).map(|v| v.to_ascii_lowercase()) {
            None => Ok(false),
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => Ok(true),
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => Ok(false),
            Some(v) => Err(ConfigError::invalid(name, format!("{v:?} is not a boolean (true/false)"))),
        }
    }

    fn url(&self, name: &str, hint: &str) -> Result<String, ConfigError> {
        let raw = self.required(name, hint)?;
        check_url(name, &raw)
    }
}

/// An http(s) URL without trailing slash, or an error naming `name`.
pub fn check_url(name: &str, raw: &str) -> Result<String, ConfigError> {
    let parsed = reqwest::Url::parse(raw).map_err(|e| ConfigError::invalid(name, format!("not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(ConfigError::invalid(name, "must be an http:// or https:// URL"));
    }
    Ok(raw.trim_end_matches('/').to_owned())
}

impl DatabaseConfig {
    /// The database settings alone (what `migrate` needs).
    pub fn from_env(env: &dyn EnvSource, secrets: &SecretValues) -> Result<Self, ConfigError> {
        let vars = Vars { env };
        let url = secrets.required(names::DATABASE_URL)?;
        if !(url.expose().starts_with("postgres://") || url.expose().starts_with("postgresql://")) {
            return Err(ConfigError::invalid(names::DATABASE_URL, "must start with postgres:// or postgresql://"));
        }
        Ok(Self {
            url,
            max_connections: vars.positive(names::DATABASE_MAX_CONNECTIONS, DEFAULT_MAX_CONNECTIONS)?,
            connect_timeout: Duration::from_secs(
                vars.positive(names::MIGRATE_TIMEOUT_SECS, DEFAULT_MIGRATE_TIMEOUT_SECS)?,
            ),
        })
    }
}

impl Config {
    /// Builds the whole configuration from plain variables and resolved secrets.
    pub fn from_env(env: &dyn EnvSource, secrets: &SecretValues) -> Result<Self, ConfigError> {
        let vars = Vars { env };
        let internal_api_key = secrets.required(names::INTERNAL_API_KEY)?;
        if internal_api_key.expose().len() < 16 {
            return Err(ConfigError::invalid(names::INTERNAL_API_KEY, "must be at least 16 characters long"));
        }
        let log_format = match vars.get(names::LOG_FORMAT).as_deref() {
            None | Some(log_format::JSON) => LogFormat::Json,
            Some(log_format::TEXT) => LogFormat::Text,
            Some(other) => {
                return Err(ConfigError::invalid(names::LOG_FORMAT, format!("{other:?}: expected json or text")));
            }
        };
        Ok(Self {
            host: vars.parse(names::HOST, IpAddr::from([0, 0, 0, 0]))?,
            port: vars.parse(names::PORT, defaults::PORT)?,
            metrics_port: vars.parse(names::METRICS_PORT, defaults::METRICS_PORT)?,
            database: DatabaseConfig::from_env(env, secrets)?,
            run_migrations: vars.bool(names::RUN_MIGRATIONS)?,
            internal_api_key,
            allowed_origins: allowed_origins(&vars)?,
            provider: provider(&vars, secrets)?,
            fallback_provider: resilience::fallback(env, secrets)?,
            resilience: resilience::resilience(&vars)?,
            llm_timeout: Duration::from_secs(vars.positive(names::LLM_TIMEOUT_SECS, defaults::LLM_TIMEOUT_SECS)?),
            turn_wait: Duration::from_secs(vars.positive(names::TURN_WAIT_SECS, defaults::TURN_WAIT_SECS)?),
            system_prompt: vars.get(names::SYSTEM_PROMPT),
            max_history_messages: vars.positive(names::MAX_HISTORY_MESSAGES, defaults::MAX_HISTORY_MESSAGES)?,
            max_message_chars: vars.positive(names::MAX_MESSAGE_CHARS, DEFAULT_MAX_MESSAGE_CHARS)?,
            jwt: JwtConfig {
                secret: secrets.optional(names::JWT_SECRET),
                jwks_url: match vars.get(names::JWT_JWKS_URL) {
                    Some(raw) => Some(check_url(names::JWT_JWKS_URL, &raw)?),
                    None => None,
                },
                audience: vars.get(names::JWT_AUDIENCE),
                issuer: vars.get(names::JWT_ISSUER),
            },
            log_format,
        })
    }
}

fn allowed_origins(vars: &Vars<'_>) -> Result<AllowedOrigins, ConfigError> {
    let Some(raw) = vars.get(names::ALLOWED_ORIGINS) else {
        return Ok(AllowedOrigins::Any);
    };
    let origins: Vec<String> =
        raw.split(',').map(|o| o.trim().trim_end_matches('/')).filter(|o| !o.is_empty()).map(str::to_owned).collect();
    if origins.iter().any(|o| o == "*") {
        return Ok(AllowedOrigins::Any);
    }
    for origin in &origins {
        let url = reqwest::Url::parse(origin)
            .map_err(|e| ConfigError::invalid(names::ALLOWED_ORIGINS, format!("{origin:?} is not an origin: {e}")))?;
        if url.path() != "/" || url.query().is_some() || !matches!(url.scheme(), "http" | "https") {
            return Err(ConfigError::invalid(
                names::ALLOWED_ORIGINS,
                format!("{origin:?} is not an origin (scheme://host[:port], no path)"),
            ));
        }
    }
    Ok(AllowedOrigins::List(origins))
}

fn provider(vars: &Vars<'_>, secrets: &SecretValues) -> Result<ProviderConfig, ConfigError> {
    let name = match vars.get(names::LLM_PROVIDER) {
        Some(name) => name,
        None => infer_provider(vars, secrets).ok_or_else(|| {
            ConfigError::missing_with_hint(
                names::LLM_PROVIDER,
                &format!("one of {}; use mock for the offline provider", provider_names::ALL.join(", ")),
            )
        })?,
    };
    let hint = |what: &str| format!("needed when {}={name}: {what}", names::LLM_PROVIDER);
    match name.as_str() {
        provider_names::AZURE_OPENAI => Ok(ProviderConfig::AzureOpenAi {
            endpoint: check_url(
                names::AZURE_OPENAI_ENDPOINT,
                secrets
                    .required_with_hint(names::AZURE_OPENAI_ENDPOINT, &hint("https://<resource>.openai.azure.com"))?
                    .expose(),
            )?,
            deployment: secrets
                .required_with_hint(names::AZURE_OPENAI_DEPLOYMENT_NAME, &hint("the deployment name"))?
                .expose()
                .to_owned(),
            api_version: vars
                .get(names::AZURE_OPENAI_API_VERSION)
                .unwrap_or_else(|| defaults::AZURE_OPENAI_API_VERSION.to_owned()),
            api_key: secrets.required_with_hint(names::AZURE_OPENAI_API_KEY, &hint("the resource's key"))?,
        }),
        provider_names::VERTEX_AI => {
            let location = vars.required(names::VERTEX_LOCATION, &hint("e.g. us-central1"))?;
            if !location.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(ConfigError::invalid(names::VERTEX_LOCATION, "must look like us-central1"));
            }
            let endpoint = match vars.get(names::VERTEX_ENDPOINT) {
                Some(raw) => check_url(names::VERTEX_ENDPOINT, &raw)?,
                None => crate::llm::vertex::default_endpoint(&location),
            };
            Ok(ProviderConfig::VertexAi {
                project_id: vars.required(names::VERTEX_PROJECT_ID, &hint("the Google Cloud project"))?,
                model: vars.required(names::VERTEX_MODEL, &hint("e.g. gemini-2.0-flash"))?,
                location,
                endpoint,
                metadata_host: vars.get(names::GCE_METADATA_HOST).unwrap_or_else(|| DEFAULT_METADATA_HOST.to_owned()),
            })
        }
        provider_names::OPENAI => Ok(ProviderConfig::OpenAi {
            base_url: vars.url(names::OPENAI_BASE_URL, &hint("e.g. http://vllm:8000/v1"))?,
            model: vars.required(names::OPENAI_MODEL, &hint("the model name the server serves"))?,
            api_key: secrets.optional(names::OPENAI_API_KEY),
        }),
        provider_names::MOCK => Ok(ProviderConfig::Mock),
        other => Err(ConfigError::invalid(
            names::LLM_PROVIDER,
            format!("{other:?}: expected one of {}", provider_names::ALL.join(", ")),
        )),
    }
}

/// Without `LLM_PROVIDER`, follow the seed: Vertex settings mean Vertex, Azure
/// settings mean Azure. Never the mock: a production pod must not answer from
/// it by accident.
fn infer_provider(vars: &Vars<'_>, secrets: &SecretValues) -> Option<String> {
    if vars.get(names::VERTEX_PROJECT_ID).is_some() {
        Some(provider_names::VERTEX_AI.to_owned())
    } else if secrets.optional(names::AZURE_OPENAI_ENDPOINT).is_some() {
        Some(provider_names::AZURE_OPENAI.to_owned())
    } else {
        None
    }
}

//! Typed configuration, parsed once at start-up by clap ([`cli`]: every
//! setting an option with its environment variable and default), secrets
//! resolved ([`secrets`]), then checked across settings here. Every error
//! names the variable at fault; secrets never appear in messages.

pub mod cli;
mod secret;
pub mod secrets;

use std::net::IpAddr;
use std::time::Duration;

use colloquy_contract::{env as names, provider as provider_names};

pub use cli::{Invocation, MigrateArgs, ServeArgs};
pub use secret::Secret;
pub use secrets::{SecretInputs, SecretValues};

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
    pub fn missing_with_hint(var: &str, hint: &str) -> Self {
        Self::Missing { var: var.to_owned(), hint: format!(" ({hint})") }
    }

    pub fn invalid(var: &str, message: impl Into<String>) -> Self {
        Self::Invalid { var: var.to_owned(), message: message.into() }
    }

    /// The variable at fault.
    pub fn var(&self) -> &str {
        match self {
            Self::Missing { var, .. } | Self::Invalid { var, .. } | Self::Unreadable { var, .. } => var,
        }
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
        /// Base URL; defaults to `https://{location}-aiplatform.googleapis.com`.
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

/// The HTTP surface: CORS, docs, size, time and concurrency limits.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub allowed_origins: AllowedOrigins,
    /// Serve `/docs` and `/redoc` (`API_DOCS`).
    pub api_docs: bool,
    pub max_body_bytes: usize,
    /// Time until the response head (`REQUEST_TIMEOUT_SECS`).
    pub request_timeout: Duration,
    pub max_in_flight: usize,
}

/// Per-user limits and idempotency.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// `RATE_LIMIT_RPM`; `None` is off.
    pub requests_per_minute: Option<u32>,
    /// `RATE_LIMIT_TPM`; `None` is off.
    pub tokens_per_minute: Option<u32>,
    pub idempotency_ttl: Duration,
}

/// What happens after SIGTERM.
#[derive(Debug, Clone, Copy)]
pub struct ShutdownConfig {
    /// New connections are still accepted this long (readiness already fails).
    pub drain: Duration,
    /// Then in-flight requests get this long to finish.
    pub grace: Duration,
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
    pub provider: ProviderConfig,
    pub llm_timeout: Duration,
    pub system_prompt: Option<String>,
    pub max_history_messages: usize,
    pub max_message_chars: usize,
    pub jwt: JwtConfig,
    pub http: HttpConfig,
    pub limits: LimitsConfig,
    pub shutdown: ShutdownConfig,
}

/// What both `serve` and `migrate` need to reach PostgreSQL.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    pub url: Secret,
    pub max_connections: u32,
    /// How long `migrate` (and start-up) keeps retrying an unreachable database.
    pub connect_timeout: Duration,
}

impl DatabaseConfig {
    /// The database settings alone (what `migrate` needs).
    pub fn new(args: &cli::DatabaseArgs, secrets: &SecretValues) -> Result<Self, ConfigError> {
        let url = secrets.required(names::DATABASE_URL)?;
        if !(url.expose().starts_with("postgres://") || url.expose().starts_with("postgresql://")) {
            return Err(ConfigError::invalid(names::DATABASE_URL, "must start with postgres:// or postgresql://"));
        }
        Ok(Self {
            url,
            max_connections: args.database_max_connections,
            connect_timeout: Duration::from_secs(args.migrate_timeout_secs),
        })
    }

    /// `migrate`'s settings, secrets resolved.
    pub async fn load(args: &MigrateArgs, inputs: &SecretInputs, http: &reqwest::Client) -> Result<Self, ConfigError> {
        let secrets = inputs.resolve(&args.google, http, secrets::SECRET_MANAGER_TIMEOUT).await?;
        Self::new(&args.database, &secrets)
    }
}

impl Config {
    /// `serve`'s settings, secrets resolved (files read, Secret Manager asked).
    pub async fn load(args: &ServeArgs, inputs: &SecretInputs, http: &reqwest::Client) -> Result<Self, ConfigError> {
        let secrets = inputs.resolve(&args.google, http, secrets::SECRET_MANAGER_TIMEOUT).await?;
        Self::new(args, &secrets)
    }

    /// The configuration from variables given as pairs instead of the process
    /// environment, with secrets given directly (tests, tools).
    pub fn from_vars(vars: &[(&str, &str)]) -> Result<Self, ConfigError> {
        let (args, inputs) = serve_args(vars)?;
        Self::new(&args, &inputs.direct()?)
    }

    /// Like [`Config::from_vars`], also resolving `X_FILE` and `X_SECRET_NAME`.
    pub async fn load_vars(
        vars: &[(&str, &str)],
        http: &reqwest::Client,
        secret_manager_timeout: Duration,
    ) -> Result<Self, ConfigError> {
        let (args, inputs) = serve_args(vars)?;
        let secrets = inputs.resolve(&args.google, http, secret_manager_timeout).await?;
        Self::new(&args, &secrets)
    }

    /// Checks across settings what clap cannot, and builds the configuration.
    pub fn new(args: &ServeArgs, secrets: &SecretValues) -> Result<Self, ConfigError> {
        let internal_api_key = secrets.required(names::INTERNAL_API_KEY)?;
        if internal_api_key.expose().len() < 16 {
            return Err(ConfigError::invalid(names::INTERNAL_API_KEY, "must be at least 16 characters long"));
        }
        let llm_timeout = Duration::from_secs(args.provider.llm_timeout_secs);
        let request_timeout_secs = match args.http.request_timeout_secs {
            None => args.provider.llm_timeout_secs + 10,
            Some(secs) if secs <= args.provider.llm_timeout_secs => {
                return Err(ConfigError::invalid(
                    names::REQUEST_TIMEOUT_SECS,
                    format!(
                        "{secs} must be greater than {} ({}), or a request times out before its provider call",
                        names::LLM_TIMEOUT_SECS,
                        args.provider.llm_timeout_secs
                    ),
                ));
            }
            Some(secs) => secs,
        };
        let grace_secs = args.shutdown.shutdown_grace_secs.unwrap_or(request_timeout_secs + 5);
        let per_minute = |v: Option<u32>| v.filter(|&n| n > 0);
        Ok(Self {
            host: args.listen.host,
            port: args.listen.port,
            metrics_port: args.listen.metrics_port,
            database: DatabaseConfig::new(&args.database, secrets)?,
            run_migrations: args.run_migrations,
            internal_api_key,
            provider: provider(args, secrets)?,
            llm_timeout,
            system_prompt: args.chat.system_prompt.clone().filter(|p| !p.trim().is_empty()),
            max_history_messages: args.chat.max_history_messages,
            max_message_chars: args.chat.max_message_chars,
            jwt: JwtConfig {
                secret: secrets.optional(names::JWT_SECRET),
                jwks_url: args.jwt.jwt_jwks_url.clone(),
                audience: args.jwt.jwt_audience.clone(),
                issuer: args.jwt.jwt_issuer.clone(),
            },
            http: HttpConfig {
                allowed_origins: args.http.allowed_origins.clone(),
                api_docs: args.http.api_docs,
                max_body_bytes: args.http.max_body_bytes,
                request_timeout: Duration::from_secs(request_timeout_secs),
                max_in_flight: args.http.max_in_flight,
            },
            limits: LimitsConfig {
                requests_per_minute: per_minute(args.limits.rate_limit_rpm),
                tokens_per_minute: per_minute(args.limits.rate_limit_tpm),
                idempotency_ttl: Duration::from_secs(args.limits.idempotency_ttl_secs),
            },
            shutdown: ShutdownConfig {
                drain: Duration::from_secs(args.shutdown.shutdown_drain_secs),
                grace: Duration::from_secs(grace_secs),
            },
        })
    }
}

fn serve_args(vars: &[(&str, &str)]) -> Result<(ServeArgs, SecretInputs), ConfigError> {
    match cli::parse_vars(colloquy_contract::commands::SERVE, vars.iter().copied()) {
        Ok(Invocation::Serve(args, inputs)) => Ok((*args, inputs)),
        Ok(Invocation::Migrate(..)) => unreachable!("parsed as serve"),
        Err(cli::CliError::Config(e)) => Err(e),
        Err(cli::CliError::Usage(e)) => Err(ConfigError::invalid("arguments", e.to_string())),
    }
}

fn provider(args: &ServeArgs, secrets: &SecretValues) -> Result<ProviderConfig, ConfigError> {
    let p = &args.provider;
    let name = match p.llm_provider.clone() {
        Some(name) => name,
        None => infer_provider(args, secrets).ok_or_else(|| {
            ConfigError::missing_with_hint(
                names::LLM_PROVIDER,
                &format!("one of {}; use mock for the offline provider", provider_names::ALL.join(", ")),
            )
        })?,
    };
    let hint = |what: &str| format!("needed when {}={name}: {what}", names::LLM_PROVIDER);
    let required = |value: &Option<String>, var: &str, what: &str| {
        value.clone().filter(|v| !v.trim().is_empty()).ok_or_else(|| ConfigError::missing_with_hint(var, &hint(what)))
    };
    match name.as_str() {
        provider_names::AZURE_OPENAI => {
            let endpoint = secrets
                .required_with_hint(names::AZURE_OPENAI_ENDPOINT, &hint("https://<resource>.openai.azure.com"))?;
            Ok(ProviderConfig::AzureOpenAi {
                endpoint: cli::http_url(endpoint.expose())
                    .map_err(|m| ConfigError::invalid(names::AZURE_OPENAI_ENDPOINT, m))?,
                deployment: secrets
                    .required_with_hint(names::AZURE_OPENAI_DEPLOYMENT_NAME, &hint("the deployment name"))?
                    .expose()
                    .to_owned(),
                api_version: p.azure_openai_api_version.clone(),
                api_key: secrets.required_with_hint(names::AZURE_OPENAI_API_KEY, &hint("the resource's key"))?,
            })
        }
        provider_names::VERTEX_AI => {
            let location = required(&p.vertex_location, names::VERTEX_LOCATION, "e.g. us-central1")?;
            if !location.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
                return Err(ConfigError::invalid(names::VERTEX_LOCATION, "must look like us-central1"));
            }
            let endpoint =
                p.vertex_endpoint.clone().unwrap_or_else(|| format!("https://{location}-aiplatform.googleapis.com"));
            Ok(ProviderConfig::VertexAi {
                project_id: required(&p.vertex_project_id, names::VERTEX_PROJECT_ID, "the Google Cloud project")?,
                model: required(&p.vertex_model, names::VERTEX_MODEL, "e.g. gemini-2.0-flash")?,
                location,
                endpoint,
                metadata_host: args.google.gce_metadata_host.clone(),
            })
        }
        provider_names::OPENAI => Ok(ProviderConfig::OpenAi {
            base_url: required(&p.openai_base_url, names::OPENAI_BASE_URL, "e.g. http://vllm:8000/v1")?,
            model: required(&p.openai_model, names::OPENAI_MODEL, "the model name the server serves")?,
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
fn infer_provider(args: &ServeArgs, secrets: &SecretValues) -> Option<String> {
    if args.provider.vertex_project_id.is_some() {
        Some(provider_names::VERTEX_AI.to_owned())
    } else if secrets.optional(names::AZURE_OPENAI_ENDPOINT).is_some() {
        Some(provider_names::AZURE_OPENAI.to_owned())
    } else {
        None
    }
}

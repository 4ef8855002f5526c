//! The command line: `chat-api serve | migrate`, every setting an option with
//! its environment variable (clap's `env` support), parsed once.
//!
//! Secret variables are not fields here: for each name in
//! [`names::SECRETS`] the command gets three options built from that list
//! (`X`, `X_FILE`, `X_SECRET_NAME`), whose values never appear in `--help`.
//! [`super::secrets::SecretInputs`] reads them back from the matches.

use std::collections::HashMap;
use std::net::IpAddr;

use clap::builder::{BoolishValueParser, PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Arg, ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use colloquy_contract::{defaults, env as names, http_version, log_format, provider as provider_names, titles};

use super::secrets::SecretInputs;
use super::{AllowedOrigins, ConfigError, LogFormat, TitleMode};
use crate::llm::connections::HttpVersion;

/// The `chat-api` command line.
#[derive(Debug, Parser)]
#[command(
    name = "chat-api",
    version,
    about = "Colloquy chat API",
    long_about = "Colloquy chat API. Every option can also be set by the environment variable shown with it; \
                  secrets (DATABASE_URL, INTERNAL_API_KEY, ...) may instead come from a file (X_FILE) or from \
                  Google Secret Manager (X_SECRET_NAME with GCP_PROJECT_ID)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP API (PORT) and metrics (METRICS_PORT) servers.
    Serve(Box<ServeArgs>),
    /// Apply database migrations and exit.
    Migrate(Box<MigrateArgs>),
}

/// Settings of `chat-api serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub listen: ListenArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
    /// Apply migrations at start-up.
    #[arg(long, env = names::RUN_MIGRATIONS, default_value_t = false, action = clap::ArgAction::Set,
          value_parser = BoolishValueParser::new(), help_heading = "Database")]
    pub run_migrations: bool,
    #[command(flatten)]
    pub provider: ProviderArgs,
    #[command(flatten)]
    pub resilience: ResilienceArgs,
    #[command(flatten)]
    pub connections: ConnectionArgs,
    /// The fallback provider's settings (`FALLBACK_` + each provider option),
    /// when `FALLBACK_LLM_PROVIDER` is set: filled in by [`parse`] from the
    /// options [`fallback_args`] adds.
    #[arg(skip)]
    pub fallback: Option<ProviderArgs>,
    #[command(flatten)]
    pub chat: ChatArgs,
    #[command(flatten)]
    pub jwt: JwtArgs,
    #[command(flatten)]
    pub http: HttpArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub shutdown: ShutdownArgs,
    #[command(flatten)]
    pub google: GoogleArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

/// Settings of `chat-api migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// Print the newest migration compiled into this binary and exit.
    #[arg(long)]
    pub print_version: bool,
    #[command(flatten)]
    pub database: DatabaseArgs,
    #[command(flatten)]
    pub google: GoogleArgs,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Listeners")]
pub struct ListenArgs {
    /// Address both servers listen on.
    #[arg(long, env = names::HOST, default_value = "0.0.0.0")]
    pub host: IpAddr,
    /// Port of the public API.
    #[arg(long, env = names::PORT, default_value_t = defaults::PORT)]
    pub port: u16,
    /// Port of /metrics, apart from the public API.
    #[arg(long, env = names::METRICS_PORT, default_value_t = defaults::METRICS_PORT)]
    pub metrics_port: u16,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Database")]
pub struct DatabaseArgs {
    /// Size of the connection pool.
    #[arg(long, env = names::DATABASE_MAX_CONNECTIONS, default_value_t = defaults::DATABASE_MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub database_max_connections: u32,
    /// Pooled connections opened at start-up, off the request path, and kept open (at most
    /// DATABASE_MAX_CONNECTIONS) [default: 4, or DATABASE_MAX_CONNECTIONS when smaller].
    #[arg(long, env = names::DATABASE_MIN_CONNECTIONS)]
    pub database_min_connections: Option<u32>,
    /// How long `migrate` (and `serve` with RUN_MIGRATIONS) waits for the database, in seconds.
    #[arg(long, env = names::MIGRATE_TIMEOUT_SECS, default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub migrate_timeout_secs: u64,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Model provider")]
pub struct ProviderArgs {
    /// Which provider answers; inferred from the Vertex or Azure settings when unset.
    #[arg(long, env = names::LLM_PROVIDER, value_parser = PossibleValuesParser::new(provider_names::ALL))]
    pub llm_provider: Option<String>,
    /// Seconds a provider call may take (504 after it).
    #[arg(long, env = names::LLM_TIMEOUT_SECS, default_value_t = defaults::LLM_TIMEOUT_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub llm_timeout_secs: u64,
    /// Azure OpenAI API version.
    #[arg(long, env = names::AZURE_OPENAI_API_VERSION, default_value = defaults::AZURE_OPENAI_API_VERSION)]
    pub azure_openai_api_version: String,
    /// Vertex AI: Google Cloud project.
    #[arg(long, env = names::VERTEX_PROJECT_ID)]
    pub vertex_project_id: Option<String>,
    /// Vertex AI: location, e.g. us-central1.
    #[arg(long, env = names::VERTEX_LOCATION)]
    pub vertex_location: Option<String>,
    /// Vertex AI: model, e.g. gemini-2.0-flash.
    #[arg(long, env = names::VERTEX_MODEL)]
    pub vertex_model: Option<String>,
    /// Vertex AI base URL [default: https://{location}-aiplatform.googleapis.com].
    #[arg(long, env = names::VERTEX_ENDPOINT, value_parser = http_url)]
    pub vertex_endpoint: Option<String>,
    /// OpenAI-compatible server, e.g. http://vllm:8000/v1.
    #[arg(long, env = names::OPENAI_BASE_URL, value_parser = http_url)]
    pub openai_base_url: Option<String>,
    /// Model name the OpenAI-compatible server serves.
    #[arg(long, env = names::OPENAI_MODEL)]
    pub openai_model: Option<String>,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Provider faults")]
pub struct ResilienceArgs {
    /// Retries of a transient provider fault (429, 5xx, connection), with jittered backoff.
    #[arg(long, env = names::LLM_MAX_RETRIES, default_value_t = defaults::LLM_MAX_RETRIES,
          value_parser = clap::value_parser!(u32).range(0..=10))]
    pub llm_max_retries: u32,
    /// Consecutive failed provider calls that open the circuit breaker; 0 turns it off.
    #[arg(long, env = names::LLM_BREAKER_FAILURES, default_value_t = defaults::LLM_BREAKER_FAILURES)]
    pub llm_breaker_failures: u32,
    /// Seconds an open breaker fails fast before a probe call.
    #[arg(long, env = names::LLM_BREAKER_COOLDOWN_SECS, default_value_t = defaults::LLM_BREAKER_COOLDOWN_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub llm_breaker_cooldown_secs: u64,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Provider connections")]
pub struct ConnectionArgs {
    /// HTTP version of provider calls: `auto` (HTTP/2 when TLS negotiates it), `http1`, or `http2` (also over
    /// plain http://, for h2c servers).
    #[arg(long, env = names::LLM_HTTP_VERSION, default_value = http_version::AUTO, value_parser = http_version_parser())]
    pub llm_http_version: HttpVersion,
    /// Provider requests one connection carries at once before another is opened (HTTP/2 streams; keep it at
    /// or below the provider's SETTINGS_MAX_CONCURRENT_STREAMS).
    #[arg(long, env = names::LLM_STREAMS_PER_CONNECTION, default_value_t = defaults::LLM_STREAMS_PER_CONNECTION,
          value_parser = positive_usize)]
    pub llm_streams_per_connection: usize,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Chat")]
pub struct ChatArgs {
    /// Prepended to every context sent upstream.
    #[arg(long, env = names::SYSTEM_PROMPT)]
    pub system_prompt: Option<String>,
    /// Newest stored messages sent as context.
    #[arg(long, env = names::MAX_HISTORY_MESSAGES, default_value_t = defaults::MAX_HISTORY_MESSAGES,
          value_parser = positive_usize)]
    pub max_history_messages: usize,
    /// Longest accepted message, in characters.
    #[arg(long, env = names::MAX_MESSAGE_CHARS, default_value_t = defaults::MAX_MESSAGE_CHARS,
          value_parser = positive_usize)]
    pub max_message_chars: usize,
    /// Seconds a turn waits for its conversation while another turn of it runs (then `409 conversation_busy`).
    #[arg(long, env = names::TURN_WAIT_SECS, default_value_t = defaults::TURN_WAIT_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub turn_wait_secs: u64,
    /// Fold messages beyond the history budget into a summary, off the request path.
    #[arg(long, env = names::SUMMARIES, default_value = "on", action = clap::ArgAction::Set, value_parser = on_off())]
    pub summaries: bool,
    /// How conversations get titles: the first message, or (after the first turn) one the provider makes.
    #[arg(long, env = names::TITLES, default_value = titles::FIRST_MESSAGE, value_parser = title_mode())]
    pub titles: TitleMode,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Authentication")]
pub struct JwtArgs {
    /// JWKS URL for RS256/ES256 Bearer tokens.
    #[arg(long, env = names::JWT_JWKS_URL, value_parser = http_url)]
    pub jwt_jwks_url: Option<String>,
    /// Required `aud` of Bearer tokens.
    #[arg(long, env = names::JWT_AUDIENCE)]
    pub jwt_audience: Option<String>,
    /// Required `iss` of Bearer tokens.
    #[arg(long, env = names::JWT_ISSUER)]
    pub jwt_issuer: Option<String>,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "HTTP")]
pub struct HttpArgs {
    /// Comma-separated CORS origins, or `*` (never with credentials).
    #[arg(long, env = names::ALLOWED_ORIGINS, default_value = "*", value_parser = allowed_origins)]
    pub allowed_origins: AllowedOrigins,
    /// Serve Swagger UI (/docs) and ReDoc (/redoc).
    #[arg(long, env = names::API_DOCS, default_value = "on", action = clap::ArgAction::Set,
          value_parser = on_off())]
    pub api_docs: bool,
    /// Largest request body, in bytes (413 above it).
    #[arg(long, env = names::MAX_BODY_BYTES, default_value_t = defaults::MAX_BODY_BYTES, value_parser = positive_usize)]
    pub max_body_bytes: usize,
    /// Seconds until a request's response head (504 request_timeout after it; a stream, once
    /// started, is not cut) [default: LLM_TIMEOUT_SECS + 10].
    #[arg(long, env = names::REQUEST_TIMEOUT_SECS, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_secs: Option<u64>,
    /// Requests served at once by this process; more get 503 overloaded.
    #[arg(long, env = names::MAX_IN_FLIGHT, default_value_t = defaults::MAX_IN_FLIGHT, value_parser = positive_usize)]
    pub max_in_flight: usize,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Limits and idempotency")]
pub struct LimitArgs {
    /// Requests per minute per user, across replicas (off when unset or 0).
    #[arg(long, env = names::RATE_LIMIT_RPM)]
    pub rate_limit_rpm: Option<u32>,
    /// Model tokens per minute per user, across replicas (off when unset or 0).
    #[arg(long, env = names::RATE_LIMIT_TPM)]
    pub rate_limit_tpm: Option<u32>,
    /// Seconds a stored Idempotency-Key response is replayed.
    #[arg(long, env = names::IDEMPOTENCY_TTL_SECS, default_value_t = defaults::IDEMPOTENCY_TTL_SECS,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idempotency_ttl_secs: u64,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Shutdown")]
pub struct ShutdownArgs {
    /// After SIGTERM: seconds new connections are still accepted (readiness already fails).
    #[arg(long, env = names::SHUTDOWN_DRAIN_SECS, default_value_t = defaults::SHUTDOWN_DRAIN_SECS)]
    pub shutdown_drain_secs: u64,
    /// After the drain: seconds in-flight requests get to finish [default: REQUEST_TIMEOUT_SECS + 5].
    #[arg(long, env = names::SHUTDOWN_GRACE_SECS)]
    pub shutdown_grace_secs: Option<u64>,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Google Cloud")]
pub struct GoogleArgs {
    /// Project of the Secret Manager secrets named by X_SECRET_NAME.
    #[arg(long, env = names::GCP_PROJECT_ID)]
    pub gcp_project_id: Option<String>,
    /// Secret Manager API base URL.
    #[arg(long, env = names::SECRET_MANAGER_ENDPOINT, default_value = crate::gcp::secret_manager::DEFAULT_ENDPOINT,
          value_parser = http_url)]
    pub secret_manager_endpoint: String,
    /// Metadata server (access tokens for Vertex AI and Secret Manager).
    #[arg(long, env = names::GCE_METADATA_HOST, default_value = "metadata.google.internal")]
    pub gce_metadata_host: String,
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Logs and traces")]
pub struct TelemetryArgs {
    /// Log format.
    #[arg(long, env = names::LOG_FORMAT, default_value = log_format::JSON, value_parser = log_format_parser())]
    pub log_format: LogFormat,
    /// Log filter.
    #[arg(long, env = names::RUST_LOG, default_value = crate::telemetry::SERVICE.default_filter)]
    pub rust_log: String,
    /// OTLP/HTTP base URL; traces are exported when set (`/v1/traces` is appended).
    #[arg(long, env = names::OTEL_EXPORTER_OTLP_ENDPOINT)]
    pub otel_exporter_otlp_endpoint: Option<String>,
    /// Full OTLP/HTTP traces URL (wins over the base URL).
    #[arg(long, env = names::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)]
    pub otel_exporter_otlp_traces_endpoint: Option<String>,
    /// Service name in traces.
    #[arg(long, env = names::OTEL_SERVICE_NAME, default_value = crate::telemetry::SERVICE.name)]
    pub otel_service_name: String,
    /// Trace sampler [default: parentbased_always_on].
    #[arg(long, env = names::OTEL_TRACES_SAMPLER)]
    pub otel_traces_sampler: Option<String>,
    /// Sampler ratio for the *traceidratio samplers.
    #[arg(long, env = names::OTEL_TRACES_SAMPLER_ARG)]
    pub otel_traces_sampler_arg: Option<String>,
}

impl TelemetryArgs {
    /// The value of an `OTEL_*` / `RUST_LOG` variable as parsed (for `colloquy-telemetry`).
    pub fn lookup(&self, name: &str) -> Option<String> {
        match name {
            names::RUST_LOG => Some(self.rust_log.clone()),
            names::OTEL_EXPORTER_OTLP_ENDPOINT => self.otel_exporter_otlp_endpoint.clone(),
            names::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT => self.otel_exporter_otlp_traces_endpoint.clone(),
            names::OTEL_SERVICE_NAME => Some(self.otel_service_name.clone()),
            names::OTEL_TRACES_SAMPLER => self.otel_traces_sampler.clone(),
            names::OTEL_TRACES_SAMPLER_ARG => self.otel_traces_sampler_arg.clone(),
            _ => None,
        }
    }
}

// --- value parsers: each error message is about the value; clap names the variable ---

fn positive_usize(raw: &str) -> Result<usize, String> {
    match raw.parse::<usize>() {
        Ok(0) => Err("must be greater than zero".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// An http(s) URL, without trailing slash.
pub fn http_url(raw: &str) -> Result<String, String> {
    let parsed = reqwest::Url::parse(raw).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err("must be an http:// or https:// URL".to_owned());
    }
    Ok(raw.trim_end_matches('/').to_owned())
}

fn allowed_origins(raw: &str) -> Result<AllowedOrigins, String> {
    let origins: Vec<String> =
        raw.split(',').map(|o| o.trim().trim_end_matches('/')).filter(|o| !o.is_empty()).map(str::to_owned).collect();
    if origins.is_empty() || origins.iter().any(|o| o == "*") {
        return Ok(AllowedOrigins::Any);
    }
    for origin in &origins {
        let url = reqwest::Url::parse(origin).map_err(|e| format!("{origin:?} is not an origin: {e}"))?;
        if url.path() != "/" || url.query().is_some() || !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{origin:?} is not an origin (scheme://host[:port], no path)"));
        }
    }
    Ok(AllowedOrigins::List(origins))
}

/// `on` or `off` (also `true` or `false`).
fn on_off() -> impl TypedValueParser<Value = bool> {
    PossibleValuesParser::new([PossibleValue::new("on").alias("true"), PossibleValue::new("off").alias("false")])
        .map(|v| matches!(v.as_str(), "on" | "true"))
}

fn title_mode() -> impl TypedValueParser<Value = TitleMode> {
    PossibleValuesParser::new(titles::ALL)
        .map(|v| if v == titles::PROVIDER { TitleMode::Provider } else { TitleMode::FirstMessage })
}

fn http_version_parser() -> impl TypedValueParser<Value = HttpVersion> {
    PossibleValuesParser::new(http_version::ALL).map(|v| HttpVersion::parse(&v).unwrap_or_default())
}

fn log_format_parser() -> impl TypedValueParser<Value = LogFormat> {
    PossibleValuesParser::new([log_format::JSON, log_format::TEXT])
        .map(|v| if v == log_format::TEXT { LogFormat::Text } else { LogFormat::Json })
}

// --- the command, and parsing it ---

/// A parsed command line: the subcommand's settings and its secret inputs.
#[derive(Debug)]
pub enum Invocation {
    Serve(Box<ServeArgs>, SecretInputs),
    Migrate(Box<MigrateArgs>, SecretInputs),
}

impl Invocation {
    pub fn telemetry(&self) -> &TelemetryArgs {
        match self {
            Self::Serve(args, _) => &args.telemetry,
            Self::Migrate(args, _) => &args.telemetry,
        }
    }
}

/// The secrets each subcommand reads.
fn secrets_of(subcommand: &str) -> &'static [&'static str] {
    if subcommand == colloquy_contract::commands::MIGRATE { &[names::DATABASE_URL] } else { names::SECRETS }
}

/// What a secret is for, in `--help`.
fn secret_help(name: &str) -> &'static str {
    match name {
        names::DATABASE_URL => "PostgreSQL URL, postgres://user:pass@host:5432/db (required)",
        names::INTERNAL_API_KEY => "The X-API-Key callers send, at least 16 characters (required)",
        names::AZURE_OPENAI_API_KEY => "Azure OpenAI key",
        names::OPENAI_API_KEY => "Key of the OpenAI-compatible server (optional)",
        names::JWT_SECRET => "HS256 secret of Bearer tokens",
        names::AZURE_OPENAI_ENDPOINT => "Azure OpenAI resource, https://<resource>.openai.azure.com",
        names::AZURE_OPENAI_DEPLOYMENT_NAME => "Azure OpenAI deployment",
        _ => "secret",
    }
}

fn flag(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// The three options of one secret variable `name`.
fn secret_args(name: &'static str) -> [Arg; 3] {
    let file = format!("{name}{}", names::FILE_SUFFIX);
    let secret_name = format!("{name}{}", names::SECRET_NAME_SUFFIX);
    [
        Arg::new(name)
            .long(flag(name))
            .env(name)
            .value_name(name)
            .hide_env_values(true)
            .help(format!("{} [secret]", secret_help(name)))
            .help_heading("Secrets"),
        Arg::new(file.clone())
            .long(flag(&file))
            .env(file.clone())
            .value_name(file.clone())
            .value_parser(clap::value_parser!(std::path::PathBuf))
            .help(format!("File holding {name} (a mounted Kubernetes Secret)"))
            .help_heading("Secrets"),
        Arg::new(secret_name.clone())
            .long(flag(&secret_name))
            .env(secret_name.clone())
            .value_name(secret_name)
            .help(format!("Google Secret Manager secret holding {name} (with GCP_PROJECT_ID)"))
            .help_heading("Secrets"),
    ]
}

/// The fallback provider's options: each non-secret provider option again,
/// with the same parser and default, under `FALLBACK_` + its variable (the
/// secret ones come with [`names::SECRETS`]). Built from [`ProviderArgs`]
/// rather than written out twice, so the two cannot drift apart.
fn fallback_args() -> Vec<Arg> {
    let primary = ProviderArgs::augment_args(clap::Command::new("provider"));
    primary
        .get_arguments()
        .filter_map(|arg| {
            let env = arg.get_env()?.to_str()?;
            if !names::PROVIDER_SETTINGS.contains(&env) {
                return None;
            }
            let fallback = format!("{}{env}", names::FALLBACK_PREFIX);
            let help = arg.get_help().map(|h| format!("Fallback provider: {h}")).unwrap_or_default();
            Some(
                arg.clone()
                    .id(fallback.clone())
                    .long(flag(&fallback))
                    .env(fallback)
                    .help(help)
                    .help_heading("Fallback provider"),
            )
        })
        .collect()
}

/// The fallback provider's settings from the options of [`fallback_args`],
/// when `FALLBACK_LLM_PROVIDER` is given; options it does not repeat (the
/// timeout) are the primary's.
fn fallback_of(matches: &ArgMatches, primary: &ProviderArgs) -> Option<ProviderArgs> {
    let get = |name: &str| matches.get_one::<String>(&format!("{}{name}", names::FALLBACK_PREFIX)).cloned();
    let llm_provider = get(names::LLM_PROVIDER)?;
    Some(ProviderArgs {
        llm_provider: Some(llm_provider),
        llm_timeout_secs: primary.llm_timeout_secs,
        azure_openai_api_version: get(names::AZURE_OPENAI_API_VERSION)
            .unwrap_or_else(|| defaults::AZURE_OPENAI_API_VERSION.to_owned()),
        vertex_project_id: get(names::VERTEX_PROJECT_ID),
        vertex_location: get(names::VERTEX_LOCATION),
        vertex_model: get(names::VERTEX_MODEL),
        vertex_endpoint: get(names::VERTEX_ENDPOINT),
        openai_base_url: get(names::OPENAI_BASE_URL),
        openai_model: get(names::OPENAI_MODEL),
    })
}

/// The whole command: the derived options plus the secret options of each
/// subcommand, and the fallback provider's options of `serve`.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    for sub in [colloquy_contract::commands::SERVE, colloquy_contract::commands::MIGRATE] {
        cmd = cmd.mut_subcommand(sub, |c| c.args(secrets_of(sub).iter().flat_map(|&n| secret_args(n))));
    }
    cmd.mut_subcommand(colloquy_contract::commands::SERVE, |c| c.args(fallback_args()))
}

/// Every environment variable `sub` reads (for the settings-registry test).
pub fn env_names(sub: &str) -> Vec<String> {
    let cmd = command();
    let sub = cmd.find_subcommand(sub).expect("known subcommand");
    sub.get_arguments().filter_map(|a| a.get_env()).map(|e| e.to_string_lossy().into_owned()).collect()
}

/// Why the command line could not be turned into settings.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// `--help`, `--version`, or a usage mistake: clap prints it and exits.
    #[error(transparent)]
    Usage(#[from] clap::Error),
    /// A variable (or option) with a bad value.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl CliError {
    /// Prints the message and exits: clap's way for usage, ours for configuration.
    pub fn exit(self) -> ! {
        match self {
            Self::Usage(e) => e.exit(),
            Self::Config(e) => {
                eprintln!("error: {e}");
                std::process::exit(2)
            }
        }
    }
}

/// Parses the process's arguments and environment. A variable set to blank
/// counts as unset (Kubernetes manifests often carry `value: ""`).
pub fn parse_process() -> Result<Invocation, CliError> {
    let cmd = command().mut_subcommands(|sub| {
        sub.mut_args(|arg| {
            let blank = arg.get_env().and_then(std::env::var_os).is_some_and(|v| v.to_string_lossy().trim().is_empty());
            if blank { arg.env(None::<&'static str>) } else { arg }
        })
    });
    parse(cmd, std::env::args_os())
}

/// Parses settings given as variables (`NAME` → value) instead of the process
/// environment: what tests and tools use. Blank values count as unset.
pub fn parse_vars<'a>(
    subcommand: &str,
    vars: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Invocation, CliError> {
    let cmd = command();
    let sub = cmd.find_subcommand(subcommand).expect("known subcommand");
    let longs: HashMap<String, String> = sub
        .get_arguments()
        .filter_map(|a| Some((a.get_env()?.to_string_lossy().into_owned(), a.get_long()?.to_owned())))
        .collect();
    // A later pair overrides an earlier one of the same name, as in an environment.
    let mut values: Vec<(&str, &str)> = Vec::new();
    for (name, value) in vars {
        values.retain(|(n, _)| *n != name);
        values.push((name, value));
    }
    let mut argv = vec!["chat-api".to_owned(), subcommand.to_owned()];
    for (name, value) in values {
        if value.trim().is_empty() {
            continue;
        }
        let long = longs
            .get(name)
            .ok_or_else(|| CliError::Config(ConfigError::invalid(name, format!("is not a {subcommand} setting"))))?;
        argv.push(format!("--{long}={value}"));
    }
    let cmd = cmd.mut_subcommands(|sub| sub.mut_args(|arg| arg.env(None::<&'static str>)));
    parse(cmd, argv)
}

fn parse<I, T>(mut cmd: clap::Command, argv: I) -> Result<Invocation, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = cmd.try_get_matches_from_mut(argv).map_err(named)?;
    let cli = Cli::from_arg_matches(&matches).map_err(named)?;
    let (name, sub): (&str, &ArgMatches) = matches.subcommand().expect("a subcommand is required");
    let secrets = SecretInputs::from_matches(sub, secrets_of(name));
    Ok(match cli.command {
        Command::Serve(mut args) => {
            args.fallback = fallback_of(sub, &args.provider);
            Invocation::Serve(args, secrets)
        }
        Command::Migrate(args) => Invocation::Migrate(args, secrets),
    })
}

/// Turns clap's value errors into ours, naming the environment variable;
/// other errors (help, version, unknown options) stay clap's.
fn named(err: clap::Error) -> CliError {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(err.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation) {
        return CliError::Usage(err);
    }
    let Some(ContextValue::String(invalid_arg)) = err.get(ContextKind::InvalidArg) else {
        return CliError::Usage(err);
    };
    // clap renders the option as `--name <VALUE>`.
    let long = invalid_arg.trim_start_matches("--").split([' ', '=']).next().unwrap_or_default();
    // The full command: the one parsed may have had its env bindings removed.
    let cmd = command();
    let var = cmd
        .get_subcommands()
        .flat_map(|s| s.get_arguments())
        .find(|a| a.get_long() == Some(long))
        .and_then(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned());
    let Some(var) = var else {
        return CliError::Usage(err);
    };
    let value = match err.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) if !names::SECRETS.contains(&var.as_str()) => format!("{v:?}: "),
        _ => String::new(),
    };
    let reason = match (err.kind(), err.get(ContextKind::ValidValue)) {
        (ErrorKind::InvalidValue, Some(ContextValue::Strings(valid))) => {
            format!("expected one of {}", valid.join(", "))
        }
        _ => std::error::Error::source(&err).map(ToString::to_string).unwrap_or_else(|| "invalid value".to_owned()),
    };
    CliError::Config(ConfigError::invalid(&var, format!("{value}{reason}")))
}

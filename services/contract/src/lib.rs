//! The configuration contract between the chat API (which reads it) and the
//! controller, chart and manifests (which write it). One place for each fact:
//! change a name here and both sides follow.

/// Environment variable names read by `chat-api`.
pub mod env {
    // --- Seed contract -------------------------------------------------------
    /// PostgreSQL connection URL (secret).
    pub const DATABASE_URL: &str = "DATABASE_URL";
    /// The internal key callers send as `X-API-Key` (secret, required).
    pub const INTERNAL_API_KEY: &str = "INTERNAL_API_KEY";
    /// Comma-separated CORS origins; `*` when unset.
    pub const ALLOWED_ORIGINS: &str = "ALLOWED_ORIGINS";
    pub const VERTEX_PROJECT_ID: &str = "VERTEX_PROJECT_ID";
    pub const VERTEX_LOCATION: &str = "VERTEX_LOCATION";
    pub const VERTEX_MODEL: &str = "VERTEX_MODEL";
    /// Overrides `https://{location}-aiplatform.googleapis.com` (tests, private endpoints).
    pub const VERTEX_ENDPOINT: &str = "VERTEX_ENDPOINT";
    /// Host of the GCE metadata server (standard Google client variable).
    pub const GCE_METADATA_HOST: &str = "GCE_METADATA_HOST";
    pub const AZURE_OPENAI_ENDPOINT: &str = "AZURE_OPENAI_ENDPOINT";
    pub const AZURE_OPENAI_DEPLOYMENT_NAME: &str = "AZURE_OPENAI_DEPLOYMENT_NAME";
    pub const AZURE_OPENAI_API_VERSION: &str = "AZURE_OPENAI_API_VERSION";
    /// Secret.
    pub const AZURE_OPENAI_API_KEY: &str = "AZURE_OPENAI_API_KEY";
    /// Google Secret Manager mode: project holding `X_SECRET_NAME` secrets.
    pub const GCP_PROJECT_ID: &str = "GCP_PROJECT_ID";
    /// Overrides `https://secretmanager.googleapis.com` (tests).
    pub const SECRET_MANAGER_ENDPOINT: &str = "SECRET_MANAGER_ENDPOINT";

    // --- Colloquy additions ----------------------------------------------------
    /// `azure-openai`, `vertex-ai`, `openai` or `mock`.
    pub const LLM_PROVIDER: &str = "LLM_PROVIDER";
    pub const LLM_TIMEOUT_SECS: &str = "LLM_TIMEOUT_SECS";
    pub const OPENAI_BASE_URL: &str = "OPENAI_BASE_URL";
    pub const OPENAI_MODEL: &str = "OPENAI_MODEL";
    /// Secret, optional.
    pub const OPENAI_API_KEY: &str = "OPENAI_API_KEY";
    pub const SYSTEM_PROMPT: &str = "SYSTEM_PROMPT";
    pub const MAX_HISTORY_MESSAGES: &str = "MAX_HISTORY_MESSAGES";
    pub const MAX_MESSAGE_CHARS: &str = "MAX_MESSAGE_CHARS";
    pub const HOST: &str = "HOST";
    pub const PORT: &str = "PORT";
    pub const METRICS_PORT: &str = "METRICS_PORT";
    pub const RUN_MIGRATIONS: &str = "RUN_MIGRATIONS";
    pub const MIGRATE_TIMEOUT_SECS: &str = "MIGRATE_TIMEOUT_SECS";
    pub const DATABASE_MAX_CONNECTIONS: &str = "DATABASE_MAX_CONNECTIONS";
    /// Pooled connections opened at start-up and kept open.
    pub const DATABASE_MIN_CONNECTIONS: &str = "DATABASE_MIN_CONNECTIONS";
    /// HS256 shared secret for Bearer JWTs (secret).
    pub const JWT_SECRET: &str = "JWT_SECRET";
    /// JWKS URL for RS256/ES256 Bearer JWTs.
    pub const JWT_JWKS_URL: &str = "JWT_JWKS_URL";
    pub const JWT_AUDIENCE: &str = "JWT_AUDIENCE";
    pub const JWT_ISSUER: &str = "JWT_ISSUER";
    pub const LOG_FORMAT: &str = "LOG_FORMAT";
    pub const RUST_LOG: &str = "RUST_LOG";
    /// OpenTelemetry (standard names): traces are exported over OTLP/HTTP
    /// (JSON) when the endpoint is set, and off otherwise.
    pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
    pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
    pub const OTEL_TRACES_SAMPLER: &str = "OTEL_TRACES_SAMPLER";
    pub const OTEL_TRACES_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";

    // --- Conversation features (issue 9) -------------------------------------
    /// `on` (default) or `off`: fold old messages into `conversation_summary`.
    pub const SUMMARIES: &str = "SUMMARIES";
    /// `first-message` (default) or `provider`: how conversations get titles.
    pub const TITLES: &str = "TITLES";
    /// Seconds a turn waits for another turn of the same conversation to
    /// finish before answering `409 conversation_busy`.
    pub const TURN_WAIT_SECS: &str = "TURN_WAIT_SECS";

    // --- Resilience and limits (issue 11) -------------------------------------
    pub const LLM_MAX_RETRIES: &str = "LLM_MAX_RETRIES";
    pub const LLM_BREAKER_FAILURES: &str = "LLM_BREAKER_FAILURES";
    pub const LLM_BREAKER_COOLDOWN_SECS: &str = "LLM_BREAKER_COOLDOWN_SECS";
    /// Prefix of the fallback provider's variables (`FALLBACK_LLM_PROVIDER`,
    /// `FALLBACK_OPENAI_BASE_URL`, ...): the primary's names with this in front.
    pub const FALLBACK_PREFIX: &str = "FALLBACK_";
    // The fallback provider's variables: each is `FALLBACK_PREFIX` + a primary
    // provider variable (a test below holds the line). `GCE_METADATA_HOST` and
    // `LLM_TIMEOUT_SECS` are shared, not repeated.
    pub const FALLBACK_LLM_PROVIDER: &str = "FALLBACK_LLM_PROVIDER";
    pub const FALLBACK_AZURE_OPENAI_ENDPOINT: &str = "FALLBACK_AZURE_OPENAI_ENDPOINT";
    pub const FALLBACK_AZURE_OPENAI_DEPLOYMENT_NAME: &str = "FALLBACK_AZURE_OPENAI_DEPLOYMENT_NAME";
    pub const FALLBACK_AZURE_OPENAI_API_VERSION: &str = "FALLBACK_AZURE_OPENAI_API_VERSION";
    /// Secret.
    pub const FALLBACK_AZURE_OPENAI_API_KEY: &str = "FALLBACK_AZURE_OPENAI_API_KEY";
    pub const FALLBACK_VERTEX_PROJECT_ID: &str = "FALLBACK_VERTEX_PROJECT_ID";
    pub const FALLBACK_VERTEX_LOCATION: &str = "FALLBACK_VERTEX_LOCATION";
    pub const FALLBACK_VERTEX_MODEL: &str = "FALLBACK_VERTEX_MODEL";
    pub const FALLBACK_VERTEX_ENDPOINT: &str = "FALLBACK_VERTEX_ENDPOINT";
    pub const FALLBACK_OPENAI_BASE_URL: &str = "FALLBACK_OPENAI_BASE_URL";
    pub const FALLBACK_OPENAI_MODEL: &str = "FALLBACK_OPENAI_MODEL";
    /// Secret, optional.
    pub const FALLBACK_OPENAI_API_KEY: &str = "FALLBACK_OPENAI_API_KEY";
    /// The primary provider variables the fallback repeats under `FALLBACK_PREFIX`.
    pub const PROVIDER_SETTINGS: &[&str] = &[
        LLM_PROVIDER,
        AZURE_OPENAI_ENDPOINT,
        AZURE_OPENAI_DEPLOYMENT_NAME,
        AZURE_OPENAI_API_VERSION,
        AZURE_OPENAI_API_KEY,
        VERTEX_PROJECT_ID,
        VERTEX_LOCATION,
        VERTEX_MODEL,
        VERTEX_ENDPOINT,
        OPENAI_BASE_URL,
        OPENAI_MODEL,
        OPENAI_API_KEY,
    ];
    /// Every fallback variable, in the order of [`PROVIDER_SETTINGS`].
    pub const FALLBACK_SETTINGS: &[&str] = &[
        FALLBACK_LLM_PROVIDER,
        FALLBACK_AZURE_OPENAI_ENDPOINT,
        FALLBACK_AZURE_OPENAI_DEPLOYMENT_NAME,
        FALLBACK_AZURE_OPENAI_API_VERSION,
        FALLBACK_AZURE_OPENAI_API_KEY,
        FALLBACK_VERTEX_PROJECT_ID,
        FALLBACK_VERTEX_LOCATION,
        FALLBACK_VERTEX_MODEL,
        FALLBACK_VERTEX_ENDPOINT,
        FALLBACK_OPENAI_BASE_URL,
        FALLBACK_OPENAI_MODEL,
        FALLBACK_OPENAI_API_KEY,
    ];
    pub const IDEMPOTENCY_TTL_SECS: &str = "IDEMPOTENCY_TTL_SECS";
    pub const RATE_LIMIT_RPM: &str = "RATE_LIMIT_RPM";
    pub const RATE_LIMIT_TPM: &str = "RATE_LIMIT_TPM";
    pub const MAX_IN_FLIGHT: &str = "MAX_IN_FLIGHT";
    pub const REQUEST_TIMEOUT_SECS: &str = "REQUEST_TIMEOUT_SECS";
    pub const MAX_BODY_BYTES: &str = "MAX_BODY_BYTES";
    /// `on` (default) or `off`: serve `/docs` and `/redoc`.
    pub const API_DOCS: &str = "API_DOCS";
    /// After SIGTERM: seconds to keep accepting while endpoints are withdrawn.
    pub const SHUTDOWN_DRAIN_SECS: &str = "SHUTDOWN_DRAIN_SECS";
    /// After the drain: seconds in-flight turns (streams too) get to finish.
    pub const SHUTDOWN_GRACE_SECS: &str = "SHUTDOWN_GRACE_SECS";

    // --- Provider connections (issue 9: streams in flight) -------------------
    /// `auto` (default), `http1` or `http2`: the HTTP version of provider calls.
    pub const LLM_HTTP_VERSION: &str = "LLM_HTTP_VERSION";
    /// Provider requests one connection carries at once before another
    /// connection is opened (HTTP/2 multiplexes them).
    pub const LLM_STREAMS_PER_CONNECTION: &str = "LLM_STREAMS_PER_CONNECTION";

    /// Every variable `chat-api` reads: the settings registry. Whoever adds a
    /// setting to the chat API adds its name here; tests on both sides hold
    /// the line: the chat API's configuration reads exactly these, and the
    /// controller sets each one from a `ChatBackend` field or lists it as
    /// deliberately not settable (with the reason).
    pub const ALL: &[&str] = &[
        DATABASE_URL,
        INTERNAL_API_KEY,
        ALLOWED_ORIGINS,
        VERTEX_PROJECT_ID,
        VERTEX_LOCATION,
        VERTEX_MODEL,
        VERTEX_ENDPOINT,
        GCE_METADATA_HOST,
        AZURE_OPENAI_ENDPOINT,
        AZURE_OPENAI_DEPLOYMENT_NAME,
        AZURE_OPENAI_API_VERSION,
        AZURE_OPENAI_API_KEY,
        GCP_PROJECT_ID,
        SECRET_MANAGER_ENDPOINT,
        LLM_PROVIDER,
        LLM_TIMEOUT_SECS,
        OPENAI_BASE_URL,
        OPENAI_MODEL,
        OPENAI_API_KEY,
        SYSTEM_PROMPT,
        MAX_HISTORY_MESSAGES,
        MAX_MESSAGE_CHARS,
        HOST,
        PORT,
        METRICS_PORT,
        RUN_MIGRATIONS,
        MIGRATE_TIMEOUT_SECS,
        DATABASE_MAX_CONNECTIONS,
        JWT_SECRET,
        JWT_JWKS_URL,
        JWT_AUDIENCE,
        JWT_ISSUER,
        LOG_FORMAT,
        RUST_LOG,
        OTEL_EXPORTER_OTLP_ENDPOINT,
        OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
        OTEL_SERVICE_NAME,
        OTEL_TRACES_SAMPLER,
        OTEL_TRACES_SAMPLER_ARG,
        TURN_WAIT_SECS,
        // Provider faults (issue 11).
        LLM_MAX_RETRIES,
        LLM_BREAKER_FAILURES,
        LLM_BREAKER_COOLDOWN_SECS,
        FALLBACK_LLM_PROVIDER,
        FALLBACK_AZURE_OPENAI_ENDPOINT,
        FALLBACK_AZURE_OPENAI_DEPLOYMENT_NAME,
        FALLBACK_AZURE_OPENAI_API_VERSION,
        FALLBACK_AZURE_OPENAI_API_KEY,
        FALLBACK_VERTEX_PROJECT_ID,
        FALLBACK_VERTEX_LOCATION,
        FALLBACK_VERTEX_MODEL,
        FALLBACK_VERTEX_ENDPOINT,
        FALLBACK_OPENAI_BASE_URL,
        FALLBACK_OPENAI_MODEL,
        FALLBACK_OPENAI_API_KEY,
        SUMMARIES,
        TITLES,
        // Resilience and limits (issue 11).
        REQUEST_TIMEOUT_SECS,
        MAX_IN_FLIGHT,
        MAX_BODY_BYTES,
        API_DOCS,
        RATE_LIMIT_RPM,
        RATE_LIMIT_TPM,
        IDEMPOTENCY_TTL_SECS,
        SHUTDOWN_DRAIN_SECS,
        SHUTDOWN_GRACE_SECS,
        LLM_HTTP_VERSION,
        LLM_STREAMS_PER_CONNECTION,
        DATABASE_MIN_CONNECTIONS,
    ];

    /// Suffix naming a file that holds a secret's value (`X_FILE`).
    pub const FILE_SUFFIX: &str = "_FILE";
    /// Suffix naming a Google Secret Manager secret that holds it (`X_SECRET_NAME`).
    pub const SECRET_NAME_SUFFIX: &str = "_SECRET_NAME";

    /// Variables whose values are secrets: they may come from `X_FILE` or
    /// `X_SECRET_NAME`, and never appear in logs or errors.
    pub const SECRETS: &[&str] = &[
        DATABASE_URL,
        INTERNAL_API_KEY,
        AZURE_OPENAI_API_KEY,
        OPENAI_API_KEY,
        JWT_SECRET,
        // The seed kept these in Secret Manager too.
        AZURE_OPENAI_ENDPOINT,
        AZURE_OPENAI_DEPLOYMENT_NAME,
        // The fallback provider's, likewise.
        FALLBACK_AZURE_OPENAI_API_KEY,
        FALLBACK_OPENAI_API_KEY,
        FALLBACK_AZURE_OPENAI_ENDPOINT,
        FALLBACK_AZURE_OPENAI_DEPLOYMENT_NAME,
    ];

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn fallback_settings_are_the_provider_settings_prefixed() {
            assert_eq!(FALLBACK_SETTINGS.len(), PROVIDER_SETTINGS.len());
            for (fallback, primary) in FALLBACK_SETTINGS.iter().zip(PROVIDER_SETTINGS) {
                assert_eq!(*fallback, format!("{FALLBACK_PREFIX}{primary}"));
                assert!(ALL.contains(primary) && ALL.contains(fallback), "{fallback} or {primary} not in ALL");
                assert_eq!(SECRETS.contains(primary), SECRETS.contains(fallback), "{fallback} secret-ness");
            }
        }
    }
}

/// Values of `LLM_PROVIDER`.
pub mod provider {
    pub const AZURE_OPENAI: &str = "azure-openai";
    pub const VERTEX_AI: &str = "vertex-ai";
    pub const OPENAI: &str = "openai";
    pub const MOCK: &str = "mock";
    pub const ALL: &[&str] = &[AZURE_OPENAI, VERTEX_AI, OPENAI, MOCK];
}

/// Defaults shared by the service and what deploys it.
pub mod defaults {
    pub const PORT: u16 = 8000;
    pub const METRICS_PORT: u16 = 9090;
    pub const AZURE_OPENAI_API_VERSION: &str = "2024-10-21";
    pub const LLM_TIMEOUT_SECS: u64 = 60;
    pub const MAX_HISTORY_MESSAGES: usize = 50;
    pub const TURN_WAIT_SECS: u64 = 30;
    pub const LLM_MAX_RETRIES: u32 = 2;
    pub const LLM_BREAKER_FAILURES: u32 = 5;
    pub const LLM_BREAKER_COOLDOWN_SECS: u64 = 30;
    /// Provider requests per connection: the `SETTINGS_MAX_CONCURRENT_STREAMS`
    /// that RFC 9113 recommends servers allow at least, and what Google's and
    /// most front ends advertise.
    pub const LLM_STREAMS_PER_CONNECTION: usize = 100;
    /// Size of the database pool (the CRD's CEL bound on
    /// `limits.databaseMinConnections` repeats it; a controller test holds the line).
    pub const DATABASE_MAX_CONNECTIONS: u32 = 16;
    /// Pooled database connections kept open (at most `DATABASE_MAX_CONNECTIONS`).
    pub const DATABASE_MIN_CONNECTIONS: u32 = 4;
    pub const MAX_MESSAGE_CHARS: usize = 32_000;
    /// Largest request body (1 MiB).
    pub const MAX_BODY_BYTES: usize = 1024 * 1024;
    /// Requests served at once by one process; more are answered `503 overloaded`.
    pub const MAX_IN_FLIGHT: usize = 1024;
    /// Time until a request's response head: the provider timeout plus room
    /// for the database work around it.
    pub const REQUEST_TIMEOUT_SECS: u64 = LLM_TIMEOUT_SECS + 10;
    /// How long a stored idempotent response is replayed (24 h).
    pub const IDEMPOTENCY_TTL_SECS: u64 = 24 * 60 * 60;
    /// After SIGTERM: readiness fails at once, new connections are still
    /// accepted this long (while the endpoints are being withdrawn).
    pub const SHUTDOWN_DRAIN_SECS: u64 = 5;
    /// After the drain: how long in-flight requests get to finish. At least
    /// the request timeout, so a turn that started before SIGTERM completes.
    pub const SHUTDOWN_GRACE_SECS: u64 = REQUEST_TIMEOUT_SECS + 5;
    /// Seconds the process may need after the grace period to close
    /// connections, flush traces and exit.
    pub const SHUTDOWN_EXIT_MARGIN_SECS: u64 = 5;

    /// The preStop pause of a chat pod: while Kubernetes withdraws the pod's
    /// endpoints the pod keeps serving as usual; SIGTERM comes after it.
    pub const fn prestop_pause_secs(drain_secs: u64) -> u64 {
        drain_secs
    }

    /// The pod's `terminationGracePeriodSeconds` for the given settings: the
    /// preStop pause, then (after SIGTERM) the drain, the grace for in-flight
    /// requests and a margin to exit. Kubernetes counts the preStop hook
    /// against this period, so every part must fit in it.
    pub const fn termination_grace_period_secs(drain_secs: u64, grace_secs: u64) -> u64 {
        prestop_pause_secs(drain_secs) + drain_secs + grace_secs + SHUTDOWN_EXIT_MARGIN_SECS
    }

    // The default provider timeout fits inside a request, and a request inside
    // the shutdown grace period.
    const _: () = assert!(LLM_TIMEOUT_SECS < REQUEST_TIMEOUT_SECS);
    const _: () = assert!(REQUEST_TIMEOUT_SECS <= SHUTDOWN_GRACE_SECS);
}

/// The provider detail of the chat API's `/readyz` body: the result of a
/// cheap, rate-limited probe of the provider's endpoint and credentials, made
/// by the chat API itself. The controller reads it from the chat pods to set
/// the ChatBackend's `ProviderReady` condition.
pub mod readiness {
    /// Field of the `/readyz` JSON body holding the provider detail object.
    pub const PROVIDER_FIELD: &str = "provider";
    /// Fields of the provider detail object.
    pub const STATE: &str = "state";
    pub const MESSAGE: &str = "message";
    /// RFC 3339 time of the probe.
    pub const CHECKED_AT: &str = "checkedAt";
    /// Values of [`STATE`].
    pub mod state {
        /// The endpoint answered and accepted the credentials.
        pub const OK: &str = "ok";
        /// The endpoint rejected the credentials (401/403).
        pub const UNAUTHORIZED: &str = "unauthorized";
        /// The endpoint could not be reached or answered with an error.
        pub const UNREACHABLE: &str = "unreachable";
        /// Not probed yet.
        pub const UNKNOWN: &str = "unknown";
    }
    /// Shortest interval between two probes of the provider by one chat API process.
    pub const PROBE_INTERVAL_SECS: u64 = 60;
}

/// What `chat-api migrate` reports when it ends: one JSON object written to
/// the container's termination message (`/dev/termination-log`), which the
/// controller reads from the migration Job's pod.
pub mod migration_report {
    /// Where Kubernetes reads the termination message from (its default path).
    pub const TERMINATION_MESSAGE_PATH: &str = "/dev/termination-log";
    /// The newest migration compiled into the binary (integer).
    pub const MIGRATIONS_VERSION: &str = "migrationsVersion";
    /// The newest migration the database reports as applied after the run (integer).
    pub const SCHEMA_VERSION: &str = "schemaVersion";
    /// Why the run failed (no secrets), when it failed.
    pub const ERROR: &str = "error";
    /// `chat-api migrate --print-version`: prints the binary's migrations version and exits.
    pub const PRINT_VERSION_FLAG: &str = "--print-version";
}

/// Labels of the container images.
pub mod image_labels {
    /// The newest migration compiled into the chat API image (set by the Dockerfile).
    pub const MIGRATIONS_VERSION: &str = "dev.colloquy.migrations-version";
}

/// Values of `TITLES`.
pub mod titles {
    /// The first user message, cut to 100 characters (the seed's behaviour).
    pub const FIRST_MESSAGE: &str = "first-message";
    /// After the first turn, a short title generated by the provider.
    pub const PROVIDER: &str = "provider";
    pub const ALL: &[&str] = &[FIRST_MESSAGE, PROVIDER];
}

/// Values of `LLM_HTTP_VERSION`.
pub mod http_version {
    /// HTTP/2 where TLS negotiates it (ALPN), HTTP/1.1 otherwise (plain `http://`).
    pub const AUTO: &str = "auto";
    /// HTTP/1.1 only: one connection per request in flight.
    pub const HTTP1: &str = "http1";
    /// HTTP/2 only, also over plain `http://` (prior knowledge, h2c).
    pub const HTTP2: &str = "http2";
    pub const ALL: &[&str] = &[AUTO, HTTP1, HTTP2];
}

/// Values of `LOG_FORMAT`.
pub mod log_format {
    pub const JSON: &str = "json";
    pub const TEXT: &str = "text";
}

/// The database schema version: the number of the newest file in
/// `migrations/` (derived at build time, never typed by hand).
pub const MIGRATIONS_VERSION: &str = env!("COLLOQUY_MIGRATIONS_VERSION");

/// Facts about the container images.
pub mod image {
    /// The non-root user (and group) the runtime images run as: distroless `nonroot`.
    pub const RUN_AS_USER: i64 = 65532;
}

/// HTTP paths probes and scrapers use.
pub mod paths {
    pub const LIVEZ: &str = "/livez";
    pub const READYZ: &str = "/readyz";
    pub const HEALTH: &str = "/health";
    /// Served on `METRICS_PORT`.
    pub const METRICS: &str = "/metrics";
}

/// `chat-api` subcommands.
pub mod commands {
    pub const SERVE: &str = "serve";
    pub const MIGRATE: &str = "migrate";
}

/// HTTP headers of the API.
pub mod headers {
    pub const API_KEY: &str = "x-api-key";
    pub const REQUEST_ID: &str = "x-request-id";
    /// Makes a chat turn idempotent (per caller).
    pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
    /// `true` on a response replayed for a repeated `Idempotency-Key`.
    pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
    /// On `/v1`, with the internal API key as the Bearer token: the end user
    /// the calling server acts for (the SDKs' `default_headers`).
    pub const CLIENT_USER_ID: &str = "x-client-user-id";
}

/// Values of the on/off settings (`SUMMARIES`, `API_DOCS`).
pub mod switch {
    pub const ON: &str = "on";
    pub const OFF: &str = "off";
}

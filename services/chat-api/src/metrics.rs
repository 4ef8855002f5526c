//! Prometheus metrics of the chat API, served on `METRICS_PORT`. Metric names
//! live here only. Labels are bounded: route templates, never raw paths, user
//! or conversation ids.

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use sqlx::PgPool;

use crate::llm::Usage;

/// Metric names. Provider calls are counted once, by the GenAI histograms
/// (their `_count` is the number of calls; `error_type` is empty on success).
pub mod names {
    pub const HTTP_REQUESTS: &str = "colloquy_http_requests_total";
    pub const HTTP_DURATION: &str = "colloquy_http_request_duration_seconds";
    /// OpenTelemetry GenAI `gen_ai.client.operation.duration`, Prometheus style.
    pub const GENAI_OPERATION_DURATION: &str = "gen_ai_client_operation_duration_seconds";
    /// OpenTelemetry GenAI `gen_ai.client.token.usage`, Prometheus style.
    pub const GENAI_TOKEN_USAGE: &str = "gen_ai_client_token_usage";
    /// OpenTelemetry GenAI `gen_ai.server.time_to_first_token`, Prometheus style:
    /// from the provider call's start to its first streamed text.
    pub const GENAI_TIME_TO_FIRST_TOKEN: &str = "gen_ai_server_time_to_first_token_seconds";
    /// Streamed turns by how they ended (`completed`, `failed`, `cancelled` by the client).
    pub const STREAM_DURATION: &str = "colloquy_chat_stream_duration_seconds";
    pub const CONVERSATIONS_CREATED: &str = "colloquy_conversations_created_total";
    pub const TURNS_STORED: &str = "colloquy_turns_stored_total";
    pub const DB_POOL_CONNECTIONS: &str = "colloquy_db_pool_connections";
    pub const DB_POOL_MAX: &str = "colloquy_db_pool_max_connections";
    pub const DB_QUERY_DURATION: &str = "colloquy_db_query_duration_seconds";
    pub const DB_ERRORS: &str = "colloquy_db_errors_total";
    pub const BUILD_INFO: &str = "colloquy_build_info";
    /// Requests refused before their handler ran, by reason.
    pub const HTTP_REJECTED: &str = "colloquy_http_rejected_total";
    /// Requests carrying an `Idempotency-Key`, by outcome.
    pub const IDEMPOTENCY_REQUESTS: &str = "colloquy_idempotency_requests_total";
    /// Circuit breaker state per provider endpoint: 0 closed, 1 open, 2 half-open.
    pub const PROVIDER_BREAKER_STATE: &str = "colloquy_provider_breaker_state";
    /// Provider call attempts retried, by reason (`rate_limited`, `server_error`, `connection`).
    pub const PROVIDER_RETRIES: &str = "colloquy_provider_retries_total";
    /// Calls the fallback provider answered in the primary's place, by reason
    /// (`circuit_open`, `retries_exhausted`, `quota_exhausted`).
    pub const PROVIDER_FALLBACKS: &str = "colloquy_provider_fallbacks_total";
    /// Background work (summaries, generated titles) by kind and outcome.
    pub const BACKGROUND_TASKS: &str = "colloquy_background_tasks_total";
    /// Clients of the provider connection set (each one connection per provider host over HTTP/2).
    pub const PROVIDER_CLIENTS: &str = "colloquy_provider_clients";
    /// Provider calls in flight, streamed answers included until they end.
    pub const PROVIDER_CALLS_IN_FLIGHT: &str = "colloquy_provider_calls_in_flight";
}

/// The `outcome` label of [`names::IDEMPOTENCY_REQUESTS`].
pub mod idempotency_outcome {
    /// The response was recorded with its turn: a repeat replays it.
    pub const STORED: &str = "stored";
    /// A repeat got the recorded response.
    pub const REPLAYED: &str = "replayed";
    /// The key came again with another request body (`422`).
    pub const REUSED: &str = "reused";
    /// The key came again while its first request ran (`409`).
    pub const IN_PROGRESS: &str = "in_progress";
    /// A streamed answer longer than the recording limit: its turn is stored,
    /// its key freed (nothing to replay).
    pub const TOO_LARGE: &str = "too_large";
}

/// Latency buckets in seconds, from 1 ms to 2 min (LLM calls are slow).
const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];
/// Time-to-first-token buckets (OpenTelemetry's advice for gen_ai.server.time_to_first_token).
const TTFT_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0];
/// Stream durations: answers take seconds to minutes.
const STREAM_BUCKETS: &[f64] = &[0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0];
/// Labels of the GenAI metrics (attribute names of the semantic conventions, Prometheus style).
const OPERATION: &str = "gen_ai_operation_name";
const PROVIDER: &str = "gen_ai_provider_name";
const REQUEST_MODEL: &str = "gen_ai_request_model";
/// The only GenAI operation we perform.
const CHAT: &str = "chat";

/// How a streamed turn ended (the `outcome` label of [`names::STREAM_DURATION`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamOutcome {
    /// `done` was sent: the turn is stored.
    Completed,
    /// `error` was sent.
    Failed,
    /// The client went away first.
    Cancelled,
}

impl StreamOutcome {
    fn label(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Token-count buckets (OpenTelemetry's advice for gen_ai.client.token.usage).
const TOKEN_BUCKETS: &[f64] = &[1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0];

pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    genai_duration: HistogramVec,
    genai_tokens: HistogramVec,
    genai_ttft: HistogramVec,
    stream_duration: HistogramVec,
    pub conversations_created: IntCounter,
    pub turns_stored: IntCounter,
    db_pool: IntGaugeVec,
    db_pool_max: IntGauge,
    db_duration: HistogramVec,
    db_errors: IntCounterVec,
    http_rejected: IntCounterVec,
    idempotency: IntCounterVec,
    breaker_state: IntGaugeVec,
    provider_retries: IntCounterVec,
    provider_fallbacks: IntCounterVec,
    background_tasks: IntCounterVec,
    provider_clients: IntGauge,
    provider_in_flight: IntGauge,
    /// The provider connection set whose gauges [`Metrics::render`] refreshes.
    connections: std::sync::OnceLock<crate::llm::Connections>,
}

fn histogram(name: &str, help: &str, buckets: &[f64], labels: &[&str]) -> HistogramVec {
    HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels).expect("valid histogram")
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let m = Self {
            http_requests: IntCounterVec::new(
                Opts::new(names::HTTP_REQUESTS, "HTTP requests by route template, method and status."),
                &["route", "method", "status"],
            )
            .expect("valid counter"),
            http_duration: histogram(
                names::HTTP_DURATION,
                "HTTP request latency by route template and method.",
                LATENCY_BUCKETS,
                &["route", "method"],
            ),
            genai_duration: histogram(
                names::GENAI_OPERATION_DURATION,
                "Duration of LLM provider calls (gen_ai.client.operation.duration).",
                LATENCY_BUCKETS,
                &[OPERATION, PROVIDER, REQUEST_MODEL, "error_type"],
            ),
            genai_tokens: histogram(
                names::GENAI_TOKEN_USAGE,
                "Tokens per LLM call by type, as the provider reported them (gen_ai.client.token.usage).",
                TOKEN_BUCKETS,
                &[OPERATION, PROVIDER, REQUEST_MODEL, "gen_ai_token_type"],
            ),
            genai_ttft: histogram(
                names::GENAI_TIME_TO_FIRST_TOKEN,
                "Time from the start of a streamed LLM call to its first text (gen_ai.server.time_to_first_token).",
                TTFT_BUCKETS,
                &[OPERATION, PROVIDER, REQUEST_MODEL],
            ),
            stream_duration: histogram(
                names::STREAM_DURATION,
                "Duration of streamed chat turns by outcome (completed, failed, cancelled by the client).",
                STREAM_BUCKETS,
                &["outcome"],
            ),
            conversations_created: IntCounter::new(names::CONVERSATIONS_CREATED, "Conversations created.")
                .expect("valid counter"),
            turns_stored: IntCounter::new(names::TURNS_STORED, "Chat turns stored (user + assistant message).")
                .expect("valid counter"),
            db_pool: IntGaugeVec::new(
                Opts::new(names::DB_POOL_CONNECTIONS, "Database pool connections by state (idle, in_use)."),
                &["state"],
            )
            .expect("valid gauge"),
            db_pool_max: IntGauge::new(names::DB_POOL_MAX, "Configured maximum database pool size.")
                .expect("valid gauge"),
            provider_clients: IntGauge::new(
                names::PROVIDER_CLIENTS,
                "Clients of the provider connection set (over HTTP/2, one connection per provider host each).",
            )
            .expect("valid gauge"),
            provider_in_flight: IntGauge::new(
                names::PROVIDER_CALLS_IN_FLIGHT,
                "Provider calls in flight (a streamed answer until it ends).",
            )
            .expect("valid gauge"),
            connections: std::sync::OnceLock::new(),
            db_duration: histogram(
                names::DB_QUERY_DURATION,
                "Database operation latency by operation.",
                LATENCY_BUCKETS,
                &["operation"],
            ),
            db_errors: IntCounterVec::new(
                Opts::new(names::DB_ERRORS, "Failed database operations by operation."),
                &["operation"],
            )
            .expect("valid counter"),
            http_rejected: IntCounterVec::new(
                Opts::new(
                    names::HTTP_REJECTED,
                    "Requests refused before their handler ran, by reason (overloaded, request_timeout, \
                     rate_limited_requests, rate_limited_tokens).",
                ),
                &["reason"],
            )
            .expect("valid counter"),
            idempotency: IntCounterVec::new(
                Opts::new(
                    names::IDEMPOTENCY_REQUESTS,
                    "Requests with an Idempotency-Key by outcome (stored, replayed, reused, in_progress, too_large).",
                ),
                &["outcome"],
            )
            .expect("valid counter"),
            breaker_state: IntGaugeVec::new(
                Opts::new(
                    names::PROVIDER_BREAKER_STATE,
                    "Circuit breaker of each provider endpoint: 0 closed, 1 open, 2 half-open.",
                ),
                &["provider", "endpoint"],
            )
            .expect("valid gauge"),
            provider_retries: IntCounterVec::new(
                Opts::new(names::PROVIDER_RETRIES, "Provider call attempts retried, by endpoint and reason."),
                &["provider", "endpoint", "reason"],
            )
            .expect("valid counter"),
            provider_fallbacks: IntCounterVec::new(
                Opts::new(names::PROVIDER_FALLBACKS, "Calls handed to the fallback provider, by reason."),
                &["provider", "fallback_provider", "reason"],
            )
            .expect("valid counter"),
            background_tasks: IntCounterVec::new(
                Opts::new(
                    names::BACKGROUND_TASKS,
                    "Background task runs (summary, title) by outcome (done, skipped, failed, abandoned).",
                ),
                &["kind", "outcome"],
            )
            .expect("valid counter"),
            registry,
        };
        let build_info =
            IntGaugeVec::new(Opts::new(names::BUILD_INFO, "Build information; always 1."), &["version", "git_sha"])
                .expect("valid gauge");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), option_env!("COLLOQUY_GIT_SHA").unwrap_or("unknown")])
            .set(1);
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(m.http_requests.clone()),
            Box::new(m.http_duration.clone()),
            Box::new(m.genai_duration.clone()),
            Box::new(m.genai_tokens.clone()),
            Box::new(m.genai_ttft.clone()),
            Box::new(m.stream_duration.clone()),
            Box::new(m.conversations_created.clone()),
            Box::new(m.turns_stored.clone()),
            Box::new(m.db_pool.clone()),
            Box::new(m.db_pool_max.clone()),
            Box::new(m.db_duration.clone()),
            Box::new(m.db_errors.clone()),
            Box::new(m.http_rejected.clone()),
            Box::new(m.idempotency.clone()),
            Box::new(m.breaker_state.clone()),
            Box::new(m.provider_retries.clone()),
            Box::new(m.provider_fallbacks.clone()),
            Box::new(m.background_tasks.clone()),
            Box::new(m.provider_clients.clone()),
            Box::new(m.provider_in_flight.clone()),
            Box::new(build_info),
        ];
        for c in collectors {
            m.registry.register(c).expect("metric names are unique");
        }
        m
    }

    /// Records one provider call: `provider` is the `gen_ai.provider.name`
    /// value, `error_type` `None` on success, `usage` as the provider reported it.
    pub fn observe_provider_call(
        &self,
        provider: &str,
        model: &str,
        error_type: Option<&str>,
        elapsed: Duration,
        usage: Option<Usage>,
    ) {
        let error_type = error_type.unwrap_or("");
        self.genai_duration.with_label_values(&[CHAT, provider, model, error_type]).observe(elapsed.as_secs_f64());
        if let Some(u) = usage {
            self.genai_tokens.with_label_values(&[CHAT, provider, model, "input"]).observe(u.prompt_tokens as f64);
            self.genai_tokens.with_label_values(&[CHAT, provider, model, "output"]).observe(u.completion_tokens as f64);
        }
    }

    /// Sets a provider endpoint's breaker state (`provider` is the `LLM_PROVIDER` name).
    pub fn set_breaker_state(&self, provider: &str, endpoint: &str, state: i64) {
        self.breaker_state.with_label_values(&[provider, endpoint]).set(state);
    }

    /// Counts one retried provider call attempt.
    pub fn count_provider_retry(&self, provider: &str, endpoint: &str, reason: &str) {
        self.provider_retries.with_label_values(&[provider, endpoint, reason]).inc();
    }

    /// Counts one call handed to the fallback provider.
    pub fn count_provider_fallback(&self, provider: &str, fallback: &str, reason: &str) {
        self.provider_fallbacks.with_label_values(&[provider, fallback, reason]).inc();
    }

    /// Records a streamed call's time to its first text.
    pub fn observe_time_to_first_token(&self, provider: &str, model: &str, elapsed: Duration) {
        self.genai_ttft.with_label_values(&[CHAT, provider, model]).observe(elapsed.as_secs_f64());
    }

    /// Records a streamed turn's duration and outcome.
    pub fn observe_stream(&self, outcome: StreamOutcome, elapsed: Duration) {
        self.stream_duration.with_label_values(&[outcome.label()]).observe(elapsed.as_secs_f64());
    }

    /// Records one HTTP request; `route` is the template (or `unmatched`).
    pub fn observe_http(&self, route: &str, method: &str, status: &str, elapsed: Duration) {
        self.http_requests.with_label_values(&[route, method, status]).inc();
        self.http_duration.with_label_values(&[route, method]).observe(elapsed.as_secs_f64());
    }

    /// Records one database operation.
    pub fn observe_db(&self, operation: &str, ok: bool, elapsed: Duration) {
        self.db_duration.with_label_values(&[operation]).observe(elapsed.as_secs_f64());
        if !ok {
            self.db_errors.with_label_values(&[operation]).inc();
        }
    }

    /// Counts a request refused before its handler ran.
    pub fn rejected(&self, reason: &str) {
        self.http_rejected.with_label_values(&[reason]).inc();
    }

    /// Counts a request with an `Idempotency-Key` by outcome.
    pub fn idempotency(&self, outcome: &str) {
        self.idempotency.with_label_values(&[outcome]).inc();
    }

    /// Records the end of one background task run.
    pub fn observe_background_task(&self, kind: &str, outcome: &str) {
        self.background_tasks.with_label_values(&[kind, outcome]).inc();
    }

    /// Reports on `connections` (the provider calls' clients) from now on.
    pub fn watch_connections(&self, connections: crate::llm::Connections) {
        let _ = self.connections.set(connections);
    }

    /// The text exposition, refreshing pool gauges first.
    pub fn render(&self, pool: &PgPool) -> String {
        if let Some(c) = self.connections.get() {
            let in_flight = c.in_flight();
            self.provider_clients.set(i64::try_from(in_flight.len()).unwrap_or(i64::MAX));
            self.provider_in_flight.set(i64::try_from(in_flight.iter().sum::<usize>()).unwrap_or(i64::MAX));
        }
        let size = i64::from(pool.size());
        let idle = i64::try_from(pool.num_idle()).unwrap_or(i64::MAX);
        self.db_pool.with_label_values(&["idle"]).set(idle);
        self.db_pool.with_label_values(&["in_use"]).set((size - idle).max(0));
        self.db_pool_max.set(i64::from(pool.options().get_max_connections()));
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf).expect("text encoding cannot fail");
        String::from_utf8(buf).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

//! Prometheus metrics of the chat API, served on `METRICS_PORT`. Metric names
//! live here only. Labels are bounded: route templates, never raw paths, user
//! or conversation ids.

use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use sqlx::PgPool;

use crate::llm::{Completion, ProviderError};

pub mod names {
    pub const HTTP_REQUESTS: &str = "colloquy_http_requests_total";
    pub const HTTP_DURATION: &str = "colloquy_http_request_duration_seconds";
    /// OpenTelemetry GenAI `gen_ai.client.operation.duration`, Prometheus style.
    pub const GENAI_OPERATION_DURATION: &str = "gen_ai_client_operation_duration_seconds";
    /// OpenTelemetry GenAI `gen_ai.client.token.usage`, Prometheus style.
    pub const GENAI_TOKEN_USAGE: &str = "gen_ai_client_token_usage";
    pub const LLM_REQUESTS: &str = "colloquy_llm_requests_total";
    pub const LLM_TOKENS: &str = "colloquy_llm_tokens_total";
    pub const CONVERSATIONS_CREATED: &str = "colloquy_conversations_created_total";
    pub const TURNS_STORED: &str = "colloquy_turns_stored_total";
    pub const DB_POOL_CONNECTIONS: &str = "colloquy_db_pool_connections";
    pub const DB_POOL_MAX: &str = "colloquy_db_pool_max_connections";
    pub const DB_QUERY_DURATION: &str = "colloquy_db_query_duration_seconds";
    pub const DB_ERRORS: &str = "colloquy_db_errors_total";
    pub const BUILD_INFO: &str = "colloquy_build_info";
    /// Background work (summaries, generated titles) by kind and outcome.
    pub const BACKGROUND_TASKS: &str = "colloquy_background_tasks_total";
}

/// Latency buckets in seconds, from 1 ms to 2 min (LLM calls are slow).
const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0];
/// Token-count buckets (OpenTelemetry's advice for gen_ai.client.token.usage).
const TOKEN_BUCKETS: &[f64] = &[1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0];

pub struct Metrics {
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    genai_duration: HistogramVec,
    genai_tokens: HistogramVec,
    llm_requests: IntCounterVec,
    llm_tokens: IntCounterVec,
    pub conversations_created: IntCounter,
    pub turns_stored: IntCounter,
    db_pool: IntGaugeVec,
    db_pool_max: IntGauge,
    db_duration: HistogramVec,
    db_errors: IntCounterVec,
    background_tasks: IntCounterVec,
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
                &["gen_ai_system", "gen_ai_request_model", "gen_ai_operation_name", "outcome"],
            ),
            genai_tokens: histogram(
                names::GENAI_TOKEN_USAGE,
                "Tokens per LLM call by type (gen_ai.client.token.usage).",
                TOKEN_BUCKETS,
                &["gen_ai_system", "gen_ai_request_model", "gen_ai_token_type"],
            ),
            llm_requests: IntCounterVec::new(
                Opts::new(names::LLM_REQUESTS, "LLM provider calls by provider, model and outcome."),
                &["provider", "model", "outcome"],
            )
            .expect("valid counter"),
            llm_tokens: IntCounterVec::new(
                Opts::new(names::LLM_TOKENS, "Tokens used by provider, model and type (input/output)."),
                &["provider", "model", "type"],
            )
            .expect("valid counter"),
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
            Box::new(m.llm_requests.clone()),
            Box::new(m.llm_tokens.clone()),
            Box::new(m.conversations_created.clone()),
            Box::new(m.turns_stored.clone()),
            Box::new(m.db_pool.clone()),
            Box::new(m.db_pool_max.clone()),
            Box::new(m.db_duration.clone()),
            Box::new(m.db_errors.clone()),
            Box::new(m.background_tasks.clone()),
            Box::new(build_info),
        ];
        for c in collectors {
            m.registry.register(c).expect("metric names are unique");
        }
        m
    }

    /// Records one provider call.
    pub fn observe_provider_call(
        &self,
        provider: &str,
        model: &str,
        result: &Result<Completion, ProviderError>,
        elapsed: Duration,
    ) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        self.llm_requests.with_label_values(&[provider, model, outcome]).inc();
        self.genai_duration.with_label_values(&[provider, model, "chat", outcome]).observe(elapsed.as_secs_f64());
        if let Ok(c) = result {
            let input = c.usage.prompt_tokens;
            let output = c.usage.completion_tokens;
            self.llm_tokens.with_label_values(&[provider, model, "input"]).inc_by(input);
            self.llm_tokens.with_label_values(&[provider, model, "output"]).inc_by(output);
            self.genai_tokens.with_label_values(&[provider, model, "input"]).observe(input as f64);
            self.genai_tokens.with_label_values(&[provider, model, "output"]).observe(output as f64);
        }
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

    /// Records the end of one background task run.
    pub fn observe_background_task(&self, kind: &str, outcome: &str) {
        self.background_tasks.with_label_values(&[kind, outcome]).inc();
    }

    /// The text exposition, refreshing pool gauges first.
    pub fn render(&self, pool: &PgPool) -> String {
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

//! Logs and traces.
//!
//! - Logs: JSON or text lines (`LOG_FORMAT`), filtered by `RUST_LOG`, one
//!   line per request with its id, route, status and latency.
//! - Traces: OpenTelemetry over OTLP/HTTP (JSON encoding) when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set; off
//!   otherwise. `OTEL_SERVICE_NAME` names the service, `OTEL_TRACES_SAMPLER`
//!   (+ `_ARG`) picks the sampler. The caller's W3C `traceparent` is honoured.
//!
//! Span attributes never include message text, keys or tokens.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use colloquy_contract::env as names;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::config::{ConfigError, EnvSource, LogFormat, check_url};
use crate::request_id;

const DEFAULT_FILTER: &str = "info,sqlx=warn";
pub const DEFAULT_SERVICE_NAME: &str = "colloquy-chat-api";
/// The instrumentation scope of our spans.
const TRACER_NAME: &str = "colloquy-chat-api";

/// Keeps the trace exporter alive; flushes it on shutdown.
#[derive(Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    pub fn tracing_enabled(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            eprintln!("trace exporter shutdown: {e}");
        }
    }
}

/// Where traces go and how they are sampled, from the standard OTel variables.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    /// Full URL of the OTLP/HTTP traces endpoint (`.../v1/traces`).
    pub endpoint: String,
    pub service_name: String,
    pub sampler: SamplerChoice,
}

/// The sampler named by `OTEL_TRACES_SAMPLER`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerChoice {
    AlwaysOn,
    AlwaysOff,
    Ratio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedRatio(f64),
}

impl SamplerChoice {
    fn sampler(self) -> Sampler {
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::Ratio(r) => Sampler::TraceIdRatioBased(r),
            Self::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            Self::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            Self::ParentBasedRatio(r) => Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r))),
        }
    }
}

impl TraceConfig {
    /// `None` when no OTLP endpoint is configured (tracing off).
    pub fn from_env(env: &dyn EnvSource) -> Result<Option<Self>, ConfigError> {
        let get = |name: &str| env.get(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let endpoint = match (get(names::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), get(names::OTEL_EXPORTER_OTLP_ENDPOINT)) {
            (Some(full), _) => check_url(names::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, &full)?,
            (None, Some(base)) => format!("{}/v1/traces", check_url(names::OTEL_EXPORTER_OTLP_ENDPOINT, &base)?),
            (None, None) => return Ok(None),
        };
        let ratio =
            || -> Result<f64, ConfigError> {
                match get(names::OTEL_TRACES_SAMPLER_ARG) {
                    None => Ok(1.0),
                    Some(raw) => raw.parse::<f64>().ok().filter(|r| (0.0..=1.0).contains(r)).ok_or_else(|| {
                        ConfigError::invalid(names::OTEL_TRACES_SAMPLER_ARG, "must be a ratio from 0 to 1")
                    }),
                }
            };
        let sampler = match get(names::OTEL_TRACES_SAMPLER).as_deref() {
            None | Some("parentbased_always_on") => SamplerChoice::ParentBasedAlwaysOn,
            Some("always_on") => SamplerChoice::AlwaysOn,
            Some("always_off") => SamplerChoice::AlwaysOff,
            Some("traceidratio") => SamplerChoice::Ratio(ratio()?),
            Some("parentbased_always_off") => SamplerChoice::ParentBasedAlwaysOff,
            Some("parentbased_traceidratio") => SamplerChoice::ParentBasedRatio(ratio()?),
            Some(other) => {
                return Err(ConfigError::invalid(
                    names::OTEL_TRACES_SAMPLER,
                    format!(
                        "{other:?} is not a supported sampler (always_on, always_off, traceidratio, parentbased_*)"
                    ),
                ));
            }
        };
        Ok(Some(Self {
            endpoint,
            service_name: get(names::OTEL_SERVICE_NAME).unwrap_or_else(|| DEFAULT_SERVICE_NAME.to_owned()),
            sampler,
        }))
    }
}

/// A tracer provider exporting to `config.endpoint` in batches.
pub fn tracer_provider(config: &TraceConfig) -> Result<SdkTracerProvider, ConfigError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(config.endpoint.clone())
        .build()
        .map_err(|e| ConfigError::invalid(names::OTEL_EXPORTER_OTLP_ENDPOINT, e.to_string()))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(config.sampler.sampler())
        .with_resource(Resource::builder().with_service_name(config.service_name.clone()).build())
        .build())
}

/// The tracing layer that turns our spans into OpenTelemetry spans.
pub fn otel_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span> + Send + Sync,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer(TRACER_NAME))
}

/// Installs the global subscriber (logs, and traces when configured).
pub fn init(format: LogFormat, env: &dyn EnvSource) -> Result<Telemetry, ConfigError> {
    let trace_config = TraceConfig::from_env(env)?;
    let provider = trace_config.as_ref().map(tracer_provider).transpose()?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Json => Box::new(
            tracing_subscriber::fmt::layer().json().flatten_event(true).with_current_span(false).with_target(false),
        ),
        LogFormat::Text => Box::new(tracing_subscriber::fmt::layer().with_target(false)),
    };
    let otel = provider.as_ref().map(otel_layer);
    // Logs follow RUST_LOG; spans for export are not filtered by it.
    let _ = tracing_subscriber::registry().with(fmt.with_filter(filter)).with(otel).try_init();
    Ok(Telemetry { provider })
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct StringInjector(Option<String>);

impl Injector for StringInjector {
    fn set(&mut self, key: &str, value: String) {
        if key == "traceparent" {
            self.0 = Some(value);
        }
    }
}

/// The `traceparent` to send upstream from inside `span`: the span's own
/// context when traces are on, else the caller's header passed through.
pub fn traceparent_for(span: &tracing::Span, incoming: Option<&str>) -> Option<String> {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        let mut injector = StringInjector(None);
        TraceContextPropagator::new().inject_context(&cx, &mut injector);
        injector.0
    } else {
        incoming.map(str::to_owned)
    }
}

/// Middleware: the server span of each request (child of the caller's
/// `traceparent`), and one log line when it ends.
pub async fn trace_request(request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let path = request.uri().path().to_owned();
    let route = route.unwrap_or(path);
    let id = request_id::current().unwrap_or_default();
    let span = tracing::info_span!(
        "http.server.request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
        request_id = %id,
    );
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    if status >= 500 {
        tracing::warn!(request_id = %id, %method, route, status, latency_ms, "request");
    } else {
        tracing::info!(request_id = %id, %method, route, status, latency_ms, "request");
    }
    response
}

//! Logs and traces for every Colloquy binary (chat API and controller).
//!
//! - Logs: JSON or text lines, filtered by `RUST_LOG`.
//! - Traces: OpenTelemetry over OTLP/HTTP (JSON encoding) when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`) is set; off
//!   otherwise. `OTEL_SERVICE_NAME` names the service, `OTEL_TRACES_SAMPLER`
//!   (+ `_ARG`) picks the sampler; W3C trace context is propagated.
//!
//! Configuration comes through a lookup function so callers (and tests)
//! choose the source: the process environment or a map.

use colloquy_contract::env as names;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// A lookup of configuration variables by name.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// A bad telemetry variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryError {
    pub var: &'static str,
    pub message: String,
}

impl std::fmt::Display for TelemetryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is invalid: {}", self.var, self.message)
    }
}

impl std::error::Error for TelemetryError {}

fn invalid(var: &'static str, message: impl Into<String>) -> TelemetryError {
    TelemetryError { var, message: message.into() }
}

/// Keeps the trace exporter alive; flushes it on shutdown.
#[derive(Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
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

fn check_url(var: &'static str, raw: &str) -> Result<String, TelemetryError> {
    match reqwest::Url::parse(raw) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => Ok(raw.trim_end_matches('/').to_owned()),
        _ => Err(invalid(var, "must be an http:// or https:// URL")),
    }
}

impl TraceConfig {
    /// `None` when no OTLP endpoint is configured (tracing off).
    pub fn from_lookup(lookup: Lookup<'_>, default_service_name: &str) -> Result<Option<Self>, TelemetryError> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
        let endpoint = match (get(names::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT), get(names::OTEL_EXPORTER_OTLP_ENDPOINT)) {
            (Some(full), _) => check_url(names::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, &full)?,
            (None, Some(base)) => format!("{}/v1/traces", check_url(names::OTEL_EXPORTER_OTLP_ENDPOINT, &base)?),
            (None, None) => return Ok(None),
        };
        let ratio = || -> Result<f64, TelemetryError> {
            match get(names::OTEL_TRACES_SAMPLER_ARG) {
                None => Ok(1.0),
                Some(raw) => raw
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| invalid(names::OTEL_TRACES_SAMPLER_ARG, "must be a ratio from 0 to 1")),
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
                return Err(invalid(
                    names::OTEL_TRACES_SAMPLER,
                    format!(
                        "{other:?} is not a supported sampler (always_on, always_off, traceidratio, parentbased_*)"
                    ),
                ));
            }
        };
        Ok(Some(Self {
            endpoint,
            service_name: get(names::OTEL_SERVICE_NAME).unwrap_or_else(|| default_service_name.to_owned()),
            sampler,
        }))
    }
}

/// A tracer provider exporting to `config.endpoint` in batches.
pub fn tracer_provider(config: &TraceConfig) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpJson)
        .with_endpoint(config.endpoint.clone())
        .build()
        .map_err(|e| invalid(names::OTEL_EXPORTER_OTLP_ENDPOINT, e.to_string()))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(config.sampler.sampler())
        .with_resource(Resource::builder().with_service_name(config.service_name.clone()).build())
        .build())
}

/// The tracing layer that turns spans into OpenTelemetry spans, as `scope`.
pub fn otel_layer<S>(provider: &SdkTracerProvider, scope: &'static str) -> impl Layer<S> + Send + Sync + 'static
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span> + Send + Sync,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer(scope))
}

/// What a binary tells [`init`] about itself.
pub struct Service {
    /// Default `OTEL_SERVICE_NAME` and instrumentation scope.
    pub name: &'static str,
    /// Log filter when `RUST_LOG` is unset.
    pub default_filter: &'static str,
}

/// Installs the global subscriber: logs, and traces when configured.
pub fn init(service: &Service, format: LogFormat, lookup: Lookup<'_>) -> Result<Telemetry, TelemetryError> {
    let trace_config = TraceConfig::from_lookup(lookup, service.name)?;
    let provider = trace_config.as_ref().map(tracer_provider).transpose()?;
    // RUST_LOG through the lookup too, so a caller that parsed it (the chat
    // API's clap options) decides what the filter is.
    let filter = lookup(names::RUST_LOG)
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(service.default_filter));
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match format {
        LogFormat::Json => Box::new(
            tracing_subscriber::fmt::layer().json().flatten_event(true).with_current_span(false).with_target(false),
        ),
        LogFormat::Text => Box::new(tracing_subscriber::fmt::layer().with_target(false)),
    };
    let otel = provider.as_ref().map(|p| otel_layer(p, service.name));
    // Logs follow RUST_LOG; spans for export are not filtered by it.
    let _ = tracing_subscriber::registry().with(fmt.with_filter(filter)).with(otel).try_init();
    Ok(Telemetry { provider })
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct TraceparentInjector(Option<String>);

impl Injector for TraceparentInjector {
    fn set(&mut self, key: &str, value: String) {
        if key == "traceparent" {
            self.0 = Some(value);
        }
    }
}

/// Makes `span` a child of the caller's W3C `traceparent` in `headers`, if any.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    let parent: Context = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// The `traceparent` to send downstream from inside `span`: the span's own
/// context when traces are on, else `incoming` passed through.
pub fn traceparent_for(span: &tracing::Span, incoming: Option<&str>) -> Option<String> {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        let mut injector = TraceparentInjector(None);
        TraceContextPropagator::new().inject_context(&cx, &mut injector);
        injector.0
    } else {
        incoming.map(str::to_owned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn off_without_an_endpoint() {
        assert_eq!(TraceConfig::from_lookup(&lookup(&[]), "svc").unwrap(), None);
    }

    #[test]
    fn bad_values_name_their_variable() {
        let base = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        let err = |pairs: &[(&str, &str)]| {
            let mut all = vec![base];
            all.extend_from_slice(pairs);
            TraceConfig::from_lookup(&lookup(&all), "svc").unwrap_err().var
        };
        assert_eq!(err(&[("OTEL_TRACES_SAMPLER", "sometimes")]), "OTEL_TRACES_SAMPLER");
        assert_eq!(
            err(&[("OTEL_TRACES_SAMPLER", "traceidratio"), ("OTEL_TRACES_SAMPLER_ARG", "2")]),
            "OTEL_TRACES_SAMPLER_ARG"
        );
        let bad_endpoint = TraceConfig::from_lookup(&lookup(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]), "s");
        assert_eq!(bad_endpoint.unwrap_err().var, "OTEL_EXPORTER_OTLP_ENDPOINT");
    }

    #[test]
    fn full_traces_endpoint_and_ratio_sampler() {
        let config = TraceConfig::from_lookup(
            &lookup(&[
                ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom"),
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ]),
            "default-svc",
        )
        .unwrap()
        .unwrap();
        assert_eq!(config.endpoint, "http://c:4318/custom");
        assert_eq!(config.sampler, SamplerChoice::Ratio(0.25));
        assert_eq!(config.service_name, "default-svc");
    }

    #[test]
    fn no_traceparent_without_tracing_unless_passed_through() {
        let span = tracing::info_span!("x");
        assert_eq!(traceparent_for(&span, None), None);
        assert_eq!(traceparent_for(&span, Some("00-a-b-01")).as_deref(), Some("00-a-b-01"));
    }
}

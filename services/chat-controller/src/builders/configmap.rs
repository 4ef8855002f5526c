//! The chat API's settings from a `ChatBackend`: the ConfigMap with the
//! non-secret ones, and the `secretKeyRef` env entries for the secret ones.
//! Every name comes from `colloquy_contract::env`; [`NOT_FROM_SPEC`] lists the
//! chat API settings no field sets, each with the reason.

use std::collections::BTreeMap;

use colloquy_contract::{defaults, env, http_version, log_format, switch, titles};
use k8s_openapi::api::core::v1::{ConfigMap, EnvVar, EnvVarSource, SecretKeySelector};
use kube::ResourceExt;

use crate::builders::owned_meta;
use crate::crd::{ChatBackend, ChatBackendSpec, HttpVersion, LogFormat, ProviderSpec, SecretKeyRef, Titles};
use crate::error::{Error, Result};
use crate::names::{self, labels};

/// Chat API settings that no `ChatBackend` field sets, and why. Anything can
/// still be passed through `spec.env`.
pub const NOT_FROM_SPEC: &[(&str, &str)] = &[
    (env::HOST, "the controller keeps the chat API on all interfaces (its default), which pods need"),
    (env::RUN_MIGRATIONS, "the controller runs migrations in a Job before rolling the pods; `serve` never migrates"),
    (env::GCP_PROJECT_ID, "Google Secret Manager mode of the seed; on Kubernetes secrets come from Secrets"),
    (env::SECRET_MANAGER_ENDPOINT, "Google Secret Manager mode of the seed; on Kubernetes secrets come from Secrets"),
    (env::GCE_METADATA_HOST, "the node's metadata server (GKE sets it up); only tests point elsewhere"),
];

fn on_off(b: bool) -> &'static str {
    if b { switch::ON } else { switch::OFF }
}

fn json_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// The provider's non-secret settings, each name with `prefix` in front.
fn provider_data(p: &ProviderSpec, prefix: &str, put: &mut dyn FnMut(String, String)) -> Result<()> {
    let name = p.name().ok_or_else(|| Error::InvalidSpec("exactly one provider must be set".into()))?;
    let mut set = |k: &str, v: &str| put(format!("{prefix}{k}"), v.to_string());
    set(env::LLM_PROVIDER, name);
    if let Some(a) = &p.azure_openai {
        set(env::AZURE_OPENAI_ENDPOINT, &a.endpoint);
        set(env::AZURE_OPENAI_DEPLOYMENT_NAME, &a.deployment);
        set(env::AZURE_OPENAI_API_VERSION, &a.api_version);
    }
    if let Some(v) = &p.vertex_ai {
        set(env::VERTEX_PROJECT_ID, &v.project_id);
        set(env::VERTEX_LOCATION, &v.location);
        set(env::VERTEX_MODEL, &v.model);
        if let Some(e) = &v.endpoint {
            set(env::VERTEX_ENDPOINT, e);
        }
    }
    if let Some(o) = &p.openai {
        set(env::OPENAI_BASE_URL, &o.base_url);
        set(env::OPENAI_MODEL, &o.model);
    }
    Ok(())
}

/// Non-secret settings as `env name -> value`. Secret values never go here.
pub fn config_data(spec: &ChatBackendSpec) -> Result<BTreeMap<String, String>> {
    let mut d = BTreeMap::new();
    let mut put = |k: String, v: String| {
        d.insert(k, v);
    };
    provider_data(&spec.provider, "", &mut put)?;
    if let Some(f) = &spec.fallback_provider {
        provider_data(f, env::FALLBACK_PREFIX, &mut put)?;
    }
    let mut put = |k: &str, v: String| {
        d.insert(k.to_string(), v);
    };
    if let Some(cors) = spec.cors.as_ref().filter(|c| !c.allowed_origins.is_empty()) {
        put(env::ALLOWED_ORIGINS, cors.allowed_origins.join(","));
    }
    if let Some(p) = &spec.system_prompt {
        put(env::SYSTEM_PROMPT, p.clone());
    }
    if let Some(j) = spec.jwt() {
        let mut opt = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                put(k, v.clone());
            }
        };
        opt(env::JWT_JWKS_URL, &j.jwks_url);
        opt(env::JWT_AUDIENCE, &j.audience);
        opt(env::JWT_ISSUER, &j.issuer);
    }
    // The chat API logs JSON by default; the controller says so explicitly.
    let log_fmt = spec.telemetry.as_ref().and_then(|t| t.log_format).unwrap_or(LogFormat::Json);
    put(
        env::LOG_FORMAT,
        match log_fmt {
            LogFormat::Json => log_format::JSON,
            LogFormat::Text => log_format::TEXT,
        }
        .to_string(),
    );
    if let Some(t) = &spec.telemetry {
        let mut opt = |k: &str, v: &Option<String>| {
            if let Some(v) = v {
                put(k, v.clone());
            }
        };
        opt(env::RUST_LOG, &t.log_level);
        opt(env::OTEL_EXPORTER_OTLP_ENDPOINT, &t.otlp_endpoint);
        opt(env::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, &t.otlp_traces_endpoint);
        opt(env::OTEL_SERVICE_NAME, &t.service_name);
        if let Some(s) = &t.sampler {
            put(env::OTEL_TRACES_SAMPLER, json_name(s));
        }
        if let Some(r) = t.sampling_ratio {
            put(env::OTEL_TRACES_SAMPLER_ARG, r.to_string());
        }
    }
    let mut num = |k: &str, v: Option<i64>| {
        if let Some(v) = v {
            d.insert(k.to_string(), v.to_string());
        }
    };
    if let Some(l) = &spec.limits {
        num(env::MAX_HISTORY_MESSAGES, l.max_history_messages);
        num(env::MAX_MESSAGE_CHARS, l.max_message_chars);
        num(env::MAX_BODY_BYTES, l.max_body_bytes);
        num(env::LLM_TIMEOUT_SECS, l.llm_timeout_secs);
        num(env::REQUEST_TIMEOUT_SECS, l.request_timeout_secs);
        num(env::MAX_IN_FLIGHT, l.max_in_flight);
        num(env::DATABASE_MAX_CONNECTIONS, l.database_max_connections);
        num(env::DATABASE_MIN_CONNECTIONS, l.database_min_connections);
    }
    if let Some(r) = &spec.rate_limit {
        num(env::RATE_LIMIT_RPM, r.requests_per_minute);
        num(env::RATE_LIMIT_TPM, r.tokens_per_minute);
    }
    if let Some(r) = &spec.resilience {
        num(env::LLM_MAX_RETRIES, r.max_retries);
        if let Some(b) = &r.breaker {
            num(env::LLM_BREAKER_FAILURES, b.failures);
            num(env::LLM_BREAKER_COOLDOWN_SECS, b.cooldown_secs);
        }
    }
    if let Some(i) = &spec.idempotency {
        num(env::IDEMPOTENCY_TTL_SECS, i.ttl_secs);
    }
    if let Some(m) = &spec.migration {
        num(env::MIGRATE_TIMEOUT_SECS, m.timeout_secs);
    }
    if let Some(c) = &spec.conversations {
        num(env::TURN_WAIT_SECS, c.turn_wait_secs);
    }
    if let Some(c) = &spec.provider_connections {
        num(env::LLM_STREAMS_PER_CONNECTION, c.streams_per_connection);
    }
    // Always explicit: the pods' preStop pause and grace period are computed from them.
    let (drain, grace) = spec.shutdown_secs();
    num(env::SHUTDOWN_DRAIN_SECS, Some(drain));
    num(env::SHUTDOWN_GRACE_SECS, Some(grace));
    let mut put = |k: &str, v: &str| {
        d.insert(k.to_string(), v.to_string());
    };
    if let Some(c) = &spec.conversations {
        if let Some(s) = c.summaries {
            put(env::SUMMARIES, on_off(s));
        }
        if let Some(t) = c.titles {
            put(
                env::TITLES,
                match t {
                    Titles::FirstMessage => titles::FIRST_MESSAGE,
                    Titles::Provider => titles::PROVIDER,
                },
            );
        }
    }
    if let Some(v) = spec.provider_connections.as_ref().and_then(|c| c.http_version) {
        put(
            env::LLM_HTTP_VERSION,
            match v {
                HttpVersion::Auto => http_version::AUTO,
                HttpVersion::Http1 => http_version::HTTP1,
                HttpVersion::Http2 => http_version::HTTP2,
            },
        );
    }
    if let Some(a) = spec.api_docs {
        put(env::API_DOCS, on_off(a));
    }
    put(env::PORT, &defaults::PORT.to_string());
    put(env::METRICS_PORT, &defaults::METRICS_PORT.to_string());
    Ok(d)
}

/// The ConfigMap `<name>-config`.
pub fn configmap(cb: &ChatBackend) -> Result<ConfigMap> {
    Ok(ConfigMap {
        metadata: owned_meta(cb, names::configmap_name(&cb.name_any()), labels::COMPONENT_API)?,
        data: Some(config_data(&cb.spec)?),
        ..Default::default()
    })
}

/// `(env name, secret ref)` for every secret setting, in a stable order.
pub fn secret_env_refs(spec: &ChatBackendSpec) -> Vec<(String, &SecretKeyRef)> {
    let mut v = vec![
        (env::DATABASE_URL.to_string(), &spec.database_url_secret_ref),
        (env::INTERNAL_API_KEY.to_string(), &spec.api_key_secret_ref),
    ];
    let provider_key = |p: &ProviderSpec| {
        if p.azure_openai.is_some() { env::AZURE_OPENAI_API_KEY } else { env::OPENAI_API_KEY }
    };
    if let Some(r) = spec.provider.secret_ref() {
        v.push((provider_key(&spec.provider).to_string(), r));
    }
    if let Some(f) = &spec.fallback_provider
        && let Some(r) = f.secret_ref()
    {
        v.push((format!("{}{}", env::FALLBACK_PREFIX, provider_key(f)), r));
    }
    if let Some(r) = spec.jwt().and_then(|j| j.secret_ref.as_ref()) {
        v.push((env::JWT_SECRET.to_string(), r));
    }
    v
}

/// `secretKeyRef` env entries for the secret settings, then the user's extra
/// `spec.env` entries (those with a name the controller sets are left out).
pub fn container_env(spec: &ChatBackendSpec) -> Vec<EnvVar> {
    let mut out: Vec<EnvVar> = secret_env_refs(spec)
        .into_iter()
        .map(|(name, r)| EnvVar {
            name,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: r.name.clone(),
                    key: r.key.clone(),
                    optional: Some(false),
                }),
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    for e in &spec.env {
        if !out.iter().any(|o| o.name == e.name) {
            out.push(e.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::testutil::{backend, full_backends};
    use crate::crd::{AzureOpenAiProvider, OpenAiProvider, ProviderSpec};
    use colloquy_contract::provider;
    use std::collections::BTreeSet;

    #[test]
    fn http_versions_are_spelled_as_the_chat_api_reads_them() {
        for v in [HttpVersion::Auto, HttpVersion::Http1, HttpVersion::Http2] {
            let mut cb = backend();
            cb.spec.provider_connections =
                Some(crate::crd::ProviderConnectionsSpec { http_version: Some(v), ..Default::default() });
            let set = config_data(&cb.spec).unwrap()[env::LLM_HTTP_VERSION].clone();
            assert_eq!(serde_json::to_value(v).unwrap(), set.as_str(), "CRD value and chat API value differ");
            assert!(http_version::ALL.contains(&set.as_str()), "{set}");
        }
    }

    #[test]
    fn mock_config_has_only_non_secret_settings() {
        let cb = backend();
        let cm = configmap(&cb).unwrap();
        assert_eq!(cm.metadata.name.as_deref(), Some("demo-config"));
        let d = cm.data.unwrap();
        assert_eq!(d[env::LLM_PROVIDER], provider::MOCK);
        assert_eq!(d[env::ALLOWED_ORIGINS], "https://a.example,https://b.example");
        assert_eq!(d[env::SYSTEM_PROMPT], "Be brief.");
        assert_eq!(d[env::PORT], "8000");
        assert_eq!(d[env::METRICS_PORT], "9090");
        assert_eq!(d[env::LOG_FORMAT], "json");
        assert_eq!(d[env::SHUTDOWN_DRAIN_SECS], defaults::SHUTDOWN_DRAIN_SECS.to_string());
        assert_eq!(d[env::SHUTDOWN_GRACE_SECS], defaults::SHUTDOWN_GRACE_SECS.to_string());
        for secret in env::SECRETS {
            if *secret == env::AZURE_OPENAI_ENDPOINT || *secret == env::AZURE_OPENAI_DEPLOYMENT_NAME {
                continue;
            }
            assert!(!d.contains_key(*secret), "{secret} must not be in the ConfigMap");
        }
    }

    #[test]
    fn azure_settings_and_secret_env() {
        let mut cb = backend();
        cb.spec.provider = ProviderSpec {
            azure_openai: Some(AzureOpenAiProvider {
                endpoint: "https://x.openai.azure.com".into(),
                deployment: "gpt".into(),
                api_version: "2024-10-21".into(),
                api_key_secret_ref: SecretKeyRef { name: "azure".into(), key: "k".into() },
            }),
            ..Default::default()
        };
        let d = config_data(&cb.spec).unwrap();
        assert_eq!(d[env::LLM_PROVIDER], provider::AZURE_OPENAI);
        assert_eq!(d[env::AZURE_OPENAI_DEPLOYMENT_NAME], "gpt");
        assert!(!d.contains_key(env::AZURE_OPENAI_API_KEY));
        let e = container_env(&cb.spec);
        let names: Vec<_> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, [env::DATABASE_URL, env::INTERNAL_API_KEY, env::AZURE_OPENAI_API_KEY]);
        let sel = e[2].value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!((sel.name.as_str(), sel.key.as_str()), ("azure", "k"));
        assert!(e.iter().all(|e| e.value.is_none()));
    }

    #[test]
    fn openai_key_is_optional() {
        let mut cb = backend();
        cb.spec.provider = ProviderSpec {
            openai: Some(OpenAiProvider {
                base_url: "http://llm:8080/v1".into(),
                model: "llama".into(),
                api_key_secret_ref: None,
            }),
            ..Default::default()
        };
        assert_eq!(container_env(&cb.spec).len(), 2);
        assert_eq!(config_data(&cb.spec).unwrap()[env::OPENAI_MODEL], "llama");
    }

    #[test]
    fn no_provider_is_an_error_not_a_panic() {
        let mut cb = backend();
        cb.spec.provider = ProviderSpec::default();
        assert!(matches!(configmap(&cb), Err(Error::InvalidSpec(_))));
    }

    #[test]
    fn fields_map_to_the_chat_api_names() {
        let cb = &full_backends()[0];
        let d = config_data(&cb.spec).unwrap();
        let want = [
            (env::JWT_JWKS_URL, "https://issuer.example/.well-known/jwks.json"),
            (env::JWT_AUDIENCE, "chat"),
            (env::JWT_ISSUER, "https://issuer.example"),
            (env::RUST_LOG, "debug"),
            (env::LOG_FORMAT, "text"),
            (env::OTEL_EXPORTER_OTLP_ENDPOINT, "http://otel:4318"),
            (env::OTEL_TRACES_SAMPLER, "parentbased_traceidratio"),
            (env::OTEL_TRACES_SAMPLER_ARG, "0.25"),
            (env::MAX_HISTORY_MESSAGES, "20"),
            (env::MAX_BODY_BYTES, "65536"),
            (env::LLM_TIMEOUT_SECS, "30"),
            (env::DATABASE_MAX_CONNECTIONS, "8"),
            (env::DATABASE_MIN_CONNECTIONS, "2"),
            (env::RATE_LIMIT_RPM, "60"),
            (env::LLM_BREAKER_COOLDOWN_SECS, "15"),
            (env::SUMMARIES, "off"),
            (env::TITLES, "provider"),
            (env::TURN_WAIT_SECS, "20"),
            (env::LLM_HTTP_VERSION, "http2"),
            (env::LLM_STREAMS_PER_CONNECTION, "50"),
            (env::API_DOCS, "off"),
            (env::SHUTDOWN_DRAIN_SECS, "3"),
            (env::SHUTDOWN_GRACE_SECS, "40"),
            ("FALLBACK_LLM_PROVIDER", "openai"),
            ("FALLBACK_OPENAI_MODEL", "llama"),
        ];
        for (k, v) in want {
            assert_eq!(d.get(k).map(String::as_str), Some(v), "{k}");
        }
        let secret: BTreeSet<_> = secret_env_refs(&cb.spec).into_iter().map(|(n, _)| n).collect();
        assert!(secret.contains(env::JWT_SECRET));
        assert!(secret.contains("FALLBACK_OPENAI_API_KEY"));
    }

    #[test]
    fn user_env_cannot_shadow_controller_env() {
        let mut cb = backend();
        cb.spec.env = vec![
            EnvVar { name: env::DATABASE_URL.into(), value: Some("postgres://evil".into()), ..Default::default() },
            EnvVar { name: "HTTPS_PROXY".into(), value: Some("http://proxy:3128".into()), ..Default::default() },
        ];
        let e = container_env(&cb.spec);
        assert_eq!(e.iter().filter(|e| e.name == env::DATABASE_URL).count(), 1);
        assert!(e.iter().find(|e| e.name == env::DATABASE_URL).unwrap().value.is_none());
        assert_eq!(e.last().unwrap().value.as_deref(), Some("http://proxy:3128"));
    }
}

//! A cheap probe of the provider's endpoint and credentials, reported in the
//! `/readyz` body (`provider`: see `colloquy_contract::readiness`) so the
//! controller can tell users when their key or endpoint is wrong. It never
//! changes readiness itself (a provider outage must not take the pods out of
//! the Service), and it is rate-limited: at most one probe per
//! `PROBE_INTERVAL_SECS` per process, run in the background, whatever the
//! rate of `/readyz` requests.
//!
//! The probe per provider: Azure OpenAI `GET {endpoint}/openai/models?api-version=`
//! with `api-key`; OpenAI-compatible `GET {base}/models` (Bearer key if any);
//! Vertex AI an access token from the metadata server (the credentials); the
//! mock is always fine.

use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use colloquy_contract::readiness::{self, state};
use serde_json::{Value, json};

use crate::config::ProviderConfig;
use crate::gcp::metadata::MetadataTokenSource;

/// The last probe's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeResult {
    pub state: &'static str,
    pub message: String,
    pub checked_at: Option<String>,
}

impl ProbeResult {
    fn unknown() -> Self {
        Self { state: state::UNKNOWN, message: "not probed yet".into(), checked_at: None }
    }

    /// The `provider` object of the `/readyz` body.
    pub fn to_json(&self) -> Value {
        let mut v = json!({ readiness::STATE: self.state, readiness::MESSAGE: self.message });
        if let Some(t) = &self.checked_at {
            v[readiness::CHECKED_AT] = Value::String(t.clone());
        }
        v
    }
}

struct State {
    last: ProbeResult,
    started: Option<Instant>,
    running: bool,
}

/// Probes one provider, at most once per `interval`.
pub struct ProviderProbe {
    config: ProviderConfig,
    http: reqwest::Client,
    interval: Duration,
    metadata: Option<MetadataTokenSource>,
    state: Mutex<State>,
}

impl ProviderProbe {
    /// The endpoint is asked as model calls ask it (`clients.connections`,
    /// same HTTP version); Vertex's probe is a token from the metadata server
    /// (`clients.http`).
    pub fn new(config: ProviderConfig, clients: &crate::llm::Clients, interval: Duration) -> Arc<Self> {
        let metadata = match &config {
            ProviderConfig::VertexAi { metadata_host, .. } => {
                Some(MetadataTokenSource::new(clients.http.clone(), metadata_host))
            }
            _ => None,
        };
        Arc::new(Self {
            config,
            http: clients.connections.client(),
            interval,
            metadata,
            state: Mutex::new(State { last: ProbeResult::unknown(), started: None, running: false }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The last outcome; starts a probe in the background when the last one is
    /// older than the interval (and none runs).
    pub fn current(self: &Arc<Self>) -> ProbeResult {
        let mut st = self.lock();
        let due = st.started.is_none_or(|s| s.elapsed() >= self.interval);
        if due && !st.running {
            st.running = true;
            st.started = Some(Instant::now());
            let me = self.clone();
            tokio::spawn(async move {
                let result = me.probe().await;
                let mut st = me.lock();
                st.last = result;
                st.running = false;
            });
        }
        st.last.clone()
    }

    /// Runs one probe now.
    pub async fn probe(&self) -> ProbeResult {
        let (s, message) = match self.check().await {
            Ok(()) => (state::OK, "the provider accepted the credentials".to_string()),
            Err(e) => e,
        };
        ProbeResult { state: s, message, checked_at: Some(Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true)) }
    }

    async fn check(&self) -> Result<(), (&'static str, String)> {
        let req = match &self.config {
            ProviderConfig::Mock => return Ok(()),
            ProviderConfig::VertexAi { .. } => {
                let source = self.metadata.as_ref().ok_or((state::UNKNOWN, "no metadata source".to_string()))?;
                return source.token().await.map(|_| ()).map_err(|e| (state::UNAUTHORIZED, e.to_string()));
            }
            ProviderConfig::AzureOpenAi { endpoint, api_version, api_key, .. } => self
                .http
                .get(format!("{}/openai/models", endpoint.trim_end_matches('/')))
                .query(&[("api-version", api_version.as_str())])
                .header("api-key", api_key.expose()),
            ProviderConfig::OpenAi { base_url, api_key, .. } => {
                let r = self.http.get(format!("{}/models", base_url.trim_end_matches('/')));
                match api_key {
                    Some(k) => r.bearer_auth(k.expose()),
                    None => r,
                }
            }
        };
        let res = req
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|e| (state::UNREACHABLE, e.without_url().to_string()))?;
        match res.status().as_u16() {
            200..=299 => Ok(()),
            401 | 403 => Err((state::UNAUTHORIZED, format!("the provider answered {}", res.status()))),
            _ => Err((state::UNREACHABLE, format!("the provider answered {}", res.status()))),
        }
    }
}

/// The probe of this process's provider (set by `serve`), read by `/readyz`.
static INSTALLED: RwLock<Option<Arc<ProviderProbe>>> = RwLock::new(None);

/// Makes `probe` the one `/readyz` reports.
pub fn install(probe: Arc<ProviderProbe>) {
    *INSTALLED.write().unwrap_or_else(|p| p.into_inner()) = Some(probe);
}

/// The `provider` detail for `/readyz`, when a probe is installed.
pub fn readiness_detail() -> Option<Value> {
    let probe = INSTALLED.read().unwrap_or_else(|p| p.into_inner()).clone()?;
    Some(probe.current().to_json())
}

/// The probe interval from the contract.
pub fn interval() -> Duration {
    Duration::from_secs(readiness::PROBE_INTERVAL_SECS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use axum::Router;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;

    async fn upstream() -> String {
        let app = Router::new().route(
            "/v1/models",
            get(|h: HeaderMap| async move {
                match h.get("authorization").and_then(|v| v.to_str().ok()) {
                    Some("Bearer good") => (StatusCode::OK, r#"{"object":"list","data":[]}"#),
                    _ => (StatusCode::UNAUTHORIZED, r#"{"error":{"message":"bad key"}}"#),
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}/v1")
    }

    fn clients() -> crate::llm::Clients {
        crate::llm::Clients {
            connections: crate::llm::Connections::new(Default::default()).unwrap(),
            http: reqwest::Client::new(),
        }
    }

    fn openai(base: &str, key: &str) -> ProviderConfig {
        ProviderConfig::OpenAi { base_url: base.into(), model: "m".into(), api_key: Some(Secret::new(key)) }
    }

    #[tokio::test]
    async fn probe_states() {
        let base = upstream().await;
        let http = clients();
        let ok = ProviderProbe::new(openai(&base, "good"), &http, interval()).probe().await;
        assert_eq!(ok.state, state::OK);
        let bad = ProviderProbe::new(openai(&base, "wrong"), &http, interval()).probe().await;
        assert_eq!(bad.state, state::UNAUTHORIZED);
        assert!(!bad.message.contains("wrong"), "the key must not leak: {}", bad.message);
        let down = ProviderProbe::new(openai("http://127.0.0.1:1/v1", "good"), &http, interval()).probe().await;
        assert_eq!(down.state, state::UNREACHABLE);
        let mock = ProviderProbe::new(ProviderConfig::Mock, &http, interval()).probe().await;
        assert_eq!(mock.state, state::OK);
    }

    #[tokio::test]
    async fn probes_at_most_once_per_interval() {
        let base = upstream().await;
        let probe = ProviderProbe::new(openai(&base, "good"), &clients(), Duration::from_secs(3600));
        assert_eq!(probe.current().state, state::UNKNOWN, "the first call starts a probe and answers at once");
        for _ in 0..50 {
            if probe.current().state == state::OK {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(probe.current().state, state::OK);
        let started = probe.lock().started;
        for _ in 0..10 {
            probe.current();
        }
        assert_eq!(probe.lock().started, started, "no second probe within the interval");
    }
}

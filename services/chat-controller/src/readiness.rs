//! The chat pods' own word on their provider: the provider detail of their
//! `/readyz` body (see `colloquy_contract::readiness`), read from one ready
//! pod. The chat API probes the provider (rate-limited, on its side); the
//! controller never calls a provider itself.

use colloquy_contract::{paths, readiness};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::names;
use crate::status::ProviderObservation;

/// A ready chat pod to ask.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodTarget {
    pub name: String,
    pub ip: String,
    pub port: i32,
}

fn is_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The first ready pod (by name, so the choice is stable) with an IP and an `http` port.
pub fn pick_pod(pods: &[Pod]) -> Option<PodTarget> {
    let mut ready: Vec<&Pod> = pods.iter().filter(|p| is_ready(p)).collect();
    ready.sort_by_key(|p| p.name_any());
    ready.into_iter().find_map(|p| {
        let ip = p.status.as_ref()?.pod_ip.clone()?;
        let port = p
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|port| port.name.as_deref() == Some(names::PORT_HTTP))?
            .container_port;
        Some(PodTarget { name: p.name_any(), ip, port })
    })
}

/// The provider detail of a `/readyz` body.
pub fn parse(body: &serde_json::Value) -> Option<ProviderObservation> {
    let p = body.get(readiness::PROVIDER_FIELD)?;
    let state = p.get(readiness::STATE)?.as_str()?.to_string();
    let message = p.get(readiness::MESSAGE).and_then(|m| m.as_str()).unwrap_or_default().to_string();
    Some(ProviderObservation::Reported { state, message })
}

/// Asks `target` (a 503 still carries the detail).
pub async fn read_provider(http: &reqwest::Client, target: &PodTarget) -> ProviderObservation {
    let host = if target.ip.contains(':') { format!("[{}]", target.ip) } else { target.ip.clone() };
    let url = format!("http://{host}:{}{}", target.port, paths::READYZ);
    let res = match http.get(&url).send().await {
        Ok(r) => r,
        Err(e) => {
            return ProviderObservation::Unknown(format!(
                "could not read the readiness of pod {}: {}",
                target.name,
                e.without_url()
            ));
        }
    };
    match res.json::<serde_json::Value>().await {
        Ok(body) => parse(&body).unwrap_or_else(|| {
            ProviderObservation::Unknown(format!(
                "pod {} does not report on its provider: its image predates the readiness detail",
                target.name
            ))
        }),
        Err(e) => ProviderObservation::Unknown(format!("pod {} answered an unreadable /readyz: {e}", target.name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, ready: bool, ip: Option<&str>) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"containers": [{"name": "chat-api", "ports": [{"name": "http", "containerPort": 8000}]}]},
            "status": {
                "podIP": ip,
                "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn picks_a_ready_pod_with_an_ip() {
        let pods = vec![pod("b", true, Some("10.0.0.2")), pod("a", false, Some("10.0.0.1")), pod("c", true, None)];
        assert_eq!(pick_pod(&pods), Some(PodTarget { name: "b".into(), ip: "10.0.0.2".into(), port: 8000 }));
        assert_eq!(pick_pod(&[pod("a", false, Some("10.0.0.1"))]), None);
    }

    #[test]
    fn parses_the_detail() {
        let body =
            json!({"status": "ready", "database": "ok", "provider": {"state": "unauthorized", "message": "401"}});
        assert_eq!(
            parse(&body),
            Some(ProviderObservation::Reported { state: "unauthorized".into(), message: "401".into() })
        );
        assert_eq!(parse(&json!({"status": "ready"})), None);
    }
}

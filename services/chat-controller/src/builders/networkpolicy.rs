//! The NetworkPolicy in front of the chat API pods: the API port from the
//! ChatBackend's own namespace, the controller's namespace (it reads the
//! pods' readiness detail) and the namespaces `networkPolicy.apiNamespaceSelector`
//! selects; the metrics port from the monitoring namespace. Nothing else.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::builders::{owned_meta, selector_labels};
use crate::crd::ChatBackend;
use crate::error::Result;
use crate::names::{self, labels};

fn namespace_named(name: &str) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(names::NAMESPACE_NAME_LABEL.to_string(), name.to_string())])),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn port(name: &str) -> NetworkPolicyPort {
    NetworkPolicyPort {
        port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".to_string()),
        ..Default::default()
    }
}

/// The NetworkPolicy, or `None` when `networkPolicy.enabled` is false.
/// `controller_namespace`: where the controller runs, when known.
pub fn network_policy(cb: &ChatBackend, controller_namespace: Option<&str>) -> Result<Option<NetworkPolicy>> {
    let np = cb.spec.network_policy.clone().unwrap_or_default();
    if np.enabled == Some(false) {
        return Ok(None);
    }
    // Same namespace: any pod.
    let mut api_from = vec![NetworkPolicyPeer { pod_selector: Some(LabelSelector::default()), ..Default::default() }];
    if let Some(ns) = controller_namespace.filter(|ns| Some(*ns) != cb.namespace().as_deref()) {
        api_from.push(namespace_named(ns));
    }
    if let Some(sel) = np.api_namespace_selector {
        api_from.push(NetworkPolicyPeer { namespace_selector: Some(sel), ..Default::default() });
    }
    let metrics_from = vec![match np.metrics_namespace_selector {
        Some(sel) => NetworkPolicyPeer { namespace_selector: Some(sel), ..Default::default() },
        None => namespace_named(names::DEFAULT_MONITORING_NAMESPACE),
    }];
    Ok(Some(NetworkPolicy {
        metadata: owned_meta(cb, cb.name_any(), labels::COMPONENT_API)?,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector { match_labels: Some(selector_labels(cb)), ..Default::default() }),
            policy_types: Some(vec!["Ingress".to_string()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule { from: Some(api_from), ports: Some(vec![port(names::PORT_HTTP)]) },
                NetworkPolicyIngressRule { from: Some(metrics_from), ports: Some(vec![port(names::PORT_METRICS)]) },
            ]),
            ..Default::default()
        }),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::testutil::{backend, full_backends};

    #[test]
    fn api_port_from_namespaces_metrics_from_monitoring() {
        let np = network_policy(&backend(), Some("colloquy-system")).unwrap().unwrap();
        let spec = np.spec.unwrap();
        let rules = spec.ingress.unwrap();
        let api = &rules[0];
        assert_eq!(api.ports.as_ref().unwrap()[0].port, Some(IntOrString::String("http".into())));
        let from = api.from.as_ref().unwrap();
        assert_eq!(from.len(), 2, "own namespace and the controller's: {from:?}");
        let metrics = &rules[1];
        assert_eq!(metrics.ports.as_ref().unwrap()[0].port, Some(IntOrString::String("metrics".into())));
        let sel = metrics.from.as_ref().unwrap()[0].namespace_selector.as_ref().unwrap();
        assert_eq!(sel.match_labels.as_ref().unwrap()[names::NAMESPACE_NAME_LABEL], "monitoring");

        let full = network_policy(&full_backends()[0], None).unwrap().unwrap();
        let from = full.spec.unwrap().ingress.unwrap()[0].from.clone().unwrap();
        assert_eq!(from[1].namespace_selector.as_ref().unwrap().match_labels.as_ref().unwrap()["team"], "web");

        let mut off = backend();
        off.spec.network_policy = Some(crate::crd::NetworkPolicySpec { enabled: Some(false), ..Default::default() });
        assert!(network_policy(&off, None).unwrap().is_none());
    }
}

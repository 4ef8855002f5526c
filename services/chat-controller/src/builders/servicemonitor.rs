//! Prometheus Operator `ServiceMonitor` (a dynamic object: the CRD may be absent).

use colloquy_contract::paths;
use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

use crate::builders::{owned_meta, selector_labels};
use crate::crd::ChatBackend;
use crate::error::Result;
use crate::names::{self, labels};

pub const GROUP: &str = "monitoring.coreos.com";
pub const VERSION: &str = "v1";
pub const KIND: &str = "ServiceMonitor";
pub const PLURAL: &str = "servicemonitors";

pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, VERSION, KIND), PLURAL)
}

/// The ServiceMonitor scraping the Service's `metrics` port, or `None` when not requested.
pub fn service_monitor(cb: &ChatBackend) -> Result<Option<DynamicObject>> {
    service_monitor_with(cb, &api_resource())
}

/// [`service_monitor`] for the ServiceMonitor API `ar` (the Prometheus
/// Operator's in production; tests use a look-alike group).
pub fn service_monitor_with(cb: &ChatBackend, ar: &ApiResource) -> Result<Option<DynamicObject>> {
    let Some(sm) = cb.spec.monitoring.as_ref().and_then(|m| m.service_monitor.as_ref()).filter(|s| s.enabled) else {
        return Ok(None);
    };
    let mut meta = owned_meta(cb, cb.name_any(), labels::COMPONENT_API)?;
    if let Some(l) = meta.labels.as_mut() {
        l.extend(sm.labels.clone());
    }
    let mut endpoint = serde_json::json!({
        "port": names::PORT_METRICS,
        "path": paths::METRICS,
    });
    if let Some(interval) = &sm.interval {
        endpoint["interval"] = serde_json::Value::String(interval.clone());
    }
    let mut obj = DynamicObject::new(&cb.name_any(), ar);
    obj.metadata = meta;
    obj.data = serde_json::json!({
        "spec": {
            "selector": { "matchLabels": selector_labels(cb) },
            "endpoints": [endpoint],
        }
    });
    Ok(Some(obj))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::testutil::backend;
    use crate::crd::{MonitoringSpec, ServiceMonitorSpec};

    #[test]
    fn service_monitor_when_enabled() {
        let mut cb = backend();
        assert!(service_monitor(&cb).unwrap().is_none());
        cb.spec.monitoring = Some(MonitoringSpec {
            service_monitor: Some(ServiceMonitorSpec {
                enabled: true,
                interval: Some("30s".into()),
                labels: [("release".to_string(), "prom".to_string())].into(),
            }),
        });
        let sm = service_monitor(&cb).unwrap().unwrap();
        let v = serde_json::to_value(&sm).unwrap();
        assert_eq!(v["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(v["kind"], "ServiceMonitor");
        assert_eq!(v["spec"]["endpoints"][0]["port"], "metrics");
        assert_eq!(v["spec"]["endpoints"][0]["path"], "/metrics");
        assert_eq!(v["spec"]["endpoints"][0]["interval"], "30s");
        assert_eq!(v["metadata"]["labels"]["release"], "prom");
    }
}

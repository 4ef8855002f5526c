//! The Service exposing the API port and the metrics port.

use colloquy_contract::defaults;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::builders::{owned_meta, selector_labels};
use crate::crd::ChatBackend;
use crate::error::{Error, Result};
use crate::names::{self, labels};

pub fn service(cb: &ChatBackend) -> Result<Service> {
    let port = |name: &str, port: u16| ServicePort {
        name: Some(name.to_string()),
        port: i32::from(port),
        target_port: Some(IntOrString::String(name.to_string())),
        protocol: Some("TCP".to_string()),
        ..Default::default()
    };
    Ok(Service {
        metadata: owned_meta(cb, cb.name_any(), labels::COMPONENT_API)?,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(selector_labels(cb)),
            ports: Some(vec![
                port(names::PORT_HTTP, defaults::PORT),
                port(names::PORT_METRICS, defaults::METRICS_PORT),
            ]),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// In-cluster URL of the chat API.
pub fn endpoint(cb: &ChatBackend) -> Result<String> {
    let ns = cb.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?;
    Ok(format!("http://{}.{ns}.svc:{}", cb.name_any(), defaults::PORT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::testutil::backend;

    #[test]
    fn service_ports_and_selector() {
        let cb = backend();
        let s = service(&cb).unwrap();
        let spec = s.spec.unwrap();
        let ports = spec.ports.unwrap();
        assert_eq!(ports.len(), 2);
        assert_eq!((ports[0].name.as_deref(), ports[0].port), (Some("http"), 8000));
        assert_eq!((ports[1].name.as_deref(), ports[1].port), (Some("metrics"), 9090));
        assert_eq!(spec.selector.unwrap()["app.kubernetes.io/instance"], "demo");
        assert_eq!(endpoint(&cb).unwrap(), "http://demo.ns.svc:8000");
    }
}

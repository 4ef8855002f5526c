//! The HorizontalPodAutoscaler (autoscaling/v2) of `spec.autoscaling`, on the
//! chat API Deployment's CPU use. The Deployment is then applied without
//! `replicas`, so the autoscaler and the controller never fight.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use kube::ResourceExt;

use crate::builders::owned_meta;
use crate::crd::ChatBackend;
use crate::error::Result;
use crate::names::labels;

/// The HPA, or `None` without `spec.autoscaling`.
pub fn hpa(cb: &ChatBackend) -> Result<Option<HorizontalPodAutoscaler>> {
    let Some(a) = &cb.spec.autoscaling else {
        return Ok(None);
    };
    Ok(Some(HorizontalPodAutoscaler {
        metadata: owned_meta(cb, cb.name_any(), labels::COMPONENT_API)?,
        spec: HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".to_string()),
                kind: "Deployment".to_string(),
                name: cb.name_any(),
            },
            min_replicas: Some(a.min_replicas),
            max_replicas: a.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".to_string(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".to_string(),
                    target: MetricTarget {
                        type_: "Utilization".to_string(),
                        average_utilization: Some(a.target_cpu_utilization),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            ..Default::default()
        },
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::testutil::{backend, full_backends};

    #[test]
    fn hpa_only_with_autoscaling() {
        assert!(hpa(&backend()).unwrap().is_none());
        let h = hpa(&full_backends()[0]).unwrap().unwrap();
        let spec = h.spec;
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(2), 5));
        assert_eq!(spec.scale_target_ref.kind, "Deployment");
        assert_eq!(spec.scale_target_ref.name, "demo");
        let metrics = spec.metrics.unwrap();
        assert_eq!(metrics[0].resource.as_ref().unwrap().target.average_utilization, Some(60));
    }
}

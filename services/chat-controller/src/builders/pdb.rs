//! The PodDisruptionBudget: at most one chat pod down at a time through
//! voluntary disruptions (node drains). With one replica that still lets a
//! drain evict it (a `minAvailable: 1` would block drains for ever); with
//! many it drains them one by one. Unhealthy pods may always be evicted, so
//! a broken rollout never blocks a drain. None when scaled to zero.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::builders::{owned_meta, selector_labels};
use crate::crd::ChatBackend;
use crate::error::Result;
use crate::names::labels;

/// The PDB, or `None` when the ChatBackend runs no pods.
pub fn pdb(cb: &ChatBackend) -> Result<Option<PodDisruptionBudget>> {
    if cb.spec.autoscaling.is_none() && cb.spec.replicas < 1 {
        return Ok(None);
    }
    Ok(Some(PodDisruptionBudget {
        metadata: owned_meta(cb, cb.name_any(), labels::COMPONENT_API)?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector { match_labels: Some(selector_labels(cb)), ..Default::default() }),
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_string()),
            ..Default::default()
        }),
        ..Default::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::testutil::backend;

    #[test]
    fn pdb_for_one_and_many_but_not_zero() {
        let mut cb = backend();
        for replicas in [1, 2, 10] {
            cb.spec.replicas = replicas;
            let p = pdb(&cb).unwrap().expect("a PDB");
            let spec = p.spec.unwrap();
            assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
            assert_eq!(spec.min_available, None);
            assert_eq!(spec.unhealthy_pod_eviction_policy.as_deref(), Some("AlwaysAllow"));
        }
        cb.spec.replicas = 0;
        assert!(pdb(&cb).unwrap().is_none());
    }
}

//! PodDisruptionBudget, only when `replicas > 1`.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::builders::{owned_meta, selector_labels};
use crate::crd::ChatBackend;
use crate::error::Result;
use crate::names::labels;

/// The PDB (at most one pod unavailable), or `None` when the ChatBackend has ≤ 1 replica.
pub fn pdb(cb: &ChatBackend) -> Result<Option<PodDisruptionBudget>> {
    if cb.spec.replicas <= 1 {
        return Ok(None);
    }
    Ok(Some(PodDisruptionBudget {
        metadata: owned_meta(cb, cb.name_any(), labels::COMPONENT_API)?,
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector { match_labels: Some(selector_labels(cb)), ..Default::default() }),
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
    fn pdb_only_for_several_replicas() {
        let mut cb = backend();
        assert!(pdb(&cb).unwrap().is_some());
        cb.spec.replicas = 1;
        assert!(pdb(&cb).unwrap().is_none());
    }
}

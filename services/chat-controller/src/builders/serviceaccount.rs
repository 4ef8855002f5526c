//! The ServiceAccount of `spec.serviceAccount.create`: Workload Identity
//! friendly (the GKE annotation naming the Google service account that
//! Vertex AI calls run as), with no token mounted by default.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;

use crate::builders::{owned_meta, service_account_name};
use crate::crd::ChatBackend;
use crate::error::Result;
use crate::names::{annotations, labels};

/// The ServiceAccount, or `None` unless `spec.serviceAccount.create`.
pub fn service_account(cb: &ChatBackend) -> Result<Option<ServiceAccount>> {
    let Some(sa) = cb.spec.service_account.as_ref().filter(|s| s.create) else {
        return Ok(None);
    };
    let Some(name) = service_account_name(cb) else {
        return Ok(None);
    };
    let mut meta = owned_meta(cb, name, labels::COMPONENT_API)?;
    let mut ann: BTreeMap<String, String> = sa.annotations.clone();
    if let Some(gsa) = &sa.gcp_service_account {
        ann.insert(annotations::GKE_WORKLOAD_IDENTITY.to_string(), gsa.clone());
    }
    meta.annotations = (!ann.is_empty()).then_some(ann);
    Ok(Some(ServiceAccount { metadata: meta, automount_service_account_token: Some(false), ..Default::default() }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builders::testutil::{backend, full_backends};

    #[test]
    fn workload_identity_annotation() {
        assert!(service_account(&backend()).unwrap().is_none());
        let sa = service_account(&full_backends()[2]).unwrap().unwrap();
        assert_eq!(sa.metadata.name.as_deref(), Some("demo"));
        assert_eq!(
            sa.metadata.annotations.unwrap()[annotations::GKE_WORKLOAD_IDENTITY],
            "chat@p.iam.gserviceaccount.com"
        );
        assert_eq!(sa.automount_service_account_token, Some(false));
    }
}

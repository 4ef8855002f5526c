//! Pure functions from a `ChatBackend` (plus what was observed) to the objects
//! the controller applies. No I/O here: everything is unit-tested.

pub mod configmap;
pub mod deployment;
pub mod job;
pub mod pdb;
pub mod service;
pub mod servicemonitor;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Capabilities, PodSecurityContext, SeccompProfile, SecurityContext};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::ChatBackend;
use crate::error::{Error, Result};
use crate::names::labels;

/// UID/GID the chat API runs as (the distroless `nonroot` user).
pub const RUN_AS_USER: i64 = colloquy_contract::image::RUN_AS_USER;

/// Labels selecting the chat API pods of one ChatBackend (stable: a selector is immutable).
pub fn selector_labels(cb: &ChatBackend) -> BTreeMap<String, String> {
    BTreeMap::from([
        (labels::NAME.to_string(), labels::NAME_VALUE.to_string()),
        (labels::INSTANCE.to_string(), cb.name_any()),
    ])
}

/// Labels on every object of one ChatBackend.
pub fn common_labels(cb: &ChatBackend, component: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(cb);
    l.insert(labels::COMPONENT.to_string(), component.to_string());
    l.insert(labels::MANAGED_BY.to_string(), labels::MANAGED_BY_VALUE.to_string());
    l.insert(labels::PART_OF.to_string(), labels::PART_OF_VALUE.to_string());
    l
}

/// The controller owner reference to the ChatBackend (garbage collection).
pub fn owner_ref(cb: &ChatBackend) -> Result<OwnerReference> {
    cb.controller_owner_ref(&()).ok_or(Error::MissingObjectKey("metadata.uid"))
}

/// Metadata of an owned object: name, namespace, labels, owner reference.
pub fn owned_meta(cb: &ChatBackend, name: String, component: &str) -> Result<ObjectMeta> {
    Ok(ObjectMeta {
        name: Some(name),
        namespace: Some(cb.namespace().ok_or(Error::MissingObjectKey("metadata.namespace"))?),
        labels: Some(common_labels(cb, component)),
        owner_references: Some(vec![owner_ref(cb)?]),
        ..Default::default()
    })
}

/// The image to run: `spec.image` or the controller default.
pub fn desired_image(cb: &ChatBackend, default_image: &str) -> String {
    cb.spec.image.clone().filter(|i| !i.is_empty()).unwrap_or_else(|| default_image.to_string())
}

/// Non-root pod security context.
pub fn pod_security_context() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUN_AS_USER),
        run_as_group: Some(RUN_AS_USER),
        fs_group: Some(RUN_AS_USER),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_string(), ..Default::default() }),
        ..Default::default()
    }
}

/// Restricted container security context with a read-only root filesystem.
pub fn container_security_context() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        read_only_root_filesystem: Some(true),
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_string()]), ..Default::default() }),
        ..Default::default()
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use crate::crd::*;

    /// A mock-provider ChatBackend `demo` in namespace `ns` with a uid.
    pub fn backend() -> ChatBackend {
        let mut cb = ChatBackend::new(
            "demo",
            ChatBackendSpec {
                image: None,
                replicas: 2,
                provider: ProviderSpec { mock: Some(MockProvider {}), ..Default::default() },
                database_url_secret_ref: SecretKeyRef { name: "db".into(), key: "url".into() },
                api_key_secret_ref: SecretKeyRef { name: "api".into(), key: "key".into() },
                cors: Some(CorsSpec { allowed_origins: vec!["https://a.example".into(), "https://b.example".into()] }),
                system_prompt: Some("Be brief.".into()),
                resources: None,
                pod_annotations: [("team".to_string(), "chat".to_string())].into(),
                service_account_name: Some("chat".into()),
                monitoring: None,
            },
        );
        cb.metadata.namespace = Some("ns".into());
        cb.metadata.uid = Some("0000-uid".into());
        cb
    }
}

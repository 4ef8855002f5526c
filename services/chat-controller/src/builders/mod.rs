//! Pure functions from a `ChatBackend` (plus what was observed) to the objects
//! the controller applies. No I/O here: everything is unit-tested.

pub mod configmap;
pub mod deployment;
pub mod hpa;
pub mod job;
pub mod networkpolicy;
pub mod pdb;
#[cfg(test)]
mod registry_tests;
pub mod service;
pub mod serviceaccount;
pub mod servicemonitor;

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Capabilities, PodSecurityContext, PodSpec, SeccompProfile, SecurityContext};
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

/// Label selector string of the chat API pods (`status.selector`, for the scale subresource).
pub fn selector_string(cb: &ChatBackend) -> String {
    selector_labels(cb).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// The ServiceAccount the chat pods and the migration Job run as: the
/// spec's name, the created one (named after the ChatBackend), or the
/// namespace default (`None`).
pub fn service_account_name(cb: &ChatBackend) -> Option<String> {
    cb.spec
        .service_account_name
        .clone()
        .or_else(|| cb.spec.service_account.as_ref().filter(|s| s.create).map(|_| cb.name_any()))
}

/// Pod-level settings shared by the chat API pods and the migration Job:
/// service account (its token is not mounted: the chat API never calls the
/// Kubernetes API), scheduling, image pull secrets, security context.
pub fn base_pod_spec(cb: &ChatBackend) -> PodSpec {
    let s = &cb.spec;
    PodSpec {
        service_account_name: service_account_name(cb),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(pod_security_context()),
        node_selector: (!s.node_selector.is_empty()).then(|| s.node_selector.clone()),
        tolerations: non_empty(&s.tolerations),
        affinity: s.affinity.clone(),
        priority_class_name: s.priority_class_name.clone(),
        image_pull_secrets: non_empty(&s.image_pull_secrets),
        ..Default::default()
    }
}

fn non_empty<T: Clone>(v: &[T]) -> Option<Vec<T>> {
    (!v.is_empty()).then(|| v.to_vec())
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
    use serde_json::json;

    fn from(spec: serde_json::Value) -> ChatBackend {
        let mut cb: ChatBackend = serde_json::from_value(json!({
            "apiVersion": "colloquy.dev/v1alpha1", "kind": "ChatBackend",
            "metadata": {"name": "demo", "namespace": "ns", "uid": "0000-uid"},
            "spec": spec,
        }))
        .expect("valid ChatBackend");
        cb.metadata.namespace = Some("ns".into());
        cb
    }

    /// A mock-provider ChatBackend `demo` in namespace `ns` with a uid.
    pub fn backend() -> ChatBackend {
        from(json!({
            "replicas": 2,
            "provider": {"mock": {}},
            "databaseUrlSecretRef": {"name": "db", "key": "url"},
            "apiKeySecretRef": {"name": "api", "key": "key"},
            "cors": {"allowedOrigins": ["https://a.example", "https://b.example"]},
            "systemPrompt": "Be brief.",
            "podAnnotations": {"team": "chat"},
            "serviceAccountName": "chat",
        }))
    }

    /// ChatBackends with every optional field set, one per provider kind (each
    /// with a fallback provider of another kind): together they produce every
    /// setting the controller can set.
    pub fn full_backends() -> Vec<ChatBackend> {
        let providers = [
            json!({"azureOpenAI": {"endpoint": "https://x.openai.azure.com", "deployment": "gpt",
                                    "apiKeySecretRef": {"name": "azure", "key": "k"}}}),
            json!({"openAI": {"baseUrl": "http://llm:8080/v1", "model": "llama",
                               "apiKeySecretRef": {"name": "openai", "key": "k"}}}),
            json!({"vertexAI": {"projectId": "p", "location": "europe-west4", "model": "gemini",
                                 "endpoint": "https://private.example"}}),
            json!({"mock": {}}),
        ];
        (0..providers.len())
            .map(|i| {
                from(json!({
                    "replicas": 2,
                    "autoscaling": {"minReplicas": 2, "maxReplicas": 5, "targetCPUUtilization": 60},
                    "provider": providers[i],
                    "fallbackProvider": providers[(i + 1) % providers.len()],
                    "databaseUrlSecretRef": {"name": "db", "key": "url"},
                    "apiKeySecretRef": {"name": "api", "key": "key"},
                    "cors": {"allowedOrigins": ["https://a.example"]},
                    "systemPrompt": "Be brief.",
                    "auth": {"jwt": {"secretRef": {"name": "jwt", "key": "secret"},
                                      "jwksUrl": "https://issuer.example/.well-known/jwks.json",
                                      "audience": "chat", "issuer": "https://issuer.example"}},
                    "telemetry": {"logLevel": "debug", "logFormat": "text", "otlpEndpoint": "http://otel:4318",
                                  "otlpTracesEndpoint": "http://otel:4318/v1/traces", "serviceName": "support-chat",
                                  "sampler": "parentbased_traceidratio", "samplingRatio": 0.25},
                    "limits": {"maxHistoryMessages": 20, "maxMessageChars": 4000, "maxBodyBytes": 65536,
                               "llmTimeoutSecs": 30, "requestTimeoutSecs": 45, "maxInFlight": 64,
                               "databaseMaxConnections": 8, "databaseMinConnections": 2},
                    "rateLimit": {"requestsPerMinute": 60, "tokensPerMinute": 100000},
                    "resilience": {"maxRetries": 2, "breaker": {"failures": 5, "cooldownSecs": 15}},
                    "conversations": {"summaries": false, "titles": "provider", "turnWaitSecs": 20},
                    "providerConnections": {"httpVersion": "http2", "streamsPerConnection": 50},
                    "idempotency": {"ttlSecs": 600},
                    "apiDocs": false,
                    "shutdown": {"drainSecs": 3, "graceSecs": 40},
                    "migration": {"retry": 1, "timeoutSecs": 90},
                    "serviceAccount": {"create": true, "gcpServiceAccount": "chat@p.iam.gserviceaccount.com"},
                    "nodeSelector": {"pool": "chat"},
                    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "chat", "effect": "NoSchedule"}],
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}},
                    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                        "whenUnsatisfiable": "ScheduleAnyway"}],
                    "priorityClassName": "chat-critical",
                    "imagePullSecrets": [{"name": "regcred"}],
                    "env": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}],
                    "envFrom": [{"configMapRef": {"name": "extra"}}],
                    "networkPolicy": {"apiNamespaceSelector": {"matchLabels": {"team": "web"}}},
                }))
            })
            .collect()
    }
}

//! The `ChatBackend` custom resource (`colloquy.dev/v1alpha1`).
//!
//! The CRD YAML under `manifests/crd/` is generated from these types by
//! `cargo run -p chat-controller --bin crdgen`; validation lives in the schema
//! (required fields, enums, bounds and CEL rules) so the API server rejects bad
//! objects before the controller ever sees them.

// kube's `printcolumn(...)` repeats keys by design.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use colloquy_contract::{defaults, provider};
use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of a chat backend: one chat API Deployment with its
/// configuration, migration Job, Service and optional monitoring.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "colloquy.dev",
    version = "v1alpha1",
    kind = "ChatBackend",
    plural = "chatbackends",
    singular = "chatbackend",
    shortname = "cb",
    category = "colloquy",
    namespaced,
    status = "ChatBackendStatus",
    derive = "PartialEq",
    doc = "A Colloquy chat API backend, reconciled into a ConfigMap, migration Job, Deployment, Service and more by chat-controller.",
    printcolumn(name = "Provider", type_ = "string", json_path = ".status.provider"),
    printcolumn(name = "Model", type_ = "string", json_path = ".status.model"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.readyReplicas", priority = 1),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ChatBackendSpec {
    /// Container image of the chat API. Defaults to the controller's `--default-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Number of chat API pods.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,

    /// The LLM provider; exactly one of its fields must be set.
    pub provider: ProviderSpec,

    /// Secret key holding the PostgreSQL connection URL (`DATABASE_URL`).
    pub database_url_secret_ref: SecretKeyRef,

    /// Secret key holding the internal API key callers send as `X-API-Key`
    /// (`INTERNAL_API_KEY`, at least 16 characters).
    pub api_key_secret_ref: SecretKeyRef,

    /// Cross-origin settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsSpec>,

    /// System prompt prepended to every conversation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32768))]
    pub system_prompt: Option<String>,

    /// Compute resources of the chat API container (defaults: requests 100m CPU, 128Mi memory;
    /// limit 512Mi memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Extra annotations on the chat API pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,

    /// Service account of the chat API pods (the namespace's `default` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,

    /// Prometheus Operator integration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monitoring: Option<MonitoringSpec>,
}

fn default_replicas() -> i32 {
    1
}

/// A key of a Secret in the ChatBackend's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// The LLM provider. Exactly one field must be set.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.azureOpenAI) ? 1 : 0) + (has(self.vertexAI) ? 1 : 0) + (has(self.openAI) ? 1 : 0) + (has(self.mock) ? 1 : 0) == 1",
    "message": "exactly one provider must be set: azureOpenAI, vertexAI, openAI or mock",
    "reason": "FieldValueInvalid"
}]))]
pub struct ProviderSpec {
    /// Azure OpenAI Service.
    #[serde(rename = "azureOpenAI", default, skip_serializing_if = "Option::is_none")]
    pub azure_openai: Option<AzureOpenAiProvider>,
    /// Google Vertex AI (credentials from the pod's workload identity).
    #[serde(rename = "vertexAI", default, skip_serializing_if = "Option::is_none")]
    pub vertex_ai: Option<VertexAiProvider>,
    /// Any OpenAI-compatible chat completions endpoint.
    #[serde(rename = "openAI", default, skip_serializing_if = "Option::is_none")]
    pub openai: Option<OpenAiProvider>,
    /// Deterministic built-in responder, for tests and demos.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mock: Option<MockProvider>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureOpenAiProvider {
    /// Resource endpoint, e.g. `https://my-resource.openai.azure.com`.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https://"))]
    pub endpoint: String,
    /// Deployment (model deployment) name.
    #[schemars(length(min = 1, max = 256))]
    pub deployment: String,
    /// REST API version.
    #[serde(default = "default_azure_api_version")]
    #[schemars(length(min = 1, max = 64))]
    pub api_version: String,
    /// Secret key holding the Azure OpenAI API key.
    pub api_key_secret_ref: SecretKeyRef,
}

fn default_azure_api_version() -> String {
    defaults::AZURE_OPENAI_API_VERSION.to_string()
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VertexAiProvider {
    /// Google Cloud project id.
    #[schemars(length(min = 1, max = 128))]
    pub project_id: String,
    /// Region, e.g. `us-central1`.
    #[schemars(length(min = 1, max = 64))]
    pub location: String,
    /// Model, e.g. `gemini-2.0-flash`.
    #[schemars(length(min = 1, max = 256))]
    pub model: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenAiProvider {
    /// Base URL of the OpenAI-compatible API, e.g. `https://api.openai.com/v1`.
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub base_url: String,
    /// Model name.
    #[schemars(length(min = 1, max = 256))]
    pub model: String,
    /// Secret key holding the API key; omit for endpoints without authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
}

/// The mock provider takes no settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
pub struct MockProvider {}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CorsSpec {
    /// Origins allowed to call the API from a browser; `["*"]` or empty allows any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 2048)))]
    pub allowed_origins: Vec<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Create a Prometheus Operator `ServiceMonitor` for the metrics port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_monitor: Option<ServiceMonitorSpec>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    /// Whether to create the ServiceMonitor.
    #[serde(default)]
    pub enabled: bool,
    /// Scrape interval, e.g. `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h)$"))]
    pub interval: Option<String>,
    /// Extra labels on the ServiceMonitor (to match a Prometheus `serviceMonitorSelector`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Observed state, written by the controller only.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatBackendStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Pods of the chat API Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,
    /// Ready pods of the chat API Deployment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_replicas: Option<i32>,
    /// In-cluster URL of the chat API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Configured provider (`LLM_PROVIDER` value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Configured model or deployment name, when the provider has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The database migration Job of the desired image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationStatus>,
    /// `Ready`, `Progressing`, `Degraded` and `ServiceMonitor`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationStatus {
    /// Name of the migration Job.
    pub job_name: String,
    /// Image the migration runs.
    pub image: String,
    /// State of the Job.
    pub state: MigrationState,
    /// The Job's failure reason and message, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MigrationState {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl ProviderSpec {
    /// The `LLM_PROVIDER` value, or `None` when not exactly one provider is set
    /// (the schema rejects that; the controller still must not panic).
    pub fn name(&self) -> Option<&'static str> {
        match (&self.azure_openai, &self.vertex_ai, &self.openai, &self.mock) {
            (Some(_), None, None, None) => Some(provider::AZURE_OPENAI),
            (None, Some(_), None, None) => Some(provider::VERTEX_AI),
            (None, None, Some(_), None) => Some(provider::OPENAI),
            (None, None, None, Some(_)) => Some(provider::MOCK),
            _ => None,
        }
    }

    /// The model (or Azure deployment) name shown in `kubectl get cb`.
    pub fn model(&self) -> Option<&str> {
        if let Some(a) = &self.azure_openai {
            Some(&a.deployment)
        } else if let Some(v) = &self.vertex_ai {
            Some(&v.model)
        } else {
            self.openai.as_ref().map(|o| o.model.as_str())
        }
    }
}

impl ChatBackendSpec {
    /// Every Secret key the chat API needs, in a stable order.
    pub fn secret_refs(&self) -> Vec<&SecretKeyRef> {
        let mut refs = vec![&self.database_url_secret_ref, &self.api_key_secret_ref];
        if let Some(a) = &self.provider.azure_openai {
            refs.push(&a.api_key_secret_ref);
        }
        if let Some(r) = self.provider.openai.as_ref().and_then(|o| o.api_key_secret_ref.as_ref()) {
            refs.push(r);
        }
        refs
    }

    /// Whether a ServiceMonitor is requested.
    pub fn wants_service_monitor(&self) -> bool {
        self.monitoring.as_ref().and_then(|m| m.service_monitor.as_ref()).is_some_and(|s| s.enabled)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn crd_has_names_and_cel_rule() {
        let crd = ChatBackend::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("chatbackends.colloquy.dev"));
        assert_eq!(crd.spec.names.short_names, Some(vec!["cb".to_string()]));
        let yaml = serde_yaml::to_string(&crd).unwrap();
        assert!(yaml.contains("x-kubernetes-validations"));
        assert!(yaml.contains("exactly one provider"));
    }

    #[test]
    fn provider_name_requires_exactly_one() {
        let mut p = ProviderSpec { mock: Some(MockProvider {}), ..Default::default() };
        assert_eq!(p.name(), Some(provider::MOCK));
        p.vertex_ai = Some(VertexAiProvider { project_id: "p".into(), location: "l".into(), model: "m".into() });
        assert_eq!(p.name(), None);
        assert_eq!(ProviderSpec::default().name(), None);
    }
}

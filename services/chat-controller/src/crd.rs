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
use k8s_openapi::api::core::v1::{
    Affinity, EnvFromSource, EnvVar, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of a chat backend: one chat API Deployment with its
/// configuration, migration Job, Service, network policy, disruption budget,
/// optional autoscaler and monitoring. Every setting of the chat API has a
/// field here; `env`/`envFrom` pass anything else.
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
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Provider", type_ = "string", json_path = ".status.provider"),
    printcolumn(name = "Model", type_ = "string", json_path = ".status.model"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.readyReplicas", priority = 1),
    printcolumn(name = "Schema", type_ = "integer", json_path = ".status.migration.schemaVersion", priority = 1),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.shutdown) || !has(self.shutdown.graceSecs) || !has(self.limits) || !has(self.limits.llmTimeoutSecs) || self.shutdown.graceSecs >= self.limits.llmTimeoutSecs",
    "message": "shutdown.graceSecs must be at least limits.llmTimeoutSecs, so a turn started before shutdown can finish",
    "reason": "FieldValueInvalid"
}, {
    "rule": "!has(self.autoscaling) || self.autoscaling.minReplicas <= self.autoscaling.maxReplicas",
    "message": "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
    "reason": "FieldValueInvalid"
}]))]
#[serde(rename_all = "camelCase")]
pub struct ChatBackendSpec {
    /// Container image of the chat API (it also runs the migrations). Defaults
    /// to the controller's `--default-image`. A tag is resolved to its digest
    /// when the registry can be reached, and the pods then run that digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,

    /// Number of chat API pods. Ignored when `autoscaling` is set (the
    /// HorizontalPodAutoscaler owns the count). `kubectl scale cb` sets it.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,

    /// Scale the chat API pods with a HorizontalPodAutoscaler on CPU use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscaling: Option<AutoscalingSpec>,

    /// The LLM provider; exactly one of its fields must be set.
    pub provider: ProviderSpec,

    /// A second provider, used when the first one fails (the `FALLBACK_`
    /// settings of the chat API). Same shape as `provider`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_provider: Option<ProviderSpec>,

    /// Secret key holding the PostgreSQL connection URL (`DATABASE_URL`).
    pub database_url_secret_ref: SecretKeyRef,

    /// Secret key holding the internal API key callers send as `X-API-Key`
    /// (`INTERNAL_API_KEY`, at least 16 characters).
    pub api_key_secret_ref: SecretKeyRef,

    /// Cross-origin settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<CorsSpec>,

    /// System prompt prepended to every conversation (`SYSTEM_PROMPT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32768))]
    pub system_prompt: Option<String>,

    /// End-user authentication with Bearer tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthSpec>,

    /// Logs and traces of the chat API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry: Option<TelemetrySpec>,

    /// Sizes, timeouts and pool size of the chat API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<LimitsSpec>,

    /// Per-user rate limits of chat turns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitSpec>,

    /// Retries and circuit breaker of provider calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resilience: Option<ResilienceSpec>,

    /// How the chat API connects to the provider (HTTP version, calls per connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_connections: Option<ProviderConnectionsSpec>,

    /// Conversation features: summaries, titles and turn order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversations: Option<ConversationsSpec>,

    /// Replays of requests carrying an `Idempotency-Key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<IdempotencySpec>,

    /// Serve the interactive API docs (`/docs`, `/redoc`; `API_DOCS`). On when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_docs: Option<bool>,

    /// Graceful shutdown of the chat API pods. The pods' preStop pause and
    /// `terminationGracePeriodSeconds` follow these values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shutdown: Option<ShutdownSpec>,

    /// The database migration Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationSpec>,

    /// Compute resources of the chat API container (defaults: requests 100m CPU, 128Mi memory;
    /// limit 512Mi memory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Extra annotations on the chat API pods.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,

    /// Service account of the chat API pods and the migration Job (the
    /// namespace's `default` when unset; `serviceAccount.create` makes the
    /// controller create it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,

    /// A ServiceAccount created for the chat API pods, e.g. for Workload Identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<ServiceAccountSpec>,

    /// Node labels the chat API pods (and the migration Job) must run on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,

    /// Tolerations of the chat API pods and the migration Job.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,

    /// Affinity of the chat API pods and the migration Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,

    /// How the chat API pods spread across zones or nodes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,

    /// Priority class of the chat API pods and the migration Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub priority_class_name: Option<String>,

    /// Secrets for pulling the chat API image from a private registry. The
    /// controller also uses them to resolve the image's digest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// Extra environment variables of the chat API container and the
    /// migration Job, for anything the fields above do not cover. A variable
    /// the controller sets from a field keeps the field's value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,

    /// Extra sources of environment variables (ConfigMaps, Secrets).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_from: Vec<EnvFromSource>,

    /// The NetworkPolicy in front of the chat API pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_policy: Option<NetworkPolicySpec>,

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

/// Azure OpenAI Service settings.
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

/// Google Vertex AI (Gemini) settings.
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
    /// Base URL overriding `https://{location}-aiplatform.googleapis.com` (private endpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub endpoint: Option<String>,
}

/// An OpenAI-compatible chat completions endpoint (vLLM, Ollama, llama.cpp, OpenAI).
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

/// `spec.cors`: browsers calling the API from other origins.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CorsSpec {
    /// Origins allowed to call the API from a browser; `["*"]` or empty allows any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 2048)))]
    pub allowed_origins: Vec<String>,
}

/// `spec.autoscaling`: a HorizontalPodAutoscaler (autoscaling/v2) on the chat API Deployment.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoscalingSpec {
    /// Fewest pods.
    #[serde(default = "default_min_replicas")]
    #[schemars(range(min = 1, max = 100))]
    pub min_replicas: i32,
    /// Most pods.
    #[schemars(range(min = 1, max = 100))]
    pub max_replicas: i32,
    /// Average CPU use, in percent of the CPU request, the autoscaler aims for.
    #[serde(rename = "targetCPUUtilization", default = "default_target_cpu")]
    #[schemars(range(min = 1, max = 100))]
    pub target_cpu_utilization: i32,
}

fn default_min_replicas() -> i32 {
    1
}

fn default_target_cpu() -> i32 {
    75
}

/// `spec.auth`: how end users authenticate.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Bearer JWTs (`Authorization: Bearer ...`) on the chat routes, next to `X-API-Key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtSpec>,
}

/// Bearer JWT validation: HS256 with a shared secret and/or RS256/ES256 with keys from a JWKS URL.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.secretRef) || has(self.jwksUrl)",
    "message": "set secretRef (HS256) or jwksUrl (RS256/ES256)",
    "reason": "FieldValueRequired"
}]))]
pub struct JwtSpec {
    /// Secret key holding the HS256 shared secret (`JWT_SECRET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// URL of the JSON Web Key Set for RS256/ES256 tokens (`JWT_JWKS_URL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub jwks_url: Option<String>,
    /// Required `aud` claim (`JWT_AUDIENCE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub audience: Option<String>,
    /// Required `iss` claim (`JWT_ISSUER`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub issuer: Option<String>,
}

/// `spec.telemetry`: logs and OpenTelemetry traces.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TelemetrySpec {
    /// Log filter in `RUST_LOG` syntax, e.g. `info` or `info,sqlx=warn` (`RUST_LOG`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub log_level: Option<String>,
    /// Log format (`LOG_FORMAT`): `json` (default) or `text`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
    /// OTLP/HTTP base URL; traces go to `<url>/v1/traces` (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    /// Tracing is off when neither this nor `otlpTracesEndpoint` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub otlp_endpoint: Option<String>,
    /// Full OTLP/HTTP traces URL (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`); wins over `otlpEndpoint`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), regex(pattern = r"^https?://"))]
    pub otlp_traces_endpoint: Option<String>,
    /// Service name of the traces (`OTEL_SERVICE_NAME`, default `colloquy-chat-api`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub service_name: Option<String>,
    /// Trace sampler (`OTEL_TRACES_SAMPLER`, default `parentbased_always_on`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sampler: Option<Sampler>,
    /// Sampling ratio between 0 and 1 for the `*traceidratio` samplers (`OTEL_TRACES_SAMPLER_ARG`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sampling_ratio: Option<f64>,
}

/// Log format of the chat API.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// OpenTelemetry trace samplers (the standard `OTEL_TRACES_SAMPLER` values).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    Traceidratio,
    ParentbasedAlwaysOn,
    ParentbasedAlwaysOff,
    ParentbasedTraceidratio,
}

/// `spec.limits`: sizes, timeouts and the database pool.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.databaseMinConnections) || self.databaseMinConnections <= (has(self.databaseMaxConnections) ? self.databaseMaxConnections : 16)",
    "message": "limits.databaseMinConnections must not exceed limits.databaseMaxConnections (default 16)",
    "reason": "FieldValueInvalid"
}]))]
#[serde(rename_all = "camelCase")]
pub struct LimitsSpec {
    /// Newest stored messages sent to the provider as context (`MAX_HISTORY_MESSAGES`, default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_history_messages: Option<i64>,
    /// Longest accepted user message, in characters (`MAX_MESSAGE_CHARS`, default 32000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_message_chars: Option<i64>,
    /// Largest accepted request body, in bytes (`MAX_BODY_BYTES`, default 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1024, max = 104857600))]
    pub max_body_bytes: Option<i64>,
    /// Seconds to wait for the provider before answering 504 (`LLM_TIMEOUT_SECS`, default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub llm_timeout_secs: Option<i64>,
    /// Seconds a whole request may take (`REQUEST_TIMEOUT_SECS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub request_timeout_secs: Option<i64>,
    /// Requests served at once per pod; more get 503 (`MAX_IN_FLIGHT`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100000))]
    pub max_in_flight: Option<i64>,
    /// PostgreSQL connections per pod (`DATABASE_MAX_CONNECTIONS`, default 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub database_max_connections: Option<i64>,
    /// PostgreSQL connections each pod opens at start-up and keeps open, so
    /// a burst does not open them on the request path
    /// (`DATABASE_MIN_CONNECTIONS`, default 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub database_min_connections: Option<i64>,
}

/// `spec.rateLimit`: per-user limits of chat turns.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitSpec {
    /// Turns per user per minute (`RATE_LIMIT_RPM`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub requests_per_minute: Option<i64>,
    /// Provider tokens per user per minute (`RATE_LIMIT_TPM`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000000))]
    pub tokens_per_minute: Option<i64>,
}

/// `spec.resilience`: retries and the circuit breaker of provider calls.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResilienceSpec {
    /// Retries of a failed provider call, with backoff (`LLM_MAX_RETRIES`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 10))]
    pub max_retries: Option<i64>,
    /// The circuit breaker in front of the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breaker: Option<BreakerSpec>,
}

/// Circuit breaker: after `failures` consecutive failures, calls fail fast for `cooldownSecs`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BreakerSpec {
    /// Consecutive failures that open the breaker (`LLM_BREAKER_FAILURES`); 0 turns the breaker off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub failures: Option<i64>,
    /// Seconds the breaker stays open (`LLM_BREAKER_COOLDOWN_SECS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub cooldown_secs: Option<i64>,
}

/// `spec.providerConnections`: how chat API pods connect to the provider.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderConnectionsSpec {
    /// HTTP version of provider calls (`LLM_HTTP_VERSION`): `auto` (the
    /// default: HTTP/2 where TLS negotiates it, HTTP/1.1 over plain http),
    /// `http1`, or `http2` (also over plain http, for h2c servers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_version: Option<HttpVersion>,
    /// Provider calls one connection carries at once before the pod opens
    /// another (`LLM_STREAMS_PER_CONNECTION`, default 100); keep it at or below
    /// the provider's HTTP/2 `SETTINGS_MAX_CONCURRENT_STREAMS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10000))]
    pub streams_per_connection: Option<i64>,
}

/// HTTP version of provider calls.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum HttpVersion {
    /// HTTP/2 where TLS negotiates it, HTTP/1.1 otherwise.
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only (prior knowledge over plain http).
    Http2,
}

/// `spec.conversations`: summaries, titles and turn order.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationsSpec {
    /// Fold old messages into the conversation summary (`SUMMARIES`). On when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summaries: Option<bool>,
    /// How conversations get their titles (`TITLES`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub titles: Option<Titles>,
    /// Seconds a turn waits for another turn of the same conversation before
    /// answering 409 conversation_busy (`TURN_WAIT_SECS`, default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub turn_wait_secs: Option<i64>,
}

/// Title of new conversations.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Titles {
    /// The first user message, cut to 100 characters (the default).
    FirstMessage,
    /// Asked from the provider.
    Provider,
}

/// `spec.idempotency`: replays of requests carrying an `Idempotency-Key`.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdempotencySpec {
    /// Seconds a stored answer is replayed for the same key (`IDEMPOTENCY_TTL_SECS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 604800))]
    pub ttl_secs: Option<i64>,
}

/// `spec.shutdown`: what happens when a chat API pod stops.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShutdownSpec {
    /// Seconds the pod keeps serving while its endpoints are withdrawn
    /// (`SHUTDOWN_DRAIN_SECS`, default 5; also the preStop pause).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 300))]
    pub drain_secs: Option<i64>,
    /// Seconds in-flight turns (streams too) get to finish after the drain
    /// (`SHUTDOWN_GRACE_SECS`, default 75).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 3600))]
    pub grace_secs: Option<i64>,
}

/// `spec.migration`: the database migration Job.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationSpec {
    /// Raise this counter to run a failed migration again (a new Job).
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(min = 0))]
    pub retry: i64,
    /// Seconds `chat-api migrate` waits for the database (`MIGRATE_TIMEOUT_SECS`, default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_secs: Option<i64>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// `spec.serviceAccount`: a ServiceAccount the controller creates for the chat API pods.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccountSpec {
    /// Create the ServiceAccount (named `serviceAccountName`, or after the ChatBackend).
    #[serde(default)]
    pub create: bool,
    /// Google service account the pods act as with GKE Workload Identity (for
    /// Vertex AI): sets the `iam.gke.io/gcp-service-account` annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 320), regex(pattern = r"^[^@\s]+@[^@\s]+$"))]
    pub gcp_service_account: Option<String>,
    /// Extra annotations of the ServiceAccount (other workload identity systems).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// `spec.networkPolicy`: which namespaces may reach the chat API pods.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create the NetworkPolicy (on when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Namespaces whose pods may call the API port, besides the ChatBackend's
    /// own namespace and the controller's. Unset: no others; `{}`: every namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_namespace_selector: Option<LabelSelector>,
    /// Namespaces whose pods may scrape the metrics port (default: the
    /// namespace named `monitoring`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_namespace_selector: Option<LabelSelector>,
}

/// `spec.monitoring`: Prometheus Operator objects.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Create a Prometheus Operator `ServiceMonitor` for the metrics port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_monitor: Option<ServiceMonitorSpec>,
}

/// A ServiceMonitor scraping the chat API's metrics port.
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
    /// Label selector of the chat API pods (for the `scale` subresource and HPAs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// The database migration Job of the desired image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<MigrationStatus>,
    /// `Ready`, `Progressing`, `Degraded`, `DatabaseMigrated`, `ProviderReady` and `ServiceMonitor`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The migration Job of the desired image, and what it reported.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MigrationStatus {
    /// Name of the migration Job.
    pub job_name: String,
    /// Image the migration runs (pinned to its digest when the digest is known).
    pub image: String,
    /// Digest of the image (`sha256:...`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Newest migration in the image: its label, else what its `chat-api migrate` reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrations_version: Option<i64>,
    /// Newest migration the database reports as applied after the last run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<i64>,
    /// State of the Job.
    pub state: MigrationState,
    /// The Job's failure reason and message, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Pods the Job has run so far (failed and succeeded).
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub attempts: i32,
    /// The `spec.migration.retry` value this Job runs for.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub retry: i64,
    /// The error of the last failed attempt, as `chat-api migrate` reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

fn is_zero_i32(v: &i32) -> bool {
    *v == 0
}

/// State of a migration Job.
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

    /// The Secret key holding the provider's API key, if it has one.
    pub fn secret_ref(&self) -> Option<&SecretKeyRef> {
        if let Some(a) = &self.azure_openai {
            return Some(&a.api_key_secret_ref);
        }
        self.openai.as_ref().and_then(|o| o.api_key_secret_ref.as_ref())
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
        refs.extend(self.provider.secret_ref());
        refs.extend(self.fallback_provider.as_ref().and_then(ProviderSpec::secret_ref));
        refs.extend(self.jwt().and_then(|j| j.secret_ref.as_ref()));
        refs
    }

    /// Every Secret key the chat API needs with the spec field referencing it
    /// (for messages), in a stable order.
    pub fn secret_refs_by_field(&self) -> Vec<(&'static str, &SecretKeyRef)> {
        let mut refs = vec![
            ("databaseUrlSecretRef", &self.database_url_secret_ref),
            ("apiKeySecretRef", &self.api_key_secret_ref),
        ];
        fn provider_field(p: &ProviderSpec, fallback: bool) -> Option<(&'static str, &SecretKeyRef)> {
            let field = match (p.azure_openai.is_some(), fallback) {
                (true, false) => "provider.azureOpenAI.apiKeySecretRef",
                (false, false) => "provider.openAI.apiKeySecretRef",
                (true, true) => "fallbackProvider.azureOpenAI.apiKeySecretRef",
                (false, true) => "fallbackProvider.openAI.apiKeySecretRef",
            };
            p.secret_ref().map(|r| (field, r))
        }
        refs.extend(provider_field(&self.provider, false));
        refs.extend(self.fallback_provider.as_ref().and_then(|f| provider_field(f, true)));
        refs.extend(self.jwt().and_then(|j| j.secret_ref.as_ref()).map(|r| ("auth.jwt.secretRef", r)));
        refs
    }

    /// The JWT settings, when Bearer auth is configured.
    pub fn jwt(&self) -> Option<&JwtSpec> {
        self.auth.as_ref().and_then(|a| a.jwt.as_ref())
    }

    /// Shutdown timings: the spec's values, else the chat API's defaults.
    pub fn shutdown_secs(&self) -> (i64, i64) {
        let s = self.shutdown.as_ref();
        let drain = s.and_then(|s| s.drain_secs).unwrap_or(defaults::SHUTDOWN_DRAIN_SECS as i64);
        let grace = s.and_then(|s| s.grace_secs).unwrap_or(defaults::SHUTDOWN_GRACE_SECS as i64);
        (drain, grace)
    }

    /// The `spec.migration.retry` counter.
    pub fn migration_retry(&self) -> i64 {
        self.migration.as_ref().map_or(0, |m| m.retry)
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
    fn the_pool_bound_defaults_to_the_chat_apis_pool_size() {
        let yaml = serde_yaml::to_string(&ChatBackend::crd()).unwrap();
        let default =
            format!("self.databaseMaxConnections : {})", colloquy_contract::defaults::DATABASE_MAX_CONNECTIONS);
        assert!(yaml.contains(&default), "the CEL bound on databaseMinConnections must default to the pool size");
    }

    #[test]
    fn provider_name_requires_exactly_one() {
        let mut p = ProviderSpec { mock: Some(MockProvider {}), ..Default::default() };
        assert_eq!(p.name(), Some(provider::MOCK));
        p.vertex_ai =
            Some(VertexAiProvider { project_id: "p".into(), location: "l".into(), model: "m".into(), endpoint: None });
        assert_eq!(p.name(), None);
        assert_eq!(ProviderSpec::default().name(), None);
    }
}

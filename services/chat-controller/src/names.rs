//! Every name the controller writes into the cluster, in one place: field
//! manager, labels, annotations, object name
//! suffixes. (Env var names, ports, probe paths and subcommands of the chat
//! API come from `colloquy_contract`.)

/// Server-side apply field manager of every write.
pub const FIELD_MANAGER: &str = "chat-controller";
/// `reportingController` of Events and the controller's name in logs.
pub const CONTROLLER_NAME: &str = "chat-controller";
/// Default image repository of the chat API; the tag is the controller version.
pub const DEFAULT_IMAGE_REPOSITORY: &str = "ghcr.io/colloquy-dev/chat-api";

/// Names of the containers and ports.
pub const CONTAINER_NAME: &str = "chat-api";
pub const MIGRATE_CONTAINER_NAME: &str = "migrate";
pub const PORT_HTTP: &str = "http";
pub const PORT_METRICS: &str = "metrics";

/// Namespace label every namespace carries (its name), for NetworkPolicy peers.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Namespace allowed to scrape the metrics port when `networkPolicy.metricsNamespaceSelector` is unset.
pub const DEFAULT_MONITORING_NAMESPACE: &str = "monitoring";

/// Suffixes of object names (the Deployment, Service and PDB take the ChatBackend's name).
pub const CONFIGMAP_SUFFIX: &str = "-config";
pub const MIGRATION_JOB_INFIX: &str = "-migrate-";

/// Labels on every object the controller creates.
pub mod labels {
    pub const NAME: &str = "app.kubernetes.io/name";
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const PART_OF: &str = "app.kubernetes.io/part-of";
    /// Value of [`NAME`].
    pub const NAME_VALUE: &str = "chat-api";
    /// Value of [`NAME`] on the migration Job's pods: not [`NAME_VALUE`], so the chat API's
    /// Service and PodDisruptionBudget (which select `NAME_VALUE` + instance) never count them.
    pub const NAME_MIGRATION_VALUE: &str = "chat-api-migration";
    /// Value of [`MANAGED_BY`].
    pub const MANAGED_BY_VALUE: &str = "chat-controller";
    /// Value of [`PART_OF`].
    pub const PART_OF_VALUE: &str = "colloquy";
    /// Values of [`COMPONENT`].
    pub const COMPONENT_API: &str = "api";
    pub const COMPONENT_MIGRATION: &str = "migration";
    /// Selector for every object the controller manages (used by its watches).
    pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=chat-controller";
}

/// Annotations the controller writes.
pub mod annotations {
    /// On the pod template: hash of the ConfigMap data and the referenced
    /// Secrets' resourceVersions; a change rolls the pods.
    pub const CONFIG_HASH: &str = "colloquy.dev/config-hash";
    /// On every applied object: hash of the desired object, so a removed field
    /// is noticed (the subset comparison alone cannot see removals).
    pub const DESIRED_HASH: &str = "colloquy.dev/desired-hash";
    /// On the migration Job: the image it migrates.
    pub const MIGRATION_IMAGE: &str = "colloquy.dev/migration-image";
    /// On the migration Job: the image's migrations version, when known before the run.
    pub const MIGRATIONS_VERSION: &str = "colloquy.dev/migrations-version";
    /// On the migration Job: the `spec.migration.retry` it runs for.
    pub const MIGRATION_RETRY: &str = "colloquy.dev/migration-retry";
    /// On a ServiceAccount: the Google service account of GKE Workload Identity.
    pub const GKE_WORKLOAD_IDENTITY: &str = "iam.gke.io/gcp-service-account";
}

/// Event `action`s.
pub mod actions {
    pub const RECONCILE: &str = "Reconcile";
    pub const MIGRATE: &str = "Migrate";
}

/// The controller's own HTTP endpoints (its `/metrics` path comes from the contract).
pub mod http {
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
}

/// Environment variables of the controller itself.
pub mod env {
    pub const DEFAULT_IMAGE: &str = "CHAT_CONTROLLER_DEFAULT_IMAGE";
    pub const HTTP_ADDR: &str = "CHAT_CONTROLLER_HTTP_ADDR";
    pub const WATCH_NAMESPACE: &str = "CHAT_CONTROLLER_WATCH_NAMESPACE";
    pub const LEADER_ELECTION: &str = "CHAT_CONTROLLER_LEADER_ELECTION";
    pub const LEASE_NAME: &str = "CHAT_CONTROLLER_LEASE_NAME";
    pub const LEASE_NAMESPACE: &str = "CHAT_CONTROLLER_LEASE_NAMESPACE";
    pub const POD_NAME: &str = "POD_NAME";
    pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
    pub const LOG_FORMAT: &str = "CHAT_CONTROLLER_LOG_FORMAT";
    pub const RESYNC_SECS: &str = "CHAT_CONTROLLER_RESYNC_SECS";
    pub const CONCURRENCY: &str = "CHAT_CONTROLLER_CONCURRENCY";
    pub const IMAGE_RESOLVE_SECS: &str = "CHAT_CONTROLLER_IMAGE_RESOLVE_SECS";
    pub const INSECURE_REGISTRIES: &str = "CHAT_CONTROLLER_INSECURE_REGISTRIES";
}

/// Name of the ConfigMap of a ChatBackend.
pub fn configmap_name(backend: &str) -> String {
    format!("{backend}{CONFIGMAP_SUFFIX}")
}

/// Name of the migration Job of a ChatBackend for a migration hash.
pub fn migration_job_name(backend: &str, hash: &str) -> String {
    // Job names must be ≤ 63 chars (they become a pod label value).
    let prefix: String = backend.chars().take(63 - MIGRATION_JOB_INFIX.len() - hash.len()).collect();
    format!("{prefix}{MIGRATION_JOB_INFIX}{hash}")
}

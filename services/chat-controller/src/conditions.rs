//! Condition types and reasons of `ChatBackend.status.conditions` (also the
//! reasons of the Events published on transitions): one place for each name.

/// Everything is in place and the chat API serves: migration done, rollout complete.
pub const READY: &str = "Ready";
/// The controller is moving the ChatBackend towards its spec (migration, rollout).
pub const PROGRESSING: &str = "Progressing";
/// Something the user must fix blocks progress (a missing Secret, a failed migration).
pub const DEGRADED: &str = "Degraded";
/// The database schema is at the image's migrations version (message: the schema version).
pub const DATABASE_MIGRATED: &str = "DatabaseMigrated";
/// The chat pods' own probe of the provider's endpoint and credentials succeeded.
pub const PROVIDER_READY: &str = "ProviderReady";
/// The requested ServiceMonitor exists (only when one is requested).
pub const SERVICE_MONITOR: &str = "ServiceMonitor";

/// Condition statuses.
pub const TRUE: &str = "True";
pub const FALSE: &str = "False";
pub const UNKNOWN: &str = "Unknown";

/// Condition and Event reasons.
pub mod reasons {
    pub const SECRET_NOT_FOUND: &str = "SecretNotFound";
    pub const MIGRATION_RUNNING: &str = "MigrationRunning";
    pub const MIGRATION_FAILED: &str = "MigrationFailed";
    pub const MIGRATION_SUCCEEDED: &str = "MigrationSucceeded";
    pub const ROLLOUT_IN_PROGRESS: &str = "RolloutInProgress";
    pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
    pub const AVAILABLE: &str = "Available";
    pub const AS_EXPECTED: &str = "AsExpected";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const SERVICE_MONITOR_CREATED: &str = "ServiceMonitorCreated";
    pub const SERVICE_MONITOR_CRD_MISSING: &str = "ServiceMonitorCRDMissing";
    pub const SERVICE_MONITOR_DISABLED: &str = "Disabled";
    /// The provider answered the chat pods' probe and accepted the credentials.
    pub const PROVIDER_REACHABLE: &str = "ProviderReachable";
    /// The provider rejected the credentials.
    pub const PROVIDER_UNAUTHORIZED: &str = "ProviderUnauthorized";
    /// The provider could not be reached or answered with an error.
    pub const PROVIDER_UNREACHABLE: &str = "ProviderUnreachable";
    /// No ready chat pod to ask (yet).
    pub const NO_READY_PODS: &str = "NoReadyPods";
    /// The chat pods did not say (not probed yet, or their readiness could not be read).
    pub const PROVIDER_UNKNOWN: &str = "ProviderStateUnknown";
}

//! The controller's one error type.

/// Errors of a reconciliation. Missing Secrets are not errors: they are
/// reported in the status (`Degraded`/`SecretNotFound`) and requeued.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),

    #[error("serialization error: {0}")]
    Serialization(#[from] serde_json::Error),

    #[error("object has no {0}")]
    MissingObjectKey(&'static str),

    #[error("invalid ChatBackend: {0}")]
    InvalidSpec(String),

    #[error("leader election: {0}")]
    LeaderElection(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Low-cardinality label for the `reason` of the errors metric.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(kube::Error::Api(s)) if s.code == 404 => "not_found",
            Error::Kube(kube::Error::Api(s)) if s.code == 422 => "invalid",
            Error::Kube(kube::Error::Api(s)) if s.code == 403 => "forbidden",
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "transport",
            Error::Serialization(_) => "serialization",
            Error::MissingObjectKey(_) => "missing_key",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::LeaderElection(_) => "leader_election",
        }
    }
}

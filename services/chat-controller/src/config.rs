//! Typed controller configuration from flags and environment, validated once.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use crate::leader::Timings;
use crate::names::{self, env};

fn default_image() -> String {
    format!("{}:{}", names::DEFAULT_IMAGE_REPOSITORY, env!("CARGO_PKG_VERSION"))
}

#[derive(Clone, Debug, clap::ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Text,
}

/// chat-controller: reconciles ChatBackend resources into running chat APIs.
#[derive(Clone, Debug, Parser)]
#[command(name = "chat-controller", version)]
pub struct Config {
    /// Image of the chat API when a ChatBackend sets no `spec.image`.
    #[arg(long, env = env::DEFAULT_IMAGE, default_value_t = default_image())]
    pub default_image: String,

    /// Address of the HTTP server for /healthz, /readyz and /metrics.
    #[arg(long, env = env::HTTP_ADDR, default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Watch only these namespaces (comma-separated; all namespaces when
    /// unset). Then the controller needs no cluster-wide permissions: a Role in
    /// each of them is enough.
    #[arg(long = "namespace", env = env::WATCH_NAMESPACE, value_delimiter = ',')]
    pub namespaces: Vec<String>,

    /// Take a coordination.k8s.io Lease before reconciling (several replicas).
    #[arg(long, env = env::LEADER_ELECTION, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,

    /// Name of the leader Lease.
    #[arg(long, env = env::LEASE_NAME, default_value = "chat-controller-leader")]
    pub lease_name: String,

    /// Namespace of the leader Lease (defaults to the pod's namespace, then `default`).
    #[arg(long, env = env::LEASE_NAMESPACE)]
    pub lease_namespace: Option<String>,

    /// Identity in the Lease (defaults to the pod name, then the hostname).
    #[arg(long, env = env::POD_NAME)]
    pub identity: Option<String>,

    /// Seconds a Lease stays valid without renewal: another replica may take
    /// it this long after the holder's last renewal.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_secs: u64,

    /// Seconds after its last renewal a leader stops reconciling when it could
    /// not renew (below the lease duration; the difference is the clock skew
    /// between replicas that is tolerated).
    #[arg(long, default_value_t = 10)]
    pub renew_deadline_secs: u64,

    /// Seconds between Lease renewals (below the renew deadline).
    #[arg(long, default_value_t = 4)]
    pub renew_interval_secs: u64,

    /// Seconds between two reconciles of an unchanged ChatBackend.
    #[arg(long, env = env::RESYNC_SECS, default_value_t = 300)]
    pub resync_secs: u64,

    /// ChatBackends reconciled at once (per watched namespace when
    /// `--namespace` lists several).
    #[arg(long, env = env::CONCURRENCY, default_value_t = crate::reconcile::CONCURRENCY)]
    pub concurrency: u16,

    /// Seconds an image's digest and migrations label (read from its registry)
    /// are reused before being looked up again; 0 turns registry lookups off.
    #[arg(long, env = env::IMAGE_RESOLVE_SECS, default_value_t = 300)]
    pub image_resolve_secs: u64,

    /// Registries (`host:port`, comma-separated) spoken to over plain HTTP.
    #[arg(long, env = env::INSECURE_REGISTRIES, value_delimiter = ',')]
    pub insecure_registries: Vec<String>,

    /// Log format.
    #[arg(long, env = env::LOG_FORMAT, value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
}

impl Config {
    /// Checks what clap cannot.
    pub fn validate(self) -> Result<Self, String> {
        if self.default_image.trim().is_empty() {
            return Err("--default-image must not be empty".into());
        }
        self.timings().validate()?;
        if self.resync_secs == 0 {
            return Err("--resync-secs must be positive".into());
        }
        if self.concurrency == 0 {
            return Err("--concurrency must be positive".into());
        }
        if self.namespaces.iter().any(|n| n.trim().is_empty()) {
            return Err("--namespace: empty namespace name in the list".into());
        }
        Ok(self)
    }

    pub fn timings(&self) -> Timings {
        Timings {
            lease_duration: Duration::from_secs(self.lease_duration_secs),
            renew_deadline: Duration::from_secs(self.renew_deadline_secs),
            renew_interval: Duration::from_secs(self.renew_interval_secs),
        }
    }

    /// The namespaces to watch: `[None]` for all of them.
    pub fn scopes(&self) -> Vec<Option<String>> {
        if self.namespaces.is_empty() {
            vec![None]
        } else {
            let mut v: Vec<_> = self.namespaces.iter().map(|n| n.trim().to_string()).collect();
            v.sort();
            v.dedup();
            v.into_iter().map(Some).collect()
        }
    }

    /// The namespace the controller runs in (`POD_NAMESPACE`), when known.
    pub fn own_namespace(&self) -> Option<String> {
        std::env::var(env::POD_NAMESPACE).ok().filter(|n| !n.is_empty())
    }

    pub fn lease_namespace(&self) -> String {
        self.lease_namespace
            .clone()
            .or_else(|| std::env::var(env::POD_NAMESPACE).ok())
            .unwrap_or_else(|| "default".to_string())
    }

    pub fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "chat-controller".into());
            format!("{host}-{}", std::process::id())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let c = Config::try_parse_from(["chat-controller"]).unwrap().validate().unwrap();
        assert!(c.default_image.starts_with("ghcr.io/colloquy-dev/chat-api:"));
        assert!(c.leader_election);
        let c = Config::try_parse_from(["chat-controller", "--default-image", "x:1", "--leader-election", "false"])
            .unwrap();
        assert_eq!(c.default_image, "x:1");
        assert!(!c.leader_election);
        let bad = Config::try_parse_from(["chat-controller", "--renew-interval-secs", "20"]).unwrap();
        assert!(bad.validate().is_err());
        let bad = Config::try_parse_from(["chat-controller", "--renew-deadline-secs", "15"]).unwrap();
        assert!(bad.validate().is_err());
        assert_eq!(c.concurrency, crate::reconcile::CONCURRENCY);
        let bad = Config::try_parse_from(["chat-controller", "--concurrency", "0"]).unwrap();
        assert!(bad.validate().is_err());
        let c = Config::try_parse_from(["chat-controller", "--namespace", "b,a,b"]).unwrap().validate().unwrap();
        assert_eq!(c.scopes(), [Some("a".to_string()), Some("b".to_string())]);
        assert_eq!(Config::try_parse_from(["chat-controller"]).unwrap().scopes(), [None]);
    }
}

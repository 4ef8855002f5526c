//! Typed controller configuration from flags and environment, validated once.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

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

    /// Watch only this namespace (all namespaces when unset).
    #[arg(long, env = env::WATCH_NAMESPACE)]
    pub namespace: Option<String>,

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

    /// Seconds a Lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_secs: u64,

    /// Seconds between Lease renewals (must be below the lease duration).
    #[arg(long, default_value_t = 5)]
    pub renew_interval_secs: u64,

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
        if self.lease_duration_secs == 0 || self.renew_interval_secs == 0 {
            return Err("lease durations must be positive".into());
        }
        if self.renew_interval_secs >= self.lease_duration_secs {
            return Err("--renew-interval-secs must be below --lease-duration-secs".into());
        }
        Ok(self)
    }

    pub fn lease_duration(&self) -> Duration {
        Duration::from_secs(self.lease_duration_secs)
    }

    pub fn renew_interval(&self) -> Duration {
        Duration::from_secs(self.renew_interval_secs)
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
    }
}

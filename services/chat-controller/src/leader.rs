//! Leader election over a `coordination.k8s.io/v1` Lease.
//!
//! Every update is a `replace` carrying the resourceVersion that was read, so
//! two candidates racing for an expired Lease cannot both win: the loser gets
//! 409 Conflict and stays a follower.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

use crate::error::{Error, Result};

#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

impl LeaseLock {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str, duration: Duration) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
        let Some(renew) = spec.renew_time.as_ref().or(spec.acquire_time.as_ref()) else {
            return true;
        };
        let secs = i64::from(spec.lease_duration_seconds.unwrap_or(0));
        renew.0 + SignedDuration::from_secs(secs) < now
    }

    /// Acquires or renews the Lease. `Ok(true)` when this candidate holds it.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = Timestamp::now();
        let secs = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(self.name.clone()), ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(e) if is_conflict(&e) => Ok(false),
                Err(e) => Err(e.into()),
            };
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        if holder.as_deref() == Some(self.identity.as_str()) {
            spec.renew_time = Some(MicroTime(now));
            spec.lease_duration_seconds = Some(secs);
        } else if holder.is_none() || Self::expired(spec, now) {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.renew_time = Some(MicroTime(now));
            spec.lease_duration_seconds = Some(secs);
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        } else {
            return Ok(false);
        }
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(e) if is_conflict(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Gives the Lease up (if held) so another replica takes over at once.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(()),
            Err(e) if is_conflict(&e) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Runs the election loop: waits until the Lease is held, then keeps
    /// renewing it every `renew` and publishes leadership on the returned
    /// channel. Leadership is reported lost when a renewal has not succeeded
    /// within the lease duration.
    pub fn spawn(self, renew: Duration) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
        let (tx, rx) = watch::channel(false);
        let handle = tokio::spawn(async move {
            let mut last_ok: Option<tokio::time::Instant> = None;
            loop {
                match self.try_acquire_or_renew().await {
                    Ok(true) => last_ok = Some(tokio::time::Instant::now()),
                    Ok(false) => last_ok = None,
                    Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
                }
                let leading = last_ok.is_some_and(|t| t.elapsed() < self.duration);
                if *tx.borrow() != leading {
                    tracing::info!(identity = %self.identity, leading, "leadership changed");
                    let _ = tx.send(leading);
                }
                if tx.is_closed() {
                    return;
                }
                tokio::time::sleep(renew).await;
            }
        });
        (rx, handle)
    }
}

/// Waits until `rx` reports leadership. Errors when the elector stopped.
pub async fn wait_for_leadership(rx: &mut watch::Receiver<bool>) -> Result<()> {
    rx.wait_for(|l| *l).await.map(|_| ()).map_err(|_| Error::LeaderElection("elector stopped".into()))
}

/// Completes when leadership, once held, is lost.
pub async fn leadership_lost(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|l| !*l).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry() {
        let now = Timestamp::from_second(1_000).unwrap();
        let spec = |renew: i64| LeaseSpec {
            renew_time: Some(MicroTime(Timestamp::from_second(renew).unwrap())),
            lease_duration_seconds: Some(15),
            ..Default::default()
        };
        assert!(!LeaseLock::expired(&spec(990), now));
        assert!(LeaseLock::expired(&spec(980), now));
        assert!(LeaseLock::expired(&LeaseSpec::default(), now));
    }
}

//! Leader election: `kube-lease-manager` takes and renews the
//! `coordination.k8s.io` Lease; this module decides, on the holder's own
//! clock, until when it may act as the leader, and fences its writes.
//!
//! The timeline of one term, on the holder's clock (`t` = the `renewTime` it
//! last wrote):
//!
//! * `t + renew_interval`: the lease manager renews (it retries on failure);
//! * `t + renew_deadline`: without a newer renewal observed by then, this
//!   process stops reconciling and its client refuses every write;
//! * `t + lease_duration`: only now may another candidate take the Lease
//!   (candidates compare `renewTime + leaseDurationSeconds` with their clock).
//!
//! So a leader stops before anyone else can start, as long as the clocks of
//! two candidates differ by less than `lease_duration - renew_deadline` (the
//! tolerated skew). The deadline is counted on the monotonic clock from the
//! `renewTime` the holder itself wrote, so a paused process (GC, SIGSTOP,
//! partition) finds its deadline passed the moment it runs again, and its
//! fenced client refuses to write before any other code of it could.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::watcher;
use kube::{Api, Client};
use kube_lease_manager::{LeaseManagerBuilder, LeaseParams};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::error::{Error, Result};

/// Whether this process may act as the leader now. Cheap to clone and check.
#[derive(Clone, Debug)]
pub struct Leadership {
    always: bool,
    deadline: Arc<Mutex<Option<Instant>>>,
}

impl Leadership {
    /// No election: always the leader (one replica, or tests).
    pub fn always() -> Self {
        Self { always: true, deadline: Default::default() }
    }

    /// Elected: not the leader until a renewal is observed.
    pub fn elected() -> Self {
        Self { always: false, deadline: Default::default() }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.deadline.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True while the renew deadline has not passed.
    pub fn is_leading(&self) -> bool {
        self.always || self.slot().is_some_and(|d| Instant::now() < d)
    }

    /// The current deadline (elected mode).
    pub fn deadline(&self) -> Option<Instant> {
        self.slot().filter(|d| Instant::now() < *d)
    }

    fn set(&self, deadline: Option<Instant>) {
        *self.slot() = deadline;
    }
}

/// Timings of the election, all on the holder's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub renew_interval: Duration,
}

impl Timings {
    /// `renew_interval < renew_deadline < lease_duration`, whole seconds (the Lease's unit).
    pub fn validate(&self) -> std::result::Result<(), String> {
        let secs = |d: Duration| d.as_secs() > 0 && d.subsec_nanos() == 0;
        if !(secs(self.lease_duration) && secs(self.renew_deadline) && secs(self.renew_interval)) {
            return Err("lease durations must be whole, positive seconds".into());
        }
        if self.renew_interval >= self.renew_deadline {
            return Err("--renew-interval-secs must be below --renew-deadline-secs".into());
        }
        if self.renew_deadline >= self.lease_duration {
            return Err("--renew-deadline-secs must be below --lease-duration-secs".into());
        }
        Ok(())
    }

    /// Clock skew between candidates that cannot make two leaders overlap.
    pub fn tolerated_skew(&self) -> Duration {
        self.lease_duration - self.renew_deadline
    }
}

/// The deadline of a term whose last renewal wrote `renew_time` (holder's
/// wall clock), as a monotonic instant: `renew_time + renew_deadline`.
pub fn deadline_for(
    renew_time: SystemTime,
    renew_deadline: Duration,
    now: SystemTime,
    now_mono: Instant,
) -> Option<Instant> {
    let end = renew_time.checked_add(renew_deadline)?;
    end.duration_since(now).ok().map(|left| now_mono + left)
}

/// The Lease, from the holder's point of view: the deadline it grants us.
fn deadline_from(lease: &Lease, identity: &str, timings: &Timings) -> Option<Instant> {
    let spec = lease.spec.as_ref()?;
    if spec.holder_identity.as_deref() != Some(identity) {
        return None;
    }
    let renew: SystemTime = spec.renew_time.as_ref()?.0.into();
    deadline_for(renew, timings.renew_deadline, SystemTime::now(), Instant::now())
}

/// A running election: `leading` turns true when this process holds the
/// Lease (and its renew deadline has not passed), false when it must stop.
pub struct Elector {
    pub leading: watch::Receiver<bool>,
    pub leadership: Leadership,
    task: tokio::task::JoinHandle<()>,
    stop: watch::Sender<bool>,
}

impl Elector {
    /// Starts campaigning for Lease `namespace/name` as `identity`.
    pub async fn start(client: Client, namespace: &str, name: &str, identity: &str, timings: Timings) -> Result<Self> {
        timings.validate().map_err(Error::LeaderElection)?;
        let params = LeaseParams::new(
            identity,
            timings.lease_duration.as_secs(),
            // The lease manager renews `grace` seconds before the term ends.
            (timings.lease_duration - timings.renew_interval).as_secs(),
        )
        .with_field_manager(format!("{}-{identity}", crate::names::FIELD_MANAGER));
        let manager = LeaseManagerBuilder::new(client.clone(), name)
            .with_namespace(namespace)
            .with_parameters(params)
            .build()
            .await
            .map_err(|e| Error::LeaderElection(e.to_string()))?;
        let leadership = Leadership::elected();
        let (leading_tx, leading) = watch::channel(false);
        let (stop, stop_rx) = watch::channel(false);
        let lease_api: Api<Lease> = Api::namespaced(client, namespace);
        let task = tokio::spawn(campaign(
            manager,
            lease_api,
            name.to_string(),
            identity.to_string(),
            timings,
            leadership.clone(),
            leading_tx,
            stop_rx,
        ));
        Ok(Self { leading, leadership, task, stop })
    }

    /// Stops campaigning; a held Lease is released so another replica takes over at once.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

#[allow(clippy::too_many_arguments)]
async fn campaign(
    manager: kube_lease_manager::LeaseManager,
    lease_api: Api<Lease>,
    name: String,
    identity: String,
    timings: Timings,
    leadership: Leadership,
    leading_tx: watch::Sender<bool>,
    mut stop_rx: watch::Receiver<bool>,
) {
    let (mut held, manager_task) = manager.watch().await;
    let mut lease = watcher::watch_object(lease_api, &name).boxed();
    let mut holder = *held.borrow();
    let mut lease_deadline: Option<Instant> = None;
    loop {
        let deadline = if holder { lease_deadline } else { None };
        leadership.set(deadline);
        let now_leading = deadline.is_some_and(|d| Instant::now() < d);
        if *leading_tx.borrow() != now_leading {
            info!(%identity, leading = now_leading, "leadership changed");
            let _ = leading_tx.send(now_leading);
        }
        let wake =
            deadline.filter(|d| *d > Instant::now()).unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            _ = stop_rx.changed() => break,
            r = held.changed() => {
                if r.is_err() {
                    warn!(%identity, "the lease manager stopped");
                    break;
                }
                holder = *held.borrow_and_update();
            }
            ev = lease.next() => match ev {
                Some(Ok(l)) => lease_deadline = l.and_then(|l| deadline_from(&l, &identity, &timings)),
                Some(Err(e)) => warn!(error = %e, "watching the leader Lease failed"),
                None => break,
            },
            _ = tokio::time::sleep_until(wake) => {}
        }
    }
    leadership.set(None);
    let _ = leading_tx.send(false);
    // Dropping the receiver makes the lease manager release the Lease and end.
    drop(held);
    match manager_task.await {
        Ok(Ok(_)) => info!(%identity, "released the leader Lease"),
        Ok(Err(e)) => warn!(error = %e, "releasing the leader Lease failed"),
        Err(e) => warn!(error = %e, "lease manager task failed"),
    }
}

/// A client layer refusing writes (anything but GET) while this process is
/// not the leader. Hand-written (a few lines of `tower::Service`) because it
/// needs the request's method and a live check of [`Leadership`] per call.
#[derive(Clone)]
pub struct FenceLayer(pub Leadership);

impl<S> tower::Layer<S> for FenceLayer {
    type Service = Fence<S>;
    fn layer(&self, inner: S) -> Fence<S> {
        Fence { inner, leadership: self.0.clone() }
    }
}

/// See [`FenceLayer`].
#[derive(Clone)]
pub struct Fence<S> {
    inner: S,
    leadership: Leadership,
}

/// The error a fenced write fails with.
#[derive(Debug, thiserror::Error)]
#[error("not the leader: write refused")]
pub struct NotLeader;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<S, B> tower::Service<http::Request<B>> for Fence<S>
where
    S: tower::Service<http::Request<B>>,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = std::result::Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<std::result::Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.method() != http::Method::GET && !self.leadership.is_leading() {
            return Box::pin(std::future::ready(Err(Box::new(NotLeader) as BoxError)));
        }
        let fut = self.inner.call(req);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

/// A client for the reconciler whose writes are fenced by `leadership`.
pub async fn fenced_client(leadership: &Leadership) -> Result<Client> {
    let config = kube::Config::infer().await.map_err(|e| Error::LeaderElection(e.to_string()))?;
    Ok(kube::client::ClientBuilder::try_from(config)?.with_layer(&FenceLayer(leadership.clone())).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timings_and_deadlines() {
        let t = |d, r, i| Timings {
            lease_duration: Duration::from_secs(d),
            renew_deadline: Duration::from_secs(r),
            renew_interval: Duration::from_secs(i),
        };
        assert!(t(15, 10, 5).validate().is_ok());
        assert_eq!(t(15, 10, 5).tolerated_skew(), Duration::from_secs(5));
        assert!(t(15, 15, 5).validate().is_err());
        assert!(t(15, 10, 10).validate().is_err());
        assert!(t(0, 0, 0).validate().is_err());

        let now = SystemTime::now();
        let mono = Instant::now();
        let renewed = now - Duration::from_secs(4);
        let d = deadline_for(renewed, Duration::from_secs(10), now, mono).unwrap();
        assert_eq!(d - mono, Duration::from_secs(6));
        assert!(deadline_for(now - Duration::from_secs(11), Duration::from_secs(10), now, mono).is_none());
    }

    #[test]
    fn leadership_follows_the_deadline() {
        let l = Leadership::elected();
        assert!(!l.is_leading());
        l.set(Some(Instant::now() + Duration::from_secs(5)));
        assert!(l.is_leading());
        l.set(Some(Instant::now() - Duration::from_millis(1)));
        assert!(!l.is_leading());
        assert!(Leadership::always().is_leading());
    }
}

//! Process orchestration: HTTP server, leader election, controller, graceful shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use kube::Client;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::http::{self, HttpState};
use crate::leader::{self, LeaseLock};
use crate::metrics::Metrics;
use crate::reconcile::Context;

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {},
                    _ = term.recv() => {},
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Runs the controller process until a shutdown signal (or lost leadership).
pub async fn run(config: Config) -> Result<()> {
    let client = Client::try_default().await?;
    let metrics = Metrics::new();
    let ready = Arc::new(AtomicBool::new(false));
    let identity = config.identity();

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        info!("shutdown signal received");
        let _ = stop_tx.send(true);
    });

    let http_state = HttpState { metrics: metrics.clone(), ready: ready.clone() };
    let http_addr = config.http_addr;
    let http_stop = wait_true(stop_rx.clone());
    let http_task = tokio::spawn(async move {
        if let Err(e) = http::serve(http_addr, http_state, http_stop).await {
            warn!(error = %e, "http server failed");
        }
    });
    // Fail fast on an unreachable API server before reporting ready.
    client.apiserver_version().await?;
    ready.store(true, Ordering::Relaxed);

    let ctx =
        Arc::new(Context::new(client.clone(), config.default_image.clone(), metrics.clone(), Some(identity.clone())));

    let mut lost = false;
    if config.leader_election {
        let lock = LeaseLock::new(
            client.clone(),
            &config.lease_namespace(),
            &config.lease_name,
            &identity,
            config.lease_duration(),
        );
        let (mut leading, elector) = lock.clone().spawn(config.renew_interval());
        info!(%identity, lease = %config.lease_name, "waiting for leadership");
        let mut stop = stop_rx.clone();
        tokio::select! {
            r = leader::wait_for_leadership(&mut leading) => r?,
            _ = stop.wait_for(|v| *v) => {
                elector.abort();
                let _ = http_task.await;
                return Ok(());
            }
        }
        metrics.leader.set(1);
        info!(%identity, "acquired leadership; starting controller");
        let (lost_tx, lost_rx) = watch::channel(false);
        let lost_watch = leading.clone();
        tokio::spawn(async move {
            leader::leadership_lost(lost_watch).await;
            let _ = lost_tx.send(true);
        });
        let stop_or_lost = {
            let a = wait_true(stop_rx.clone());
            let b = wait_true(lost_rx.clone());
            async move {
                tokio::select! { _ = a => {}, _ = b => {} }
            }
        };
        crate::controller::run(ctx, config.namespace.clone(), stop_or_lost).await;
        lost = *lost_rx.borrow();
        elector.abort();
        metrics.leader.set(0);
        if !lost && let Err(e) = lock.release().await {
            warn!(error = %e, "failed to release the Lease");
        }
    } else {
        metrics.leader.set(1);
        crate::controller::run(ctx, config.namespace.clone(), wait_true(stop_rx.clone())).await;
    }
    ready.store(false, Ordering::Relaxed);
    http_task.abort();
    if lost {
        return Err(Error::LeaderElection("leadership lost; exiting so a new leader takes over".into()));
    }
    info!("controller stopped");
    Ok(())
}

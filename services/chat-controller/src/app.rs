//! Process orchestration: HTTP server, leader election, controller, graceful shutdown.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use kube::Client;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::builders::servicemonitor;
use crate::config::Config;
use crate::error::Result;
use crate::http::{self, HttpState};
use crate::image::ImageResolver;
use crate::leader::{self, Elector};
use crate::metrics::Metrics;
use crate::reconcile::{Context, Options};

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

/// Runs the controller process until a shutdown signal. With leader
/// election, a replica that loses the Lease stops reconciling (before anyone
/// else can start, see `leader.rs`) and campaigns again as a standby.
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

    let options = Options {
        default_image: config.default_image.clone(),
        resync: Duration::from_secs(config.resync_secs),
        controller_namespace: config.own_namespace(),
        service_monitor: servicemonitor::api_resource(),
        readiness_interval: crate::reconcile::READINESS_INTERVAL,
        concurrency: config.concurrency,
    };
    let images = ImageResolver::new(Duration::from_secs(config.image_resolve_secs), config.insecure_registries.clone());
    let scopes = config.scopes();

    if config.leader_election {
        let lease_ns = config.lease_namespace();
        let elector =
            Elector::start(client.clone(), &lease_ns, &config.lease_name, &identity, config.timings()).await?;
        let fenced = leader::fenced_client(&elector.leadership).await?;
        let ctx = Arc::new(
            Context::new(fenced, config.default_image.clone(), metrics.clone(), Some(identity.clone()))
                .with_options(options)
                .with_images(images)
                .with_leadership(elector.leadership.clone()),
        );
        info!(%identity, lease = %config.lease_name, namespace = %lease_ns, "campaigning for leadership");
        let mut leading = elector.leading.clone();
        let mut stop = stop_rx.clone();
        loop {
            tokio::select! {
                r = leading.wait_for(|l| *l) => if r.is_err() { break },
                _ = stop.wait_for(|s| *s) => break,
            }
            metrics.leader.set(1);
            info!(%identity, "leading: controller started");
            // Stop on a shutdown signal or as soon as leadership ends.
            let (run_stop_tx, run_stop_rx) = watch::channel(false);
            let mut l = leading.clone();
            let mut s = stop.clone();
            let watcher = tokio::spawn(async move {
                tokio::select! {
                    _ = l.wait_for(|l| !*l) => {},
                    _ = s.wait_for(|s| *s) => {},
                }
                let _ = run_stop_tx.send(true);
            });
            crate::controller::run_scopes(ctx.clone(), scopes.clone(), run_stop_rx).await;
            watcher.abort();
            metrics.leader.set(0);
            info!(%identity, "leading: controller stopped");
            if *stop.borrow() {
                break;
            }
            warn!(%identity, "leadership lost: standing by");
        }
        elector.stop().await;
    } else {
        metrics.leader.set(1);
        let ctx = Arc::new(
            Context::new(client.clone(), config.default_image.clone(), metrics.clone(), Some(identity.clone()))
                .with_options(options)
                .with_images(images),
        );
        crate::controller::run_scopes(ctx, scopes, stop_rx.clone()).await;
    }
    ready.store(false, Ordering::Relaxed);
    http_task.abort();
    info!("controller stopped");
    Ok(())
}

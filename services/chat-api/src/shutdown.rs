//! Graceful shutdown. On SIGTERM (or Ctrl-C):
//!
//! 1. readiness fails at once (`/readyz` answers 503), so Kubernetes stops
//!    sending new work; responses ask keep-alive clients to reconnect
//!    (`Connection: close`), which sends them to other pods;
//! 2. for `SHUTDOWN_DRAIN_SECS` new connections are still accepted and served
//!    (load balancers and kube-proxy take a while to drop the pod);
//! 3. then the listeners close (new connections are refused) and in-flight
//!    requests get `SHUTDOWN_GRACE_SECS` to finish;
//! 4. then the process exits 0, cutting whatever still runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// Whether the process is shutting down; shared by the probes and the servers.
#[derive(Debug, Default)]
pub struct Lifecycle {
    draining: AtomicBool,
}

impl Lifecycle {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// True from SIGTERM on.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }
}

/// Middleware: while draining, every response closes its connection.
pub async fn close_connections_when_draining(
    State(lifecycle): State<Arc<Lifecycle>>,
    request: Request,
    next: Next,
) -> Response {
    let mut response = next.run(request).await;
    if lifecycle.draining() {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

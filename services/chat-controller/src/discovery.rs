//! Is the ServiceMonitor API served? Asked once per reconcile before (a
//! discovery request each time); now answered from a watch of the one
//! CustomResourceDefinition, so installing the Prometheus Operator CRDs is
//! noticed at once, without a restart and without polling. Where the
//! controller may not read CRDs (403), it falls back to a discovery request
//! every minute.

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::ApiResource;
use kube::runtime::watcher;
use kube::{Api, Client};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::error::Result;

/// Name of the CRD serving `ar`.
pub fn crd_name(ar: &ApiResource) -> String {
    format!("{}.{}", ar.plural, ar.group)
}

/// One discovery request: does the API server serve `ar`?
pub async fn served(client: &Client, ar: &ApiResource) -> Result<bool> {
    match client.list_api_group_resources(&ar.api_version).await {
        Ok(list) => Ok(list.resources.iter().any(|r| r.name == ar.plural)),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether `crd` is established and serves `version`.
pub fn crd_serves(crd: &CustomResourceDefinition, version: &str) -> bool {
    let established = crd
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Established" && c.status == "True"));
    established && crd.spec.versions.iter().any(|v| v.name == version && v.served)
}

/// A channel telling whether `ar` is served, kept current by a task that
/// ends when every receiver is gone.
pub fn watch_served(client: Client, ar: ApiResource) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let name = crd_name(&ar);
        let mut stream = watcher::watch_object(crds, &name).boxed();
        loop {
            tokio::select! {
                _ = tx.closed() => return,
                ev = stream.next() => match ev {
                    Some(Ok(crd)) => {
                        let now = crd.as_ref().is_some_and(|c| crd_serves(c, &ar.version));
                        if *tx.borrow() != now {
                            info!(crd = %name, served = now, "ServiceMonitor API availability changed");
                        }
                        let _ = tx.send(now);
                    }
                    Some(Err(watcher::Error::InitialListFailed(kube::Error::Api(s)))) if s.code == 403 => {
                        warn!(crd = %name, "may not read CRDs: asking discovery every minute instead");
                        break;
                    }
                    Some(Err(e)) => warn!(crd = %name, error = %e, "watching the CRD failed"),
                    None => break,
                },
            }
        }
        loop {
            match served(&client, &ar).await {
                Ok(now) => {
                    let _ = tx.send(now);
                }
                Err(e) => warn!(error = %e, "ServiceMonitor discovery failed"),
            }
            tokio::select! {
                _ = tx.closed() => return,
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            }
        }
    });
    rx
}

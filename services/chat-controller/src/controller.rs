//! Wiring of the `kube::runtime::Controller`: the ChatBackend watch, the owned
//! objects (ServiceMonitors too, when their CRD is installed at start-up), and
//! the Secrets referenced by ChatBackends.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::DynamicObject;
use kube::core::PartialObjectMeta;
use kube::runtime::Controller;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tracing::{debug, info, warn};

use crate::builders::servicemonitor;
use crate::crd::ChatBackend;
use crate::names::labels;
use crate::reconcile::{Context, error_policy, reconcile, service_monitor_crd_installed};

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// ChatBackends in `store` that reference the Secret `namespace/name`.
pub fn backends_referencing(store: &Store<ChatBackend>, namespace: &str, name: &str) -> Vec<ObjectRef<ChatBackend>> {
    store
        .state()
        .iter()
        .filter(|cb| cb.namespace().as_deref() == Some(namespace))
        .filter(|cb| cb.spec.secret_refs().iter().any(|r| r.name == name))
        .map(|cb| ObjectRef::from(cb.as_ref()))
        .collect()
}

/// Whether the ServiceMonitor CRD is served, asked a few times so that a
/// transient discovery error at start-up does not lose the watch.
async fn watch_service_monitors(client: &Client) -> bool {
    let mut delay = Duration::from_millis(500);
    for attempt in 1..=3 {
        match service_monitor_crd_installed(client).await {
            Ok(installed) => return installed,
            Err(e) => {
                warn!(error = %e, attempt, "ServiceMonitor discovery failed");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
    }
    false
}

/// Runs the controller until `shutdown` completes (in-flight reconciles finish).
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let owned = watcher::Config::default().labels(labels::MANAGED_SELECTOR);
    let controller = Controller::new(api::<ChatBackend>(&client, ns), watcher::Config::default().any_semantic());
    let store = controller.store();

    // Secrets: metadata only (`Api<PartialObjectMeta<_>>` makes metadata-only
    // requests), so secret values never enter the controller's cache.
    let secret_store = store.clone();

    // Keep the ChatBackends-by-Ready gauge current.
    let gauge_store = store.clone();
    let metrics = ctx.metrics.clone();
    let gauge = tokio::spawn(async move {
        loop {
            let state = gauge_store.state();
            metrics.set_backends(state.iter().map(|cb| cb.as_ref()));
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    });

    let mut controller = controller
        .owns(api::<ConfigMap>(&client, ns), owned.clone())
        .owns(api::<Job>(&client, ns), owned.clone())
        .owns(api::<Deployment>(&client, ns), owned.clone())
        .owns(api::<Service>(&client, ns), owned.clone())
        .owns(api::<PodDisruptionBudget>(&client, ns), owned.clone());

    // ServiceMonitors (a dynamic type): watched only when the CRD is served at
    // start-up; otherwise the watch would fail forever. Installing the CRD later
    // needs a restart for the watch (reconciles still create ServiceMonitors).
    if watch_service_monitors(&client).await {
        let ar = servicemonitor::api_resource();
        let sm_api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
            None => Api::all_with(client.clone(), &ar),
        };
        controller = controller.owns_with(sm_api, ar, owned);
        info!("watching ServiceMonitors");
    } else {
        info!("ServiceMonitor CRD not installed: not watching ServiceMonitors");
    }

    controller
        .watches(api::<PartialObjectMeta<Secret>>(&client, ns), watcher::Config::default(), move |s| {
            backends_referencing(&secret_store, &s.namespace().unwrap_or_default(), &s.name_any())
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => debug!(chatbackend = %obj, "reconciled"),
                Err(e) => warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
    gauge.abort();
}

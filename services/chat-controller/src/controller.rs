//! Wiring of the `kube::runtime::Controller` for one watch scope (all
//! namespaces, or one): the ChatBackend watch, a reflector store per owned
//! kind (their events trigger the owner's reconcile, and reconciles read them
//! instead of sending GETs), the managed pods, the Secrets referenced by
//! ChatBackends (metadata only), and the ServiceMonitors once their API is
//! served (noticed from a watch of the CRD, without a restart).

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::DynamicObject;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::cache::{Reader, Stores};
use crate::crd::ChatBackend;
use crate::discovery;
use crate::names::labels;
use crate::reconcile::{Context, error_policy, reconcile};

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A store of `K` and the stream that fills it (its items, deleted ones
/// included, trigger reconciles). Managed fields are dropped from cached
/// objects: nothing reads them.
fn reflect<K>(
    client: &Client,
    namespace: Option<&str>,
    wc: watcher::Config,
) -> (Store<K>, impl Stream<Item = Result<K, watcher::Error>> + Send + 'static)
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let stream = watcher(api::<K>(client, namespace), wc)
        .default_backoff()
        .modify(|o: &mut K| o.meta_mut().managed_fields = None)
        .reflect(writer)
        .touched_objects();
    (reader, stream)
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

/// The ChatBackend a managed pod belongs to (its `app.kubernetes.io/instance` label).
fn pod_owner(pod: &Pod) -> Option<ObjectRef<ChatBackend>> {
    let instance = pod.labels().get(labels::INSTANCE)?;
    Some(ObjectRef::new(instance).within(&pod.namespace()?))
}

/// Runs the controller for `namespace` (all namespaces when `None`) until
/// `shutdown` completes (in-flight reconciles finish).
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let ns = namespace.as_deref();
    let owned = || watcher::Config::default().labels(labels::MANAGED_SELECTOR);
    let controller = Controller::new(api::<ChatBackend>(&client, ns), watcher::Config::default().any_semantic())
        .with_config(ControllerConfig::default().concurrency(ctx.options.concurrency));
    let store = controller.store();

    let (configmaps, cm_stream) = reflect::<ConfigMap>(&client, ns, owned());
    let (jobs, job_stream) = reflect::<Job>(&client, ns, owned());
    let (deployments, deploy_stream) = reflect::<Deployment>(&client, ns, owned());
    let (services, svc_stream) = reflect::<Service>(&client, ns, owned());
    let (pdbs, pdb_stream) = reflect::<PodDisruptionBudget>(&client, ns, owned());
    let (hpas, hpa_stream) = reflect::<HorizontalPodAutoscaler>(&client, ns, owned());
    let (network_policies, np_stream) = reflect::<NetworkPolicy>(&client, ns, owned());
    let (service_accounts, sa_stream) = reflect::<ServiceAccount>(&client, ns, owned());
    let (pods, pod_stream) = reflect::<Pod>(&client, ns, owned());

    // Secrets: metadata only (`PartialObjectMeta`), so their values never enter the cache.
    let (secrets, secret_writer) = reflector::store::<PartialObjectMeta<Secret>>();
    let secret_stream = watcher(api::<PartialObjectMeta<Secret>>(&client, ns), watcher::Config::default())
        .default_backoff()
        .modify(|o: &mut PartialObjectMeta<Secret>| o.metadata.managed_fields = None)
        .reflect(secret_writer)
        .touched_objects();

    // ServiceMonitors: watched from the moment their CRD serves them (the
    // watch would fail for ever before that).
    let ar = ctx.options.service_monitor.clone();
    let sm_served = discovery::watch_served(client.clone(), ar.clone());
    let sm_writer = reflector::store::Writer::<DynamicObject>::new(ar.clone());
    let service_monitors = sm_writer.as_reader();
    let sm_api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    // A task starts the watch once the API is served and forwards its events
    // (the watch would fail for ever before that).
    let (sm_tx, sm_rx) = futures::channel::mpsc::unbounded::<Result<DynamicObject, watcher::Error>>();
    let mut served = sm_served.clone();
    let sm_task = tokio::spawn(async move {
        if served.wait_for(|s| *s).await.is_err() {
            return;
        }
        info!("ServiceMonitor API served: watching ServiceMonitors");
        let events = watcher(sm_api, owned()).default_backoff().reflect(sm_writer).touched_objects();
        futures::pin_mut!(events);
        while let Some(ev) = events.next().await {
            if sm_tx.unbounded_send(ev).is_err() {
                return;
            }
        }
    });
    let sm_stream = sm_rx;
    // When the ServiceMonitor API appears (or goes), every ChatBackend is reconciled.
    let sm_changes = futures::stream::unfold(sm_served.clone(), |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    });

    let stores = Stores {
        configmaps,
        jobs,
        deployments,
        services,
        pdbs,
        hpas,
        network_policies,
        service_accounts,
        pods,
        secrets,
        service_monitors,
        service_monitor_api: sm_served,
    };
    let ctx = Arc::new((*ctx).clone().with_reader(Reader::Cached(Arc::new(stores))));

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

    let secret_store = store.clone();
    controller
        .owns_stream(cm_stream)
        .owns_stream(job_stream)
        .owns_stream(deploy_stream)
        .owns_stream(svc_stream)
        .owns_stream(pdb_stream)
        .owns_stream(hpa_stream)
        .owns_stream(np_stream)
        .owns_stream(sa_stream)
        .owns_stream_with(sm_stream, ar)
        .watches_stream(pod_stream, |p| pod_owner(&p))
        .watches_stream(secret_stream, move |s| {
            backends_referencing(&secret_store, &s.namespace().unwrap_or_default(), &s.name_any())
        })
        .reconcile_all_on(sm_changes)
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
    sm_task.abort();
}

/// Runs one controller per scope (see [`run`]) until `stop` turns true.
pub async fn run_scopes(ctx: Arc<Context>, scopes: Vec<Option<String>>, stop: watch::Receiver<bool>) {
    let runs = scopes.into_iter().map(|ns| {
        let mut stop = stop.clone();
        run(ctx.clone(), ns, async move {
            let _ = stop.wait_for(|s| *s).await;
        })
    });
    futures::future::join_all(runs).await;
}

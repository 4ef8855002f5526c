//! The running controller (watches included), scoped to the test's namespace:
//! drift is repaired, a rotated Secret triggers a reconcile, a missing Secret
//! recovers when it appears, a deleted ServiceMonitor comes back through its
//! watch, and without the ServiceMonitor CRD that watch is skipped.

mod common;

use std::time::Duration;

use chat_controller::conditions::{self as ct, reasons};
use chat_controller::crd::ChatBackend;
use chat_controller::names::annotations;
use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::oneshot;

const NAME: &str = "demo";
const WAIT: Duration = Duration::from_secs(30);

fn hash(d: &Deployment) -> Option<String> {
    d.spec.as_ref()?.template.metadata.as_ref()?.annotations.as_ref()?.get(annotations::CONFIG_HASH).cloned()
}

#[tokio::test]
async fn running_controller_repairs_drift_and_follows_secrets() {
    let client = client().await;
    let ns_guard = TestNs::new(&client, "cc-ctrl").await;
    let ns = ns_guard.name.clone();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let ctx = context(&client);
    let run = tokio::spawn(chat_controller::controller::run(ctx, Some(ns.clone()), async move {
        let _ = stop_rx.await;
    }));

    // Created before its database Secret: Degraded, then recovers via the Secret watch.
    put_secret(&client, &ns, "api", "key", "0123456789abcdef-internal").await;
    create_backend(&client, &ns, &mock_backend(NAME, 1)).await;
    let backends: Api<ChatBackend> = Api::namespaced(client.clone(), &ns);
    let b = backends.clone();
    eventually("Degraded/SecretNotFound", WAIT, || {
        let b = b.clone();
        async move {
            let cb = b.get(NAME).await.ok()?;
            (cb.status.is_some() && condition(&cb, ct::DEGRADED) == (ct::TRUE, reasons::SECRET_NOT_FOUND)).then_some(())
        }
    })
    .await;
    put_secret(&client, &ns, "db", "url", "postgres://u:p@db/chat").await;
    let job_name = first_migration_job(&client, &ns, WAIT).await;

    // Job success (status written by hand) -> the Job watch triggers -> Deployment.
    succeed_job(&client, &ns, &job_name).await;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let d = deps.clone();
    let h0 = eventually("Deployment after migration", WAIT, || {
        let d = d.clone();
        async move { hash(&d.get_opt(NAME).await.ok()??) }
    })
    .await;

    // Drift: delete the Service by hand -> recreated.
    let services: Api<Service> = Api::namespaced(client.clone(), &ns);
    let old_uid = services.get(NAME).await.unwrap().uid();
    services.delete(NAME, &DeleteParams::default()).await.unwrap();
    let s = services.clone();
    eventually("Service recreated", WAIT, || {
        let s = s.clone();
        let old_uid = old_uid.clone();
        async move { (s.get_opt(NAME).await.ok()??.uid() != old_uid).then_some(()) }
    })
    .await;

    // Drift: change the Deployment's replicas by hand -> restored.
    deps.patch(NAME, &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 5}}))).await.unwrap();
    let d = deps.clone();
    eventually("Deployment replicas restored", WAIT, || {
        let d = d.clone();
        async move { (d.get(NAME).await.ok()?.spec?.replicas == Some(1)).then_some(()) }
    })
    .await;

    // Secret rotation -> the Secret watch triggers -> new pod-template hash.
    put_secret(&client, &ns, "db", "url", "postgres://u:rotated@db/chat").await;
    let d = deps.clone();
    eventually("new config hash after Secret rotation", WAIT, || {
        let d = d.clone();
        let h0 = h0.clone();
        async move { (hash(&d.get(NAME).await.ok()?)? != h0).then_some(()) }
    })
    .await;

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(20), run).await.expect("controller shuts down gracefully").unwrap();
}

fn backend_with_service_monitor() -> ChatBackend {
    let mut cb = mock_backend(NAME, 1);
    cb.spec.monitoring = serde_json::from_value(json!({"serviceMonitor": {"enabled": true}})).unwrap();
    cb
}

/// Runs the controller (scoped to `ns`) with `client`; returns the stop handle and the task.
fn start(client: &kube::Client, ns: &str) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let run = tokio::spawn(chat_controller::controller::run(context(client), Some(ns.to_string()), async move {
        let _ = stop_rx.await;
    }));
    (stop_tx, run)
}

async fn stop(stop_tx: oneshot::Sender<()>, run: tokio::task::JoinHandle<()>) {
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(20), run).await.expect("controller shuts down gracefully").unwrap();
}

#[tokio::test]
async fn running_controller_recreates_a_deleted_service_monitor() {
    let client = client().await;
    let ns_guard = TestNs::new(&client, "cc-smwatch").await;
    let ns = ns_guard.name.clone();
    put_secret(&client, &ns, "db", "url", "postgres://u:p@db/chat").await;
    put_secret(&client, &ns, "api", "key", "0123456789abcdef-internal").await;
    create_backend(&client, &ns, &backend_with_service_monitor()).await;
    let (stop_tx, run) = start(&client, &ns);

    // Bring the ChatBackend to Ready so that nothing else is pending.
    let job_name = first_migration_job(&client, &ns, WAIT).await;
    succeed_job(&client, &ns, &job_name).await;
    let deps: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    let d = deps.clone();
    eventually("Deployment", WAIT, || {
        let d = d.clone();
        async move { d.get_opt(NAME).await.ok()? }
    })
    .await;
    roll_out(&client, &ns, NAME).await;
    let backends: Api<ChatBackend> = Api::namespaced(client.clone(), &ns);
    let b = backends.clone();
    eventually("Ready", WAIT, || {
        let b = b.clone();
        async move {
            let cb = b.get(NAME).await.ok()?;
            (cb.status.is_some() && condition(&cb, ct::READY) == (ct::TRUE, reasons::AVAILABLE)).then_some(())
        }
    })
    .await;
    // Let the reconciles triggered by the controller's own writes settle.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Delete the ServiceMonitor by hand: only its watch can trigger the repair
    // within the wait (the periodic resync is 5 minutes).
    let sms: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &chat_controller::builders::servicemonitor::api_resource());
    let old_uid = sms.get(NAME).await.expect("ServiceMonitor").uid();
    sms.delete(NAME, &DeleteParams::default()).await.unwrap();
    let s = sms.clone();
    eventually("ServiceMonitor recreated", WAIT, || {
        let s = s.clone();
        let old_uid = old_uid.clone();
        async move { (s.get_opt(NAME).await.ok()??.uid() != old_uid).then_some(()) }
    })
    .await;

    // Drift in its spec is repaired as well.
    sms.patch(NAME, &PatchParams::default(), &Patch::Merge(json!({"spec": {"endpoints": [{"port": "http"}]}})))
        .await
        .unwrap();
    let s = sms.clone();
    eventually("ServiceMonitor spec restored", WAIT, || {
        let s = s.clone();
        async move { (s.get(NAME).await.ok()?.data["spec"]["endpoints"][0]["port"] == "metrics").then_some(()) }
    })
    .await;

    stop(stop_tx, run).await;
}

#[tokio::test]
async fn a_service_monitor_crd_installed_later_is_noticed_without_a_restart() {
    // A ServiceMonitor look-alike API in a group of its own, so the test can
    // install its CRD while the controller runs (the real one is shared).
    let admin = client().await;
    let ns_guard = TestNs::new(&admin, "cc-smlate").await;
    let ns = ns_guard.name.clone();
    let group = format!("{}.colloquy.test", ns.replace('-', ""));
    let ar = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk(&group, "v1", "ServiceMonitor"),
        "servicemonitors",
    );
    put_secret(&admin, &ns, "db", "url", "postgres://u:p@db/chat").await;
    put_secret(&admin, &ns, "api", "key", "0123456789abcdef-internal").await;
    create_backend(&admin, &ns, &backend_with_service_monitor()).await;
    let mut options = chat_controller::reconcile::Options::new("registry.test/chat-api:default");
    options.service_monitor = ar.clone();
    let ctx = std::sync::Arc::new(
        chat_controller::reconcile::Context::new(
            admin.clone(),
            "registry.test/chat-api:default",
            Default::default(),
            None,
        )
        .with_options(options),
    );
    let (stop_tx, run) = start_controller(ctx, &ns);

    // Without the CRD: the condition says so (and what to do); no ServiceMonitor watch fails for ever.
    let cb =
        wait_condition(&admin, &ns, NAME, ct::SERVICE_MONITOR, (ct::FALSE, reasons::SERVICE_MONITOR_CRD_MISSING)).await;
    let msg = &cb.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == ct::SERVICE_MONITOR).unwrap().message;
    assert!(msg.contains("install the Prometheus Operator CRDs"), "{msg}");

    // The CRD appears: noticed from its watch, no restart, no resync wait.
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(admin.clone());
    let crd = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("servicemonitors.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": "servicemonitors", "singular": "servicemonitor", "kind": "ServiceMonitor"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))
    .unwrap();
    crds.create(&Default::default(), &crd).await.unwrap();
    wait_condition(&admin, &ns, NAME, ct::SERVICE_MONITOR, (ct::TRUE, reasons::SERVICE_MONITOR_CREATED)).await;
    let sms: Api<DynamicObject> = Api::namespaced_with(admin.clone(), &ns, &ar);
    assert_eq!(sms.get(NAME).await.expect("ServiceMonitor").data["spec"]["endpoints"][0]["port"], "metrics");
    stop(stop_tx, run).await;
    let _ = crds.delete(&format!("servicemonitors.{group}"), &DeleteParams::default()).await;
}

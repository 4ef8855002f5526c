//! The running controller (watches included), scoped to the test's namespace:
//! drift is repaired, a rotated Secret triggers a reconcile, a missing Secret
//! recovers when it appears.

mod common;

use std::time::Duration;

use chat_controller::crd::ChatBackend;
use chat_controller::names::{annotations, conditions as ct, reasons};
use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, Patch, PatchParams};
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
    let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
    let j = jobs.clone();
    let job_name = eventually("migration Job after the Secret appears", WAIT, || {
        let j = j.clone();
        async move { j.list(&Default::default()).await.ok()?.items.first().map(|j| j.name_any()) }
    })
    .await;

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

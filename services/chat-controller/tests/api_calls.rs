//! Fewer API calls: once a ChatBackend is Ready, a reconcile of the running
//! controller reads everything from its watch caches and writes nothing.
//! Every request of the controller's client (watches aside: one long-running
//! request per kind, not per reconcile) is recorded.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chat_controller::conditions::{self as ct, reasons};
use chat_controller::crd::ChatBackend;
use chat_controller::metrics::Metrics;
use chat_controller::reconcile::Context;
use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

const NAME: &str = "demo";

#[tokio::test]
async fn a_steady_state_reconcile_sends_no_request() {
    let admin = client().await;
    let ns_guard = TestNs::new(&admin, "cc-calls").await;
    let ns = ns_guard.name.clone();
    put_secret(&admin, &ns, "db", "url", "postgres://u:p@db/chat").await;
    put_secret(&admin, &ns, "api", "key", "0123456789abcdef-internal").await;
    let mut cb = mock_backend(NAME, 2);
    cb.spec.monitoring = serde_json::from_value(json!({"serviceMonitor": {"enabled": true}})).unwrap();
    create_backend(&admin, &ns, &cb).await;

    let (recorded, log) = recording_client().await;
    let metrics = Metrics::new();
    let ctx = Arc::new(Context::new(recorded, "registry.test/chat-api:calls", metrics.clone(), None));
    let (stop_tx, run) = start_controller(ctx, &ns);

    let job = first_migration_job(&admin, &ns, Duration::from_secs(30)).await;
    succeed_job(&admin, &ns, &job).await;
    let deps: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    let d = deps.clone();
    eventually("Deployment", Duration::from_secs(30), || {
        let d = d.clone();
        async move { d.get_opt(NAME).await.ok()? }
    })
    .await;
    roll_out(&admin, &ns, NAME).await;
    wait_condition(&admin, &ns, NAME, ct::READY, (ct::TRUE, reasons::AVAILABLE)).await;
    // Let the reconciles triggered by the controller's own writes settle.
    tokio::time::sleep(Duration::from_secs(3)).await;

    log.lock().unwrap().clear();
    let before = metrics.reconciliations.get();
    // Touch the ChatBackend (an annotation: nothing to do) to trigger reconciles.
    let backends: Api<ChatBackend> = Api::namespaced(admin.clone(), &ns);
    for i in 0..5 {
        backends
            .patch(
                NAME,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {"touch": i.to_string()}}})),
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reconciles = metrics.reconciliations.get() - before;
    let requests = log.lock().unwrap().clone();
    assert!(reconciles >= 5, "only {reconciles} reconciles were triggered");
    let writes: Vec<_> = requests.iter().filter(|(m, _)| m != "GET").collect();
    assert!(writes.is_empty(), "writes at steady state: {writes:?}");
    assert!(
        requests.len() as u64 <= 2 * reconciles,
        "{} requests for {reconciles} reconciles: {requests:#?}",
        requests.len()
    );
    assert!(requests.is_empty(), "a steady-state reconcile reads only its caches: {requests:#?}");

    // Drift is still repaired from the cache: the write goes out, once.
    deps.patch(NAME, &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 5}}))).await.unwrap();
    let d = deps.clone();
    eventually("replicas restored", Duration::from_secs(20), || {
        let d = d.clone();
        async move { (d.get(NAME).await.ok()?.spec?.replicas == Some(2)).then_some(()) }
    })
    .await;
    let deployment_writes =
        log.lock().unwrap().iter().filter(|(m, u)| m == "PATCH" && u.contains("/deployments/")).count();
    assert_eq!(deployment_writes, 1, "one repair, no duplicate from a lagging cache");
    stop_controller(stop_tx, run).await;
}

/// A cold start: ChatBackends sharing their Secrets, all reconciled at once,
/// read each Secret's keys with one GET (the others wait for it).
#[tokio::test]
async fn backends_sharing_secrets_read_each_secret_once_at_a_cold_start() {
    const N: usize = 12;
    let admin = client().await;
    let ns_guard = TestNs::new(&admin, "cc-shared").await;
    let ns = ns_guard.name.clone();
    put_secret(&admin, &ns, "db", "url", "postgres://u:p@db/chat").await;
    put_secret(&admin, &ns, "api", "key", "0123456789abcdef-internal").await;
    for i in 0..N {
        create_backend(&admin, &ns, &mock_backend(&format!("shared-{i}"), 1)).await;
    }

    let (recorded, log) = recording_client().await;
    let ctx = Arc::new(Context::new(recorded, "registry.test/chat-api:calls", Metrics::new(), None));
    let (stop_tx, run) = start_controller(ctx, &ns);
    // A migration Job each: every reconcile got past its Secrets.
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(admin.clone(), &ns);
    eventually("a migration Job per ChatBackend", Duration::from_secs(60), || {
        let jobs = jobs.clone();
        async move { (jobs.list(&Default::default()).await.ok()?.items.len() >= N).then_some(()) }
    })
    .await;
    let gets = |name: &str| {
        let path = format!("/namespaces/{ns}/secrets/{name}");
        log.lock().unwrap().iter().filter(|(m, u)| m == "GET" && u.contains(&path)).count()
    };
    assert_eq!((gets("db"), gets("api")), (1, 1), "GETs of each shared Secret for {N} ChatBackends");
    stop_controller(stop_tx, run).await;
}

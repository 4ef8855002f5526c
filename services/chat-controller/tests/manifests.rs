//! The "done when" path: `manifests/` (CRD + RBAC) and `manifests/samples/mock.yaml`
//! applied to a fresh namespace, the controller running with the RBAC of its
//! ServiceAccount (impersonated), and the Ready path as rollout is simulated;
//! then the ServiceMonitor watch and the clean-up of superseded migration Jobs,
//! which need their own permissions.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chat_controller::conditions::{self as ct, reasons};
use chat_controller::crd::ChatBackend;
use chat_controller::metrics::Metrics;
use chat_controller::reconcile::Context;
use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{Scope, pinned_kind};
use kube::{Api, Client, ResourceExt};
use serde::Deserialize;
use serde_json::json;

const SA: &str = "system:serviceaccount:colloquy-system:chat-controller";

fn repo_file(rel: &str) -> String {
    let path = format!("{}/../../{rel}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

/// `kubectl apply -n ns -f` for a multi-document YAML (server-side apply).
async fn apply_yaml(client: &Client, ns: &str, text: &str) {
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = serde_yaml::Value::deserialize(doc).expect("yaml");
        if value.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_yaml::from_value(value).expect("object");
        let gvk = GroupVersionKind::try_from(obj.types.as_ref().expect("apiVersion/kind")).unwrap();
        let (ar, caps) = pinned_kind(client, &gvk).await.expect("discover kind");
        let api: Api<DynamicObject> = if caps.scope == Scope::Namespaced {
            Api::namespaced_with(client.clone(), &obj.namespace().unwrap_or_else(|| ns.to_string()), &ar)
        } else {
            Api::all_with(client.clone(), &ar)
        };
        api.patch(&obj.name_any(), &PatchParams::apply("tests").force(), &Patch::Apply(&obj))
            .await
            .unwrap_or_else(|e| panic!("apply {} {}: {e}", gvk.kind, obj.name_any()));
    }
}

async fn impersonated_client() -> Client {
    let mut config = kube::Config::infer().await.expect("kubeconfig");
    config.auth_info.impersonate = Some(SA.to_string());
    config.auth_info.impersonate_groups = Some(vec![
        "system:serviceaccounts".to_string(),
        "system:serviceaccounts:colloquy-system".to_string(),
        "system:authenticated".to_string(),
    ]);
    Client::try_from(config).expect("impersonating client")
}

#[tokio::test]
async fn manifests_and_mock_sample_reach_ready_with_controller_rbac() {
    let admin = client().await;
    apply_yaml(&admin, "default", &repo_file("manifests/crd/chatbackends.colloquy.dev.yaml")).await;
    apply_yaml(&admin, "default", &repo_file("manifests/rbac/controller.yaml")).await;
    let ns_guard = TestNs::new(&admin, "cc-sample").await;
    let ns = ns_guard.name.clone();
    apply_yaml(&admin, &ns, &repo_file("manifests/samples/mock.yaml")).await;

    // The controller, as its ServiceAccount (scoped to the test namespace so parallel tests do not interfere).
    let sa = impersonated_client().await;
    let ctx = Arc::new(Context::new(sa.clone(), "registry.test/chat-api:sample", Metrics::new(), None));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(chat_controller::controller::run(ctx, Some(ns.clone()), async move {
        let _ = stop_rx.await;
    }));

    let job = first_migration_job(&admin, &ns, Duration::from_secs(30)).await;
    succeed_job(&admin, &ns, &job).await;

    let deps: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    let d = deps.clone();
    let dep = eventually("Deployment", Duration::from_secs(30), || {
        let d = d.clone();
        async move { d.get_opt("demo").await.ok()? }
    })
    .await;
    let n = dep.spec.as_ref().unwrap().replicas.unwrap();
    deps.patch_status(
        "demo",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "observedGeneration": dep.metadata.generation,
            "replicas": n, "updatedReplicas": n, "readyReplicas": n, "availableReplicas": n,
        }})),
    )
    .await
    .unwrap();

    let backends: Api<ChatBackend> = Api::namespaced(admin.clone(), &ns);
    let b = backends.clone();
    let cb = eventually("Ready=True", Duration::from_secs(30), || {
        let b = b.clone();
        async move {
            let cb = b.get("demo").await.ok()?;
            (cb.status.is_some() && condition(&cb, ct::READY) == (ct::TRUE, reasons::AVAILABLE)).then_some(cb)
        }
    })
    .await;
    assert_eq!(condition(&cb, ct::DEGRADED), (ct::FALSE, reasons::AS_EXPECTED));
    assert_eq!(condition(&cb, ct::SERVICE_MONITOR).0, ct::TRUE);

    // The full set of objects.
    Api::<ConfigMap>::namespaced(admin.clone(), &ns).get("demo-config").await.unwrap();
    Api::<Service>::namespaced(admin.clone(), &ns).get("demo").await.unwrap();
    Api::<PodDisruptionBudget>::namespaced(admin.clone(), &ns).get("demo").await.unwrap();
    let sm: Api<DynamicObject> =
        Api::namespaced_with(admin.clone(), &ns, &chat_controller::builders::servicemonitor::api_resource());
    let old_sm = sm.get("demo").await.unwrap().uid();

    // The ServiceMonitor watch works with these RBAC rules: deleted by hand, it comes back.
    sm.delete("demo", &Default::default()).await.unwrap();
    let s = sm.clone();
    eventually("ServiceMonitor recreated", Duration::from_secs(30), || {
        let s = s.clone();
        let old_sm = old_sm.clone();
        async move { (s.get_opt("demo").await.ok()??.uid() != old_sm).then_some(()) }
    })
    .await;

    // A new image: once its migration succeeded and the Deployment runs it, the
    // controller deletes the superseded migration Job (RBAC: delete on jobs).
    backends
        .patch(
            "demo",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"image": "registry.test/chat-api:sample-2"}})),
        )
        .await
        .unwrap();
    let jobs: Api<Job> = Api::namespaced(admin.clone(), &ns);
    let j = jobs.clone();
    let old_job = job.clone();
    let job2 = eventually("second migration Job", Duration::from_secs(30), || {
        let j = j.clone();
        let old_job = old_job.clone();
        async move { j.list(&Default::default()).await.ok()?.items.iter().map(|j| j.name_any()).find(|n| *n != old_job) }
    })
    .await;
    succeed_job(&admin, &ns, &job2).await;
    let j = jobs.clone();
    eventually("superseded migration Job deleted", Duration::from_secs(30), || {
        let j = j.clone();
        let job2 = job2.clone();
        async move {
            let names: Vec<_> = j.list(&Default::default()).await.ok()?.items.iter().map(|j| j.name_any()).collect();
            (names == [job2]).then_some(())
        }
    })
    .await;

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(20), run).await.expect("graceful shutdown").unwrap();
}

async fn impersonate(user: &str, groups: &[&str]) -> Client {
    let mut config = kube::Config::infer().await.expect("kubeconfig");
    config.auth_info.impersonate = Some(user.to_string());
    config.auth_info.impersonate_groups = Some(groups.iter().map(|g| g.to_string()).collect());
    Client::try_from(config).expect("impersonating client")
}

/// The rules of the RBAC document `kind`/`name` in manifests/rbac/controller.yaml.
fn rules_of(kind: &str, name: &str) -> serde_json::Value {
    for doc in serde_yaml::Deserializer::from_str(&repo_file("manifests/rbac/controller.yaml")) {
        let v = serde_json::to_value(serde_yaml::Value::deserialize(doc).unwrap()).unwrap();
        if v["kind"] == kind && v["metadata"]["name"] == name {
            return v["rules"].clone();
        }
    }
    panic!("no {kind} {name} in manifests/rbac/controller.yaml");
}

/// Narrower permissions: the controller confined to one namespace runs on a
/// Role there (Secrets included) plus the CRD reader, and can read no Secret
/// anywhere else.
#[tokio::test]
async fn a_controller_confined_to_its_namespaces_needs_only_roles_there() {
    let admin = client().await;
    apply_yaml(&admin, "default", &repo_file("manifests/rbac/controller.yaml")).await;
    let ns_guard = TestNs::new(&admin, "cc-roles").await;
    let ns = ns_guard.name.clone();
    let sa_name = "confined-controller";
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "chat-controller", "namespace": ns},
        "rules": rules_of("ClusterRole", "chat-controller"),
    });
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "chat-controller", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "chat-controller"},
        "subjects": [{"kind": "ServiceAccount", "name": sa_name, "namespace": ns}],
    });
    let crd_reader = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": format!("{ns}-crd-reader")},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "chat-controller-crd-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": sa_name, "namespace": ns}],
    });
    let docs =
        [role, binding, crd_reader].iter().map(|d| serde_yaml::to_string(d).unwrap()).collect::<Vec<_>>().join("---\n");
    apply_yaml(&admin, &ns, &docs).await;
    apply_yaml(&admin, &ns, &repo_file("manifests/samples/mock.yaml")).await;

    let user = format!("system:serviceaccount:{ns}:{sa_name}");
    let groups = ["system:serviceaccounts", "system:authenticated"];
    let sa = impersonate(&user, &groups).await;
    // No Secret outside its namespace.
    let all: Api<k8s_openapi::api::core::v1::Secret> = Api::all(sa.clone());
    assert!(matches!(all.list(&Default::default()).await, Err(kube::Error::Api(s)) if s.code == 403));
    let other: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(sa.clone(), "default");
    assert!(matches!(other.list(&Default::default()).await, Err(kube::Error::Api(s)) if s.code == 403));

    let ctx = Arc::new(Context::new(sa.clone(), "registry.test/chat-api:confined", Metrics::new(), None));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(chat_controller::controller::run(ctx, Some(ns.clone()), async move {
        let _ = stop_rx.await;
    }));
    let job = first_migration_job(&admin, &ns, Duration::from_secs(30)).await;
    succeed_job(&admin, &ns, &job).await;
    let deps: Api<Deployment> = Api::namespaced(admin.clone(), &ns);
    let d = deps.clone();
    eventually("Deployment", Duration::from_secs(30), || {
        let d = d.clone();
        async move { d.get_opt("demo").await.ok()? }
    })
    .await;
    roll_out(&admin, &ns, "demo").await;
    let cb = wait_condition(&admin, &ns, "demo", ct::READY, (ct::TRUE, reasons::AVAILABLE)).await;
    assert_eq!(condition(&cb, ct::SERVICE_MONITOR).0, ct::TRUE, "the CRD reader lets it see ServiceMonitors");
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(20), run).await.expect("graceful shutdown").unwrap();
    let _ = Api::<k8s_openapi::api::rbac::v1::ClusterRoleBinding>::all(admin.clone())
        .delete(&format!("{ns}-crd-reader"), &Default::default())
        .await;
}

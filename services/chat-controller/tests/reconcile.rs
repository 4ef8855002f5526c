//! Reconciliation against a real API server (migration Job clean-up and
//! resource quantities included). Each test works in its own
//! namespace and calls the reconciler directly (no kubelet, no Deployment/Job
//! controllers: Job success and Deployment readiness are simulated by writing
//! their status subresources).

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use chat_controller::conditions::{self as ct, reasons};
use chat_controller::crd::{ChatBackend, MigrationState};
use chat_controller::names::annotations;
use colloquy_contract::{env, paths};
use common::*;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

const NAME: &str = "demo";

async fn secrets(client: &Client, ns: &str) {
    put_secret(client, ns, "db", "url", "postgres://u:p@db/chat").await;
    put_secret(client, ns, "api", "key", "0123456789abcdef-internal").await;
}

fn migration_job_name(cb: &ChatBackend) -> String {
    cb.status.as_ref().and_then(|s| s.migration.as_ref()).expect("migration status").job_name.clone()
}

fn config_hash(d: &Deployment) -> String {
    d.spec.as_ref().unwrap().template.metadata.as_ref().unwrap().annotations.as_ref().unwrap()[annotations::CONFIG_HASH]
        .clone()
}

/// Brings a fresh ChatBackend to Ready (migration succeeded, rollout simulated).
async fn make_ready(client: &Client, ns: &str, replicas: i32) -> ChatBackend {
    make_ready_with(client, ns, &mock_backend(NAME, replicas)).await
}

/// Brings `cb` (named [`NAME`]) to Ready.
async fn make_ready_with(client: &Client, ns: &str, cb: &ChatBackend) -> ChatBackend {
    let ctx = context(client);
    secrets(client, ns).await;
    create_backend(client, ns, cb).await;
    let cb = reconcile_once(&ctx, ns, NAME).await;
    succeed_job(client, ns, &migration_job_name(&cb)).await;
    reconcile_once(&ctx, ns, NAME).await;
    roll_out(client, ns, NAME).await;
    let cb = reconcile_once(&ctx, ns, NAME).await;
    assert_eq!(condition(&cb, ct::READY), (ct::TRUE, reasons::AVAILABLE));
    cb
}

#[tokio::test]
async fn creates_objects_and_walks_the_status_stages() {
    let client = client().await;
    let ns = TestNs::new(&client, "cc-stages").await;
    let ns = ns.name.as_str();
    secrets(&client, ns).await;
    let mut cb = mock_backend(NAME, 2);
    cb.spec.monitoring =
        serde_json::from_value(json!({"serviceMonitor": {"enabled": true, "interval": "30s"}})).unwrap();
    let created = create_backend(&client, ns, &cb).await;
    let uid = created.uid().unwrap();
    let ctx = context(&client);

    // Stage 1: migration Job created, Deployment held back.
    let cb = reconcile_once(&ctx, ns, NAME).await;
    assert_eq!(condition(&cb, ct::PROGRESSING), (ct::TRUE, reasons::MIGRATION_RUNNING));
    assert_eq!(condition(&cb, ct::READY), (ct::FALSE, reasons::MIGRATION_RUNNING));
    assert_eq!(condition(&cb, ct::DEGRADED), (ct::FALSE, reasons::AS_EXPECTED));
    let status = cb.status.clone().unwrap();
    assert_eq!(status.provider.as_deref(), Some("mock"));
    assert_eq!(status.endpoint.as_deref(), Some(format!("http://demo.{ns}.svc:8000").as_str()));
    assert_eq!(status.migration.as_ref().unwrap().state, MigrationState::Pending);
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
    assert!(deps.get_opt(NAME).await.unwrap().is_none(), "no Deployment before the migration");

    let owned = |refs: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference]| {
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0].uid, uid);
        assert_eq!(refs[0].kind, "ChatBackend");
        assert_eq!(refs[0].controller, Some(true));
    };

    // ConfigMap: non-secret settings only.
    let cm: ConfigMap = Api::namespaced(client.clone(), ns).get("demo-config").await.unwrap();
    owned(cm.owner_references());
    let data = cm.data.clone().unwrap();
    assert_eq!(data[env::LLM_PROVIDER], "mock");
    assert_eq!(data[env::ALLOWED_ORIGINS], "https://chat.example");
    assert_eq!(data[env::SYSTEM_PROMPT], "Be brief.");
    assert_eq!(data[env::PORT], "8000");
    assert_eq!(data[env::METRICS_PORT], "9090");
    assert_eq!(data[env::LOG_FORMAT], "json");
    let cm_text = serde_json::to_string(&cm).unwrap();
    assert!(!cm_text.contains("postgres://") && !cm_text.contains("internal"), "secret value leaked: {cm_text}");

    // Job.
    let job_name = migration_job_name(&cb);
    let job: Job = Api::namespaced(client.clone(), ns).get(&job_name).await.unwrap();
    owned(job.owner_references());
    let jc = &job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
    assert_eq!(jc.args, Some(vec!["migrate".to_string()]));
    assert_eq!(jc.image.as_deref(), Some(TEST_IMAGE));
    let db = jc.env.as_ref().unwrap().iter().find(|e| e.name == env::DATABASE_URL).unwrap();
    let sel = db.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
    assert_eq!((sel.name.as_str(), sel.key.as_str()), ("db", "url"));

    // Service, PDB, ServiceMonitor.
    let svc: Service = Api::namespaced(client.clone(), ns).get(NAME).await.unwrap();
    owned(svc.owner_references());
    let ports = svc.spec.as_ref().unwrap().ports.clone().unwrap();
    assert_eq!(
        ports.iter().map(|p| (p.name.clone().unwrap(), p.port)).collect::<Vec<_>>(),
        [("http".to_string(), 8000), ("metrics".to_string(), 9090)]
    );
    assert_eq!(svc.labels()["app.kubernetes.io/instance"], NAME);
    assert_eq!(svc.labels()["app.kubernetes.io/managed-by"], "chat-controller");
    let pdb: PodDisruptionBudget = Api::namespaced(client.clone(), ns).get(NAME).await.unwrap();
    owned(pdb.owner_references());
    let sm_api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &chat_controller::builders::servicemonitor::api_resource());
    let sm = sm_api.get(NAME).await.expect("ServiceMonitor");
    owned(sm.owner_references());
    assert_eq!(sm.data["spec"]["endpoints"][0]["port"], "metrics");
    assert_eq!(condition(&cb, ct::SERVICE_MONITOR), (ct::TRUE, reasons::SERVICE_MONITOR_CREATED));

    // Stage 2: migration succeeded -> Deployment created, rollout in progress.
    succeed_job(&client, ns, &job_name).await;
    let cb = reconcile_once(&ctx, ns, NAME).await;
    assert_eq!(cb.status.as_ref().unwrap().migration.as_ref().unwrap().state, MigrationState::Succeeded);
    assert_eq!(condition(&cb, ct::PROGRESSING), (ct::TRUE, reasons::ROLLOUT_IN_PROGRESS));
    assert_eq!(condition(&cb, ct::READY), (ct::FALSE, reasons::ROLLOUT_IN_PROGRESS));
    let d = deps.get(NAME).await.unwrap();
    owned(d.owner_references());
    let spec = d.spec.as_ref().unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.as_ref().unwrap();
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some(TEST_IMAGE));
    assert_eq!(c.args, Some(vec!["serve".to_string()]));
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        let g = p.as_ref().unwrap().http_get.as_ref().unwrap();
        (g.path.clone().unwrap(), g.port.clone())
    };
    let http = k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String("http".into());
    assert_eq!(probe_path(&c.liveness_probe), (paths::LIVEZ.to_string(), http.clone()));
    assert_eq!(probe_path(&c.readiness_probe), (paths::READYZ.to_string(), http.clone()));
    assert_eq!(probe_path(&c.startup_probe).1, http);
    let port_names: Vec<_> =
        c.ports.as_ref().unwrap().iter().map(|p| (p.name.clone().unwrap(), p.container_port)).collect();
    assert_eq!(port_names, [("http".to_string(), 8000), ("metrics".to_string(), 9090)]);
    assert_eq!(c.env_from.as_ref().unwrap()[0].config_map_ref.as_ref().unwrap().name, "demo-config");
    let env_refs: Vec<_> = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(e.value.is_none(), "{} must come from a secretKeyRef", e.name);
            let s = e.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
            (e.name.clone(), s.name.clone(), s.key.clone())
        })
        .collect();
    assert_eq!(
        env_refs,
        [
            (env::DATABASE_URL.to_string(), "db".to_string(), "url".to_string()),
            (env::INTERNAL_API_KEY.to_string(), "api".to_string(), "key".to_string()),
        ]
    );
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert!(c.resources.as_ref().unwrap().requests.as_ref().unwrap().contains_key("cpu"));
    let tmpl_meta = spec.template.metadata.as_ref().unwrap();
    assert_eq!(tmpl_meta.annotations.as_ref().unwrap()["team"], "chat");
    assert!(tmpl_meta.annotations.as_ref().unwrap().contains_key(annotations::CONFIG_HASH));
    assert_eq!(tmpl_meta.labels.as_ref().unwrap()["app.kubernetes.io/instance"], NAME);

    // Stage 3: Deployment ready -> Ready/Available.
    roll_out(&client, ns, NAME).await;
    let cb = reconcile_once(&ctx, ns, NAME).await;
    assert_eq!(condition(&cb, ct::READY), (ct::TRUE, reasons::AVAILABLE));
    assert_eq!(condition(&cb, ct::PROGRESSING), (ct::FALSE, reasons::ROLLOUT_COMPLETE));
    assert_eq!(cb.status.as_ref().unwrap().ready_replicas, Some(2));
    assert_eq!(cb.status.as_ref().unwrap().observed_generation, cb.metadata.generation);

    // Events were published for the transitions.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let evs = events.list(&Default::default()).await.unwrap();
    let reasons_seen: Vec<_> = evs.items.iter().filter_map(|e| e.reason.clone()).collect();
    assert!(reasons_seen.iter().any(|r| r == reasons::AVAILABLE), "events: {reasons_seen:?}");
    assert!(reasons_seen.iter().any(|r| r == reasons::MIGRATION_RUNNING), "events: {reasons_seen:?}");

    // Idempotence: a second pass with nothing changed sends no write at all.
    let (counting, writes) = counting_client().await;
    let cctx = context(&counting);
    let before =
        serde_json::to_value(Api::<ChatBackend>::namespaced(client.clone(), ns).get(NAME).await.unwrap().status)
            .unwrap();
    reconcile_once(&cctx, ns, NAME).await;
    reconcile_once(&cctx, ns, NAME).await;
    assert_eq!(writes.load(Ordering::SeqCst), 0, "a reconcile with nothing changed must not write");
    let after =
        serde_json::to_value(Api::<ChatBackend>::namespaced(client.clone(), ns).get(NAME).await.unwrap().status)
            .unwrap();
    assert_eq!(before, after);
    // The counter does see writes made through that client (the check above is not vacuous).
    Api::<ConfigMap>::namespaced(counting.clone(), ns)
        .patch(
            "demo-config",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"drift": "by-hand"}}})),
        )
        .await
        .unwrap();
    assert_eq!(writes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn missing_secret_degrades_then_recovers() {
    let client = client().await;
    let ns = TestNs::new(&client, "cc-secret").await;
    let ns = ns.name.as_str();
    let ctx = context(&client);
    put_secret(&client, ns, "api", "key", "0123456789abcdef-internal").await;
    create_backend(&client, ns, &mock_backend(NAME, 1)).await;

    let cb = reconcile_once(&ctx, ns, NAME).await;
    assert_eq!(condition(&cb, ct::DEGRADED), (ct::TRUE, reasons::SECRET_NOT_FOUND));
    assert_eq!(condition(&cb, ct::READY), (ct::FALSE, reasons::SECRET_NOT_FOUND));
    let text = serde_json::to_string(&cb.status).unwrap();
    assert!(text.contains("\\\"db\\\" (spec.databaseUrlSecretRef) not found"), "{text}");
    assert!(text.contains("create it or fix spec.databaseUrlSecretRef"), "the message says what to do: {text}");
    assert!(!text.contains("0123456789abcdef"), "secret value in status: {text}");
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    assert!(jobs.list(&Default::default()).await.unwrap().items.is_empty());

    // A Secret without the key is still a problem.
    put_secret(&client, ns, "db", "wrong", "x").await;
    let cb = reconcile_once(&ctx, ns, NAME).await;
    assert_eq!(condition(&cb, ct::DEGRADED), (ct::TRUE, reasons::SECRET_NOT_FOUND));
    assert!(serde_json::to_string(&cb.status).unwrap().contains("has no key"));

    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    secrets.delete("db", &DeleteParams::default()).await.unwrap();
    put_secret(&client, ns, "db", "url", "postgres://u:p@db/chat").await;
    let cb = reconcile_once(&ctx, ns, NAME).await;
    assert_eq!(condition(&cb, ct::DEGRADED), (ct::FALSE, reasons::AS_EXPECTED));
    assert_eq!(condition(&cb, ct::PROGRESSING), (ct::TRUE, reasons::MIGRATION_RUNNING));
    assert_eq!(jobs.list(&Default::default()).await.unwrap().items.len(), 1);
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let evs = events.list(&Default::default()).await.unwrap();
    let warning = evs
        .items
        .iter()
        .find(|e| e.reason.as_deref() == Some(reasons::SECRET_NOT_FOUND))
        .expect("SecretNotFound event");
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
}

#[tokio::test]
async fn spec_change_and_secret_rotation_roll_pods_and_new_image_waits_for_migration() {
    let client = client().await;
    let ns = TestNs::new(&client, "cc-roll").await;
    let ns = ns.name.as_str();
    make_ready(&client, ns, 1).await;
    let ctx = context(&client);
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let backends: Api<ChatBackend> = Api::namespaced(client.clone(), ns);
    let h0 = config_hash(&deps.get(NAME).await.unwrap());

    // Spec change -> new pod-template hash.
    backends
        .patch(NAME, &PatchParams::default(), &Patch::Merge(json!({"spec": {"systemPrompt": "Be kind."}})))
        .await
        .unwrap();
    reconcile_once(&ctx, ns, NAME).await;
    let h1 = config_hash(&deps.get(NAME).await.unwrap());
    assert_ne!(h0, h1, "spec change must change the config hash");
    let cm: ConfigMap = Api::namespaced(client.clone(), ns).get("demo-config").await.unwrap();
    assert_eq!(cm.data.unwrap()[env::SYSTEM_PROMPT], "Be kind.");

    // Secret rotation -> new hash.
    put_secret(&client, ns, "api", "key", "rotated-0123456789abcdef").await;
    reconcile_once(&ctx, ns, NAME).await;
    let h2 = config_hash(&deps.get(NAME).await.unwrap());
    assert_ne!(h1, h2, "secret rotation must change the config hash");

    // A PDB with one replica (1 may be down: drains work), at 3, none at 0.
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), ns);
    assert!(pdbs.get_opt(NAME).await.unwrap().is_some());
    backends.patch(NAME, &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 3}}))).await.unwrap();
    reconcile_once(&ctx, ns, NAME).await;
    assert!(pdbs.get_opt(NAME).await.unwrap().is_some());
    backends.patch(NAME, &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 0}}))).await.unwrap();
    reconcile_once(&ctx, ns, NAME).await;
    assert!(pdbs.get_opt(NAME).await.unwrap().is_none_or(|p| p.metadata.deletion_timestamp.is_some()));
    backends.patch(NAME, &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 1}}))).await.unwrap();
    reconcile_once(&ctx, ns, NAME).await;

    // New image: a new migration Job; the Deployment keeps the old image until it succeeds.
    backends
        .patch(NAME, &PatchParams::default(), &Patch::Merge(json!({"spec": {"image": "registry.test/chat-api:2.0.0"}})))
        .await
        .unwrap();
    let cb = reconcile_once(&ctx, ns, NAME).await;
    let job2 = migration_job_name(&cb);
    let d = deps.get(NAME).await.unwrap();
    assert_eq!(chat_controller::builders::deployment::current_image(&d).as_deref(), Some(TEST_IMAGE));
    assert_eq!(condition(&cb, ct::PROGRESSING), (ct::TRUE, reasons::MIGRATION_RUNNING));
    assert_eq!(Api::<Job>::namespaced(client.clone(), ns).list(&Default::default()).await.unwrap().items.len(), 2);
    succeed_job(&client, ns, &job2).await;
    reconcile_once(&ctx, ns, NAME).await;
    let d = deps.get(NAME).await.unwrap();
    assert_eq!(
        chat_controller::builders::deployment::current_image(&d).as_deref(),
        Some("registry.test/chat-api:2.0.0")
    );
}

#[tokio::test]
async fn failed_migration_sets_degraded_with_job_reason() {
    let client = client().await;
    let ns = TestNs::new(&client, "cc-migfail").await;
    let ns = ns.name.as_str();
    let ctx = context(&client);
    secrets(&client, ns).await;
    create_backend(&client, ns, &mock_backend(NAME, 1)).await;
    let cb = reconcile_once(&ctx, ns, NAME).await;
    fail_job(&client, ns, &migration_job_name(&cb)).await;
    let cb = reconcile_once(&ctx, ns, NAME).await;
    assert_eq!(condition(&cb, ct::DEGRADED), (ct::TRUE, reasons::MIGRATION_FAILED));
    assert_eq!(condition(&cb, ct::READY), (ct::FALSE, reasons::MIGRATION_FAILED));
    let m = cb.status.as_ref().unwrap().migration.clone().unwrap();
    assert_eq!(m.state, MigrationState::Failed);
    assert!(m.message.unwrap().contains("BackoffLimitExceeded"));
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
    assert!(deps.get_opt(NAME).await.unwrap().is_none());
}

#[tokio::test]
async fn invalid_objects_are_rejected_by_the_schema() {
    let client = client().await;
    let ns = TestNs::new(&client, "cc-invalid").await;
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns.name, &kube::api::ApiResource::erase::<ChatBackend>(&()));
    let base = || {
        json!({
            "apiVersion": "colloquy.dev/v1alpha1", "kind": "ChatBackend",
            "metadata": {"name": "bad"},
            "spec": {
                "provider": {"mock": {}},
                "databaseUrlSecretRef": {"name": "db", "key": "url"},
                "apiKeySecretRef": {"name": "api", "key": "key"},
            }
        })
    };
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "two providers",
            {
                let mut v = base();
                v["spec"]["provider"]["vertexAI"] = json!({"projectId": "p", "location": "l", "model": "m"});
                v
            },
            "exactly one provider",
        ),
        (
            "no provider",
            {
                let mut v = base();
                v["spec"]["provider"] = json!({});
                v
            },
            "exactly one provider",
        ),
        (
            "negative replicas",
            {
                let mut v = base();
                v["spec"]["replicas"] = json!(-1);
                v
            },
            "replicas",
        ),
        (
            "missing database secret",
            {
                let mut v = base();
                v["spec"].as_object_mut().unwrap().remove("databaseUrlSecretRef");
                v
            },
            "databaseUrlSecretRef",
        ),
        (
            "azure endpoint not https",
            {
                let mut v = base();
                v["spec"]["provider"] = json!({"azureOpenAI": {"endpoint": "http://x", "deployment": "d",
                "apiKeySecretRef": {"name": "a", "key": "k"}}});
                v
            },
            "endpoint",
        ),
        (
            "empty secret name",
            {
                let mut v = base();
                v["spec"]["apiKeySecretRef"]["name"] = json!("");
                v
            },
            "apiKeySecretRef.name",
        ),
    ];
    for (what, obj, needle) in cases {
        let obj: DynamicObject = serde_json::from_value(obj).unwrap();
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => panic!("{what}: accepted by the API server"),
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 422, "{what}: {s:?}");
                assert!(s.message.contains(needle), "{what}: message {:?} lacks {needle:?}", s.message);
            }
            Err(e) => panic!("{what}: {e}"),
        }
    }
    // And the valid base object is accepted, with defaults filled in.
    let ok: DynamicObject = serde_json::from_value(base()).unwrap();
    let created = api.create(&PostParams::default(), &ok).await.expect("valid object");
    assert_eq!(created.data["spec"]["replicas"], 1);
}

#[tokio::test]
async fn deleting_the_chatbackend_garbage_collects_everything() {
    let client = client().await;
    let ns = TestNs::new(&client, "cc-gc").await;
    let ns = ns.name.as_str();
    make_ready(&client, ns, 2).await;
    let backends: Api<ChatBackend> = Api::namespaced(client.clone(), ns);
    backends.delete(NAME, &DeleteParams::foreground()).await.unwrap();
    let c = client.clone();
    eventually("owned objects garbage-collected", Duration::from_secs(60), || {
        let c = c.clone();
        async move {
            let cms: Api<ConfigMap> = Api::namespaced(c.clone(), ns);
            let gone = cms.get_opt("demo-config").await.ok()?.is_none()
                && Api::<Deployment>::namespaced(c.clone(), ns).get_opt(NAME).await.ok()?.is_none()
                && Api::<Service>::namespaced(c.clone(), ns).get_opt(NAME).await.ok()?.is_none()
                && Api::<PodDisruptionBudget>::namespaced(c.clone(), ns).get_opt(NAME).await.ok()?.is_none()
                && Api::<Job>::namespaced(c.clone(), ns).list(&Default::default()).await.ok()?.items.is_empty()
                && Api::<ChatBackend>::namespaced(c.clone(), ns).get_opt(NAME).await.ok()?.is_none();
            gone.then_some(())
        }
    })
    .await;
}

fn job_names(jobs: &[Job]) -> Vec<String> {
    let mut names: Vec<_> = jobs.iter().map(|j| j.name_any()).collect();
    names.sort();
    names
}

async fn set_image(backends: &Api<ChatBackend>, image: &str) {
    backends.patch(NAME, &PatchParams::default(), &Patch::Merge(json!({"spec": {"image": image}}))).await.unwrap();
}

#[tokio::test]
async fn superseded_migration_jobs_are_deleted_once_the_new_image_runs() {
    let client = client().await;
    let ns = TestNs::new(&client, "cc-jobgc").await;
    let ns = ns.name.as_str();
    let cb = make_ready(&client, ns, 1).await;
    let job1 = migration_job_name(&cb);
    let ctx = context(&client);
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let backends: Api<ChatBackend> = Api::namespaced(client.clone(), ns);
    let image = |d: &Deployment| chat_controller::builders::deployment::current_image(d).unwrap();
    let all = || async { job_names(&jobs.list(&Default::default()).await.unwrap().items) };

    // Second image: its Job runs; the first one stays while the Deployment still uses it.
    set_image(&backends, "registry.test/chat-api:2.0.0").await;
    let cb = reconcile_once(&ctx, ns, NAME).await;
    let job2 = migration_job_name(&cb);
    assert_ne!(job1, job2);
    let mut both = vec![job1.clone(), job2.clone()];
    both.sort();
    assert_eq!(all().await, both);
    start_job(&client, ns, &job2).await;
    reconcile_once(&ctx, ns, NAME).await;
    assert_eq!(all().await, both, "nothing is deleted before the new Job succeeds");

    // The second Job succeeds -> the Deployment moves to image 2 -> the first Job goes.
    succeed_job(&client, ns, &job2).await;
    reconcile_once(&ctx, ns, NAME).await;
    assert_eq!(image(&deps.get(NAME).await.unwrap()), "registry.test/chat-api:2.0.0");
    assert_eq!(all().await, std::slice::from_ref(&job2));

    // A superseded Job that is still running is kept until it finishes.
    set_image(&backends, "registry.test/chat-api:3.0.0").await;
    let cb = reconcile_once(&ctx, ns, NAME).await;
    let job3 = migration_job_name(&cb);
    start_job(&client, ns, &job3).await;
    set_image(&backends, "registry.test/chat-api:2.0.0").await;
    let cb = reconcile_once(&ctx, ns, NAME).await;
    assert_eq!(migration_job_name(&cb), job2);
    assert_eq!(image(&deps.get(NAME).await.unwrap()), "registry.test/chat-api:2.0.0");
    let mut both = vec![job2.clone(), job3.clone()];
    both.sort();
    assert_eq!(all().await, both, "a running Job is never deleted");
    fail_job(&client, ns, &job3).await;
    reconcile_once(&ctx, ns, NAME).await;
    assert_eq!(all().await, std::slice::from_ref(&job2));

    // And nothing left to clean up: the next reconciles write nothing.
    roll_out(&client, ns, NAME).await;
    reconcile_once(&ctx, ns, NAME).await;
    let (counting, writes) = counting_client().await;
    let cctx = context(&counting);
    reconcile_once(&cctx, ns, NAME).await;
    reconcile_once(&cctx, ns, NAME).await;
    assert_eq!(writes.load(Ordering::SeqCst), 0, "a reconcile with nothing changed must not write");
    assert_eq!(all().await, [job2]);
}

#[tokio::test]
async fn quantities_the_api_server_normalises_do_not_cause_writes() {
    let client = client().await;
    let ns = TestNs::new(&client, "cc-qty").await;
    let ns = ns.name.as_str();
    let mut cb = mock_backend(NAME, 1);
    cb.spec.resources = Some(
        serde_json::from_value(json!({
            "requests": {"cpu": "0.5", "memory": "1024Mi"},
            "limits": {"cpu": "1000m", "memory": "1Gi"},
        }))
        .unwrap(),
    );
    make_ready_with(&client, ns, &cb).await;

    // The API server stored the canonical forms, which differ from the strings in the spec.
    let d = Api::<Deployment>::namespaced(client.clone(), ns).get(NAME).await.unwrap();
    let res = d.spec.unwrap().template.spec.unwrap().containers[0].resources.clone().unwrap();
    let requests = res.requests.unwrap();
    assert_eq!(requests["cpu"].0, "500m");
    assert_eq!(requests["memory"].0, "1Gi");
    assert_eq!(res.limits.unwrap()["cpu"].0, "1");

    let (counting, writes) = counting_client().await;
    let cctx = context(&counting);
    reconcile_once(&cctx, ns, NAME).await;
    assert_eq!(writes.load(Ordering::SeqCst), 0, "a normalised quantity must not cause a re-apply");

    // A real change of a quantity is still applied.
    Api::<ChatBackend>::namespaced(client.clone(), ns)
        .patch(
            NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"resources": {"requests": {"cpu": "0.75"}}}})),
        )
        .await
        .unwrap();
    reconcile_once(&cctx, ns, NAME).await;
    let d = Api::<Deployment>::namespaced(client.clone(), ns).get(NAME).await.unwrap();
    let res = d.spec.unwrap().template.spec.unwrap().containers[0].resources.clone().unwrap();
    assert_eq!(res.requests.unwrap()["cpu"].0, "750m");
}

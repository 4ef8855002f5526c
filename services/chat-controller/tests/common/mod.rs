//! Helpers for the integration tests against a real API server
//! (`eval "$(scripts/k8s-testenv.sh up)"` sets `KUBECONFIG`).
#![allow(dead_code)]

pub mod registry;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chat_controller::crd::ChatBackend;
use chat_controller::metrics::Metrics;
use chat_controller::reconcile::{Context, reconcile};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, CustomResourceExt, ResourceExt};
use serde_json::json;

pub const TEST_IMAGE: &str = "registry.test/chat-api:1.0.0";

fn require_kubeconfig() {
    assert!(
        std::env::var_os("KUBECONFIG").is_some(),
        "KUBECONFIG is not set. These integration tests need a real API server: run \
         `eval \"$(scripts/k8s-testenv.sh up)\"` from the repo root first."
    );
}

pub async fn client() -> Client {
    require_kubeconfig();
    // Logs of the code under test, with RUST_LOG (e.g. `RUST_LOG=chat_controller=debug`).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let c = Client::try_default().await.expect("kube client from KUBECONFIG");
    ensure_crd(&c).await;
    c
}

/// A client that counts every non-GET request (writes) it sends.
pub async fn counting_client() -> (Client, Arc<AtomicUsize>) {
    require_kubeconfig();
    let config = kube::Config::infer().await.expect("kubeconfig");
    let writes = Arc::new(AtomicUsize::new(0));
    let w = writes.clone();
    let layer = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        if req.method() != http::Method::GET {
            eprintln!("write: {} {}", req.method(), req.uri());
            w.fetch_add(1, Ordering::SeqCst);
        }
        req
    });
    let client = kube::client::ClientBuilder::try_from(config).expect("client builder").with_layer(&layer).build();
    (client, writes)
}

/// Requests a client sent, by kind: `(method, uri)` of each non-watch request.
pub type RequestLog = Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// A client that records every request except watches (long-running, not per reconcile).
pub async fn recording_client() -> (Client, RequestLog) {
    require_kubeconfig();
    let config = kube::Config::infer().await.expect("kubeconfig");
    let log: RequestLog = Default::default();
    let l = log.clone();
    let layer = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        let uri = req.uri().to_string();
        if !uri.contains("watch=true") {
            l.lock().unwrap().push((req.method().to_string(), uri));
        }
        req
    });
    let client = kube::client::ClientBuilder::try_from(config).expect("client builder").with_layer(&layer).build();
    (client, log)
}

/// A client that rewrites every request URI containing `from` to contain `to`
/// instead (e.g. to hide an API group), recording the rewritten URIs.
pub async fn rewriting_client(from: &'static str, to: &'static str) -> (Client, Arc<std::sync::Mutex<Vec<String>>>) {
    require_kubeconfig();
    let config = kube::Config::infer().await.expect("kubeconfig");
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let layer = tower::util::MapRequestLayer::new(move |mut req: http::Request<kube::client::Body>| {
        let uri = req.uri().to_string();
        if uri.contains(from) {
            let new = uri.replace(from, to);
            *req.uri_mut() = new.parse().expect("rewritten URI");
            s.lock().unwrap().push(new);
        }
        req
    });
    let client = kube::client::ClientBuilder::try_from(config).expect("client builder").with_layer(&layer).build();
    (client, seen)
}

/// Installs the CRD from the Rust types (idempotent) and waits until it is established.
pub async fn ensure_crd(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = ChatBackend::crd();
    let name = crd.name_any();
    crds.patch(&name, &PatchParams::apply("chat-controller-tests").force(), &Patch::Apply(&crd))
        .await
        .expect("apply CRD");
    eventually("CRD established", Duration::from_secs(30), || async {
        let c = crds.get(&name).await.ok()?;
        let established = c.status?.conditions?.iter().any(|c| c.type_ == "Established" && c.status == "True");
        // The CRD is served a little after it is established.
        let api: Api<ChatBackend> = Api::all(client.clone());
        (established && api.list(&Default::default()).await.is_ok()).then_some(())
    })
    .await;
}

/// Polls `f` until it returns `Some`, panicking with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A fresh namespace, deleted when dropped (also when the test panics).
pub struct TestNs {
    pub name: String,
}

impl TestNs {
    pub async fn new(client: &Client, prefix: &str) -> Self {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
        let name = format!(
            "{prefix}-{}-{}-{}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::SeqCst),
            nanos % 100_000
        );
        let nss: Api<Namespace> = Api::all(client.clone());
        let ns =
            Namespace { metadata: ObjectMeta { name: Some(name.clone()), ..Default::default() }, ..Default::default() };
        nss.create(&PostParams::default(), &ns).await.expect("create namespace");
        Self { name }
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop cannot be async: delete from a helper thread with its own runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(c) = Client::try_default().await {
                    let nss: Api<Namespace> = Api::all(c);
                    let _ = nss.delete(&name, &DeleteParams::default()).await;
                }
            });
        })
        .join();
    }
}

pub async fn put_secret(client: &Client, ns: &str, name: &str, key: &str, value: &str) -> Secret {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let s = Secret {
        metadata: ObjectMeta { name: Some(name.to_string()), ..Default::default() },
        data: Some([(key.to_string(), ByteString(value.as_bytes().to_vec()))].into()),
        ..Default::default()
    };
    api.patch(name, &PatchParams::apply("tests").force(), &Patch::Apply(&s)).await.expect("apply secret")
}

/// The mock ChatBackend used by most tests (secrets `db`/`url` and `api`/`key`).
pub fn mock_backend(name: &str, replicas: i32) -> ChatBackend {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "colloquy.dev/v1alpha1",
        "kind": "ChatBackend",
        "metadata": { "name": name },
        "spec": {
            "image": TEST_IMAGE,
            "replicas": replicas,
            "provider": { "mock": {} },
            "databaseUrlSecretRef": { "name": "db", "key": "url" },
            "apiKeySecretRef": { "name": "api", "key": "key" },
            "cors": { "allowedOrigins": ["https://chat.example"] },
            "systemPrompt": "Be brief.",
            "podAnnotations": { "team": "chat" },
        }
    }))
    .expect("valid ChatBackend")
}

pub async fn create_backend(client: &Client, ns: &str, cb: &ChatBackend) -> ChatBackend {
    let api: Api<ChatBackend> = Api::namespaced(client.clone(), ns);
    api.create(&PostParams::default(), cb).await.expect("create ChatBackend")
}

pub fn context(client: &Client) -> Arc<Context> {
    Arc::new(Context::new(client.clone(), "registry.test/chat-api:default", Metrics::new(), None))
}

/// Runs the controller (scoped to `ns`) with `ctx`; returns the stop handle and the task.
pub fn start_controller(
    ctx: Arc<Context>,
    ns: &str,
) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(chat_controller::controller::run(ctx, Some(ns.to_string()), async move {
        let _ = stop_rx.await;
    }));
    (stop_tx, run)
}

pub async fn stop_controller(stop_tx: tokio::sync::oneshot::Sender<()>, run: tokio::task::JoinHandle<()>) {
    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(20), run).await.expect("controller shuts down gracefully").unwrap();
}

/// Waits until the ChatBackend's condition `type_` has `status` and `reason`.
pub async fn wait_condition(client: &Client, ns: &str, name: &str, type_: &str, want: (&str, &str)) -> ChatBackend {
    let api: Api<ChatBackend> = Api::namespaced(client.clone(), ns);
    let what = format!("{type_}={}/{}", want.0, want.1);
    eventually(&what, Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            let cb = api.get(name).await.ok()?;
            let c = cb.status.as_ref()?.conditions.iter().find(|c| c.type_ == type_)?;
            (c.status == want.0 && c.reason == want.1).then_some(cb.clone())
        }
    })
    .await
}

/// Fetches the ChatBackend and reconciles it once.
pub async fn reconcile_once(ctx: &Arc<Context>, ns: &str, name: &str) -> ChatBackend {
    let api: Api<ChatBackend> = Api::namespaced(ctx.client.clone(), ns);
    let cb = api.get(name).await.expect("get ChatBackend");
    reconcile(Arc::new(cb), ctx.clone()).await.expect("reconcile");
    api.get(name).await.expect("get ChatBackend")
}

pub fn condition<'a>(cb: &'a ChatBackend, type_: &str) -> (&'a str, &'a str) {
    let c = cb
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .unwrap_or_else(|| panic!("no {type_} condition in {:?}", cb.status));
    (c.status.as_str(), c.reason.as_str())
}

/// The Job's `status.startTime` if it has one (it is immutable once set), else `now`.
async fn start_time(jobs: &Api<Job>, name: &str, now: &str) -> String {
    let job = jobs.get(name).await.expect("get Job");
    match job.status.and_then(|s| s.start_time) {
        Some(t) => t.0.to_string(),
        None => now.to_string(),
    }
}

/// Marks a Job as succeeded through its status subresource.
pub async fn succeed_job(client: &Client, ns: &str, name: &str) {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {
        "startTime": start_time(&jobs, name, &now).await, "completionTime": now, "succeeded": 1, "active": 0,
        "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastTransitionTime": now, "lastProbeTime": now},
            {"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastTransitionTime": now, "lastProbeTime": now}
        ]
    }});
    jobs.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("simulate Job success");
}

/// Marks a Job as started (one active pod) through its status subresource.
pub async fn start_job(client: &Client, ns: &str, name: &str) {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {"startTime": now, "active": 1}});
    jobs.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("simulate Job start");
}

pub async fn fail_job(client: &Client, ns: &str, name: &str) {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {
        "startTime": start_time(&jobs, name, &now).await, "failed": 4, "active": 0,
        "conditions": [
            {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastTransitionTime": now, "lastProbeTime": now},
            {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastTransitionTime": now, "lastProbeTime": now}
        ]
    }});
    jobs.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("simulate Job failure");
}

/// Marks the Deployment's current generation as fully rolled out.
pub async fn roll_out(client: &Client, ns: &str, name: &str) {
    let deps: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let d = deps.get(name).await.expect("deployment");
    let n = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let status = json!({"status": {
        "observedGeneration": d.metadata.generation,
        "replicas": n, "updatedReplicas": n, "readyReplicas": n, "availableReplicas": n,
    }});
    deps.patch_status(name, &PatchParams::default(), &Patch::Merge(&status)).await.expect("simulate rollout");
}

/// Waits for the first migration Job in `ns` (the controller creates it) and returns its name.
pub async fn first_migration_job(client: &Client, ns: &str, timeout: Duration) -> String {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    eventually("migration Job", timeout, || {
        let j = jobs.clone();
        async move { j.list(&Default::default()).await.ok()?.items.first().map(|j| j.name_any()) }
    })
    .await
}

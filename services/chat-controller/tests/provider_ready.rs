//! `ProviderReady` comes from the chat pods' own probe of the provider, read
//! from their `/readyz` detail (never from the controller calling a provider):
//! a ready pod (made by hand, with its status written through the API, since
//! no kubelet runs here) whose IP and `http` port lead to a fake chat API.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use chat_controller::conditions::{self as ct, reasons};
use chat_controller::metrics::Metrics;
use chat_controller::reconcile::{Context, Options};
use common::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

const NAME: &str = "demo";

/// A fake chat API answering `/readyz` with the provider `state`; counts requests.
async fn fake_chat_api(state: Arc<std::sync::Mutex<&'static str>>, hits: Arc<AtomicUsize>) -> u16 {
    let app = Router::new().route(
        "/readyz",
        get(move || {
            let state = state.clone();
            let hits = hits.clone();
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                let s = *state.lock().unwrap();
                axum::Json(json!({"status": "ready", "database": "ok",
                    "provider": {"state": s, "message": "the provider answered 401 Unauthorized", "checkedAt": "2026-01-01T00:00:00Z"}}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

/// A ready chat pod of ChatBackend `demo` at 127.0.0.1:`port`.
async fn ready_pod(client: &Client, ns: &str, port: u16) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "demo-abc", "labels": {
            "app.kubernetes.io/name": "chat-api", "app.kubernetes.io/instance": NAME,
            "app.kubernetes.io/managed-by": "chat-controller", "app.kubernetes.io/component": "api",
        }},
        "spec": {"containers": [{"name": "chat-api", "image": "x", "ports": [{"name": "http", "containerPort": port}]}]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let status = json!({"status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
    pods.patch_status("demo-abc", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
}

#[tokio::test]
async fn provider_ready_follows_the_chat_pods_probe() {
    let client = client().await;
    let ns = TestNs::new(&client, "cc-provider").await;
    let ns = ns.name.as_str();
    put_secret(&client, ns, "db", "url", "postgres://u:p@db/chat").await;
    put_secret(&client, ns, "api", "key", "0123456789abcdef-internal").await;
    create_backend(&client, ns, &mock_backend(NAME, 1)).await;
    let interval = Duration::from_millis(700);
    let mut options = Options::new("unused:default");
    options.readiness_interval = interval;
    let ctx = Arc::new(Context::new(client.clone(), "unused:default", Metrics::new(), None).with_options(options));

    // No pod yet: Unknown, and no Event for that.
    let cb = reconcile_once(&ctx, ns, NAME).await;
    assert_eq!(condition(&cb, ct::PROVIDER_READY), (ct::UNKNOWN, reasons::NO_READY_PODS));

    let state = Arc::new(std::sync::Mutex::new("unauthorized"));
    let hits = Arc::new(AtomicUsize::new(0));
    let port = fake_chat_api(state.clone(), hits.clone()).await;
    ready_pod(&client, ns, port).await;
    let cb = reconcile_once(&ctx, ns, NAME).await;
    assert_eq!(condition(&cb, ct::PROVIDER_READY), (ct::FALSE, reasons::PROVIDER_UNAUTHORIZED));
    let c = cb.status.as_ref().unwrap().conditions.iter().find(|c| c.type_ == ct::PROVIDER_READY).unwrap();
    assert!(c.message.contains("API key Secret"), "the message says what to check: {}", c.message);
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), ns);
    let ev = events
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|e| e.reason.as_deref() == Some(reasons::PROVIDER_UNAUTHORIZED))
        .expect("a Warning event");
    assert_eq!(ev.type_.as_deref(), Some("Warning"));

    // Rate-limited: reconciles within the interval do not ask the pod again.
    let n = hits.load(Ordering::SeqCst);
    reconcile_once(&ctx, ns, NAME).await;
    reconcile_once(&ctx, ns, NAME).await;
    assert_eq!(hits.load(Ordering::SeqCst), n);

    // The key is fixed: after the interval the condition turns True.
    *state.lock().unwrap() = "ok";
    tokio::time::sleep(interval + Duration::from_millis(200)).await;
    let cb = reconcile_once(&ctx, ns, NAME).await;
    assert_eq!(condition(&cb, ct::PROVIDER_READY), (ct::TRUE, reasons::PROVIDER_REACHABLE));
}

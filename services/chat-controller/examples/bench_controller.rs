//! The controller at scale, against a real API server (run by
//! `scripts/bench-controller.sh`, which starts the test plane and the
//! controller): creates N ChatBackends, simulates what kubelets and the Job
//! and Deployment controllers would do (Job success, rolled-out Deployments,
//! as the integration tests do), and measures
//!
//! * the time until all N are Ready;
//! * API requests and writes per steady-state reconcile, from the API
//!   server's own `apiserver_request_total` (watches excluded) over a window
//!   in which every ChatBackend is reconciled by the periodic resync, divided
//!   by the reconciles the controller counted (`chat_controller_reconciliations_total`);
//! * the controller's peak RSS (`VmHWM` of its process).
//!
//! Usage: bench_controller <count> <controller metrics URL> <controller pid> <window secs>
//! Last line: `controller bench: N ChatBackends Ready in S s; steady-state
//! requests per reconcile R; writes per reconcile W; peak RSS M MiB`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::Semaphore;

use chat_controller::crd::ChatBackend;

const CONCURRENCY: usize = 48;

fn arg(i: usize, default: &str) -> String {
    std::env::args().nth(i).unwrap_or_else(|| default.to_string())
}

/// Sums `apiserver_request_total` by verb and resource (`VERB resource`;
/// resource requests only; watches apart).
async fn apiserver_requests(client: &Client) -> anyhow::Result<HashMap<String, f64>> {
    let text = client.request_text(http::Request::get("/metrics").body(Vec::new())?).await?;
    let mut by_verb = HashMap::new();
    for line in text.lines().filter(|l| l.starts_with("apiserver_request_total{")) {
        let Some((labels, value)) = line.rsplit_once(' ') else { continue };
        let label = |name: &str| {
            labels.split(&format!("{name}=\"")).nth(1).and_then(|r| r.split('"').next()).unwrap_or_default().to_string()
        };
        if label("resource").is_empty() {
            continue;
        }
        let key = format!("{} {}", label("verb"), label("resource"));
        *by_verb.entry(key).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    Ok(by_verb)
}

async fn controller_reconciles(http: &reqwest::Client, url: &str) -> anyhow::Result<f64> {
    let text = http.get(url).send().await?.text().await?;
    let line = text
        .lines()
        .find(|l| l.starts_with("chat_controller_reconciliations_total "))
        .ok_or_else(|| anyhow::anyhow!("no reconciliations counter at {url}"))?;
    Ok(line.rsplit_once(' ').map(|(_, v)| v).unwrap_or("0").parse()?)
}

fn peak_rss_mib(pid: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn ready(cb: &ChatBackend) -> bool {
    cb.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Simulates the Job controller and kubelets: every new migration Job succeeds.
fn simulate_jobs(client: Client, ns: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let jobs: Api<Job> = Api::namespaced(client, &ns);
        let permits = Arc::new(Semaphore::new(CONCURRENCY));
        let stream = watcher(jobs.clone(), watcher::Config::default()).default_backoff().applied_objects();
        futures::pin_mut!(stream);
        while let Ok(Some(job)) = stream.try_next().await {
            if job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) > 0 {
                continue;
            }
            let (jobs, permit) = (jobs.clone(), permits.clone().acquire_owned().await);
            tokio::spawn(async move {
                let _permit = permit;
                let now = k8s_openapi::jiff::Timestamp::now().to_string();
                let status = json!({"status": {"startTime": now, "completionTime": now, "succeeded": 1, "active": 0,
                    "conditions": [
                        {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": "done", "lastTransitionTime": now, "lastProbeTime": now},
                        {"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": "done", "lastTransitionTime": now, "lastProbeTime": now}]}});
                // An overloaded API server answers 5xx: retry, or the ChatBackend never gets Ready.
                for _ in 0..20 {
                    if jobs.patch_status(&job.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await.is_ok()
                    {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
        }
    })
}

/// Simulates the Deployment controller and kubelets: every Deployment rolls out.
fn simulate_rollouts(client: Client, ns: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let deps: Api<Deployment> = Api::namespaced(client, &ns);
        let permits = Arc::new(Semaphore::new(CONCURRENCY));
        let stream = watcher(deps.clone(), watcher::Config::default()).default_backoff().applied_objects();
        futures::pin_mut!(stream);
        while let Ok(Some(d)) = stream.try_next().await {
            let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
            let st = d.status.clone().unwrap_or_default();
            if st.observed_generation == d.metadata.generation && st.ready_replicas == Some(want) {
                continue;
            }
            let (deps, permit) = (deps.clone(), permits.clone().acquire_owned().await);
            tokio::spawn(async move {
                let _permit = permit;
                let status = json!({"status": {"observedGeneration": d.metadata.generation, "replicas": want,
                    "updatedReplicas": want, "readyReplicas": want, "availableReplicas": want}});
                for _ in 0..20 {
                    if deps.patch_status(&d.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await.is_ok() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
        }
    })
}

async fn put_secret(client: &Client, ns: &str, name: &str, key: &str, value: &str) -> anyhow::Result<()> {
    let s = Secret {
        metadata: ObjectMeta { name: Some(name.into()), ..Default::default() },
        data: Some([(key.to_string(), ByteString(value.as_bytes().to_vec()))].into()),
        ..Default::default()
    };
    Api::<Secret>::namespaced(client.clone(), ns).create(&PostParams::default(), &s).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let count: usize = arg(1, "1000").parse()?;
    let metrics_url = arg(2, "http://127.0.0.1:18080/metrics");
    let pid = arg(3, "0");
    let window = Duration::from_secs(arg(4, "40").parse()?);
    let ns = arg(5, "colloquy-bench");
    let client = Client::try_default().await?;
    let http = reqwest::Client::new();

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace =
        Namespace { metadata: ObjectMeta { name: Some(ns.clone()), ..Default::default() }, ..Default::default() };
    namespaces.create(&PostParams::default(), &namespace).await?;
    put_secret(&client, &ns, "db", "url", "postgres://chat:chat@db/chat").await?;
    put_secret(&client, &ns, "api", "key", "0123456789abcdef-bench").await?;
    let jobs = simulate_jobs(client.clone(), ns.clone());
    let rollouts = simulate_rollouts(client.clone(), ns.clone());

    let backends: Api<ChatBackend> = Api::namespaced(client.clone(), &ns);
    let ready_count = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let created = futures::stream::iter(0..count)
        .map(|i| {
            let backends = backends.clone();
            async move {
                let cb: ChatBackend = serde_json::from_value(json!({
                    "apiVersion": "colloquy.dev/v1alpha1", "kind": "ChatBackend",
                    "metadata": {"name": format!("bench-{i:04}")},
                    "spec": {"image": "registry.test/chat-api:bench", "replicas": 1, "provider": {"mock": {}},
                             "databaseUrlSecretRef": {"name": "db", "key": "url"},
                             "apiKeySecretRef": {"name": "api", "key": "key"}}
                }))?;
                backends.create(&PostParams::default(), &cb).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>();
    created.await?;
    eprintln!("bench: {count} ChatBackends created in {:.1} s", started.elapsed().as_secs_f64());

    // Until all are Ready.
    let stream = watcher(backends.clone(), watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut state: HashMap<String, bool> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(600);
    while let Some(ev) =
        tokio::time::timeout_at(deadline.into(), stream.try_next()).await.ok().and_then(|r| r.ok()).flatten()
    {
        match ev {
            watcher::Event::Apply(cb) | watcher::Event::InitApply(cb) => {
                state.insert(cb.name_any(), ready(&cb));
            }
            watcher::Event::Delete(cb) => {
                state.remove(&cb.name_any());
            }
            _ => {}
        }
        let n = state.values().filter(|r| **r).count();
        ready_count.store(n, Ordering::Relaxed);
        if n >= count {
            break;
        }
    }
    let ready_secs = started.elapsed().as_secs_f64();
    let n_ready = ready_count.load(Ordering::Relaxed);
    eprintln!("bench: {n_ready}/{count} Ready after {ready_secs:.1} s");

    // Steady state: let the last writes settle, then one resync window.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let r0 = apiserver_requests(&client).await?;
    let c0 = controller_reconciles(&http, &metrics_url).await?;
    tokio::time::sleep(window).await;
    let r1 = apiserver_requests(&client).await?;
    let c1 = controller_reconciles(&http, &metrics_url).await?;
    let delta = |verbs: &[&str]| -> f64 {
        r1.iter()
            .filter(|(k, _)| verbs.is_empty() || verbs.iter().any(|v| k.split(' ').next() == Some(v)))
            .filter(|(k, _)| !k.starts_with("WATCH "))
            .map(|(v, n)| n - r0.get(v).copied().unwrap_or(0.0))
            .sum()
    };
    let reconciles = (c1 - c0).max(1.0);
    let requests = delta(&[]);
    let writes = delta(&["POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"]);
    eprintln!(
        "bench: steady-state window {} s: {reconciles} reconciles, {requests} API requests ({writes} writes) in the whole cluster",
        window.as_secs()
    );
    // By verb and resource: the window counts every client (kube-controller-manager's
    // endpoint slices and garbage collector, this driver's simulated rollouts), not only ours.
    let mut rows: Vec<_> = r1.iter().map(|(k, n)| (k, n - r0.get(k).copied().unwrap_or(0.0))).collect();
    rows.sort_by(|a, b| a.0.cmp(b.0));
    for (key, d) in rows {
        if d > 0.0 && !key.starts_with("WATCH ") {
            eprintln!("bench:   {key}: {d}");
        }
    }
    jobs.abort();
    rollouts.abort();
    let _ = namespaces.delete(&ns, &DeleteParams::background()).await;
    let ready_text = if n_ready >= count { format!("{ready_secs:.1}") } else { format!("NOT ({n_ready} of {count})") };
    println!(
        "controller bench: {count} ChatBackends Ready in {ready_text} s; steady-state requests per reconcile {:.3}; writes per reconcile {:.3}; peak RSS {:.0} MiB",
        requests / reconciles,
        writes / reconciles,
        peak_rss_mib(&pid)
    );
    Ok(())
}

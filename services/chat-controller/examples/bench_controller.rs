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
/// Verbs of `apiserver_request_total` that write.
const WRITE_VERBS: [&str; 6] = ["POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"];
/// `/proc/<pid>/stat` counts CPU time in these ticks per second (`getconf CLK_TCK`).
const CLOCK_TICKS: f64 = 100.0;
/// The cluster counts as settled after this long without a write by anyone.
const QUIET: Duration = Duration::from_secs(10);
/// How long the bench waits for the cluster to settle before measuring anyway.
const SETTLE_MAX: Duration = Duration::from_secs(120);
/// How often progress (created, Ready) is printed while converging.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

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

/// CPU seconds (user + system) a process has used so far; 0 once it is gone.
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command.
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / CLOCK_TICKS
}

/// `name=pid,...` from an environment variable (set by the script).
fn pid_list(var: &str) -> Vec<(String, String)> {
    let list = std::env::var(var).unwrap_or_default();
    list.split(',').filter_map(|kv| kv.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The processes whose CPU time is reported per phase: the controller, this
/// driver, and the plane's (`BENCH_CPU_PIDS`, `name=pid,...`).
struct Cpu(Vec<(String, String)>);

impl Cpu {
    fn new(controller_pid: &str) -> Self {
        let mut procs = vec![("controller".to_string(), controller_pid.to_string())];
        procs.push(("driver".to_string(), std::process::id().to_string()));
        procs.extend(pid_list("BENCH_CPU_PIDS"));
        Cpu(procs)
    }

    fn sample(&self) -> Vec<f64> {
        self.0.iter().map(|(_, pid)| cpu_secs(pid)).collect()
    }

    /// One line: CPU seconds per process between two samples.
    fn report(&self, phase: &str, secs: f64, from: &[f64], to: &[f64]) {
        let parts: Vec<String> =
            self.0.iter().zip(from.iter().zip(to)).map(|((name, _), (a, b))| format!("{name} {:.1}", b - a)).collect();
        eprintln!("bench: CPU seconds in {phase} ({secs:.1} s): {}", parts.join(", "));
    }
}

/// Processes of other API clients paused for the steady-state window
/// (`BENCH_PAUSE_PIDS`, `name=pid,...`: kube-controller-manager).
struct Paused(Vec<(String, String)>);

impl Paused {
    fn from_env() -> Self {
        Paused(pid_list("BENCH_PAUSE_PIDS"))
    }

    fn signal(&self, sig: &str) {
        for (name, pid) in &self.0 {
            let ok = std::process::Command::new("kill").args([sig, pid.as_str()]).status().is_ok_and(|s| s.success());
            if !ok {
                eprintln!("bench: could not send {sig} to {name} (pid {pid})");
            }
        }
    }

    fn names(&self) -> String {
        self.0.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", ")
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        self.signal("-CONT");
    }
}

/// Requests (of every client) in `now` since `before`, by "VERB resource",
/// those that grew, sorted by key.
fn requests_between(before: &HashMap<String, f64>, now: &HashMap<String, f64>) -> Vec<(String, f64)> {
    let mut rows: Vec<(String, f64)> = now
        .iter()
        .map(|(k, n)| (k.clone(), n - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d > 0.0)
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    rows
}

fn is_write(key: &str) -> bool {
    WRITE_VERBS.iter().any(|v| key.split(' ').next() == Some(v))
}

/// Writes (of every client) in `now` since `before`, by verb and resource.
fn writes_between(before: &HashMap<String, f64>, now: &HashMap<String, f64>) -> Vec<(String, f64)> {
    requests_between(before, now).into_iter().filter(|(k, _)| is_write(k)).collect()
}

fn ready(cb: &ChatBackend) -> bool {
    cb.status.as_ref().is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Simulates the Job controller and kubelets: every new migration Job succeeds.
fn simulate_jobs(client: Client, ns: String, done: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let jobs: Api<Job> = Api::namespaced(client, &ns);
        let permits = Arc::new(Semaphore::new(CONCURRENCY));
        let stream = watcher(jobs.clone(), watcher::Config::default()).default_backoff().applied_objects();
        futures::pin_mut!(stream);
        while let Ok(Some(job)) = stream.try_next().await {
            if job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0) > 0 {
                continue;
            }
            let (jobs, permit, done) = (jobs.clone(), permits.clone().acquire_owned().await, done.clone());
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
                        done.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            });
        }
    })
}

/// Simulates the Deployment controller and kubelets: every Deployment rolls out.
fn simulate_rollouts(client: Client, ns: String, done: Arc<AtomicUsize>) -> tokio::task::JoinHandle<()> {
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
            let (deps, permit, done) = (deps.clone(), permits.clone().acquire_owned().await, done.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let status = json!({"status": {"observedGeneration": d.metadata.generation, "replicas": want,
                    "updatedReplicas": want, "readyReplicas": want, "availableReplicas": want}});
                for _ in 0..20 {
                    if deps.patch_status(&d.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await.is_ok() {
                        done.fetch_add(1, Ordering::Relaxed);
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
    let (migrated, rolled_out) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let jobs = simulate_jobs(client.clone(), ns.clone(), migrated.clone());
    let rollouts = simulate_rollouts(client.clone(), ns.clone(), rolled_out.clone());

    let backends: Api<ChatBackend> = Api::namespaced(client.clone(), &ns);
    let ready_count = Arc::new(AtomicUsize::new(0));
    let created_count = Arc::new(AtomicUsize::new(0));
    let cpu = Cpu::new(&pid);
    let cpu_start = cpu.sample();
    let converge_r0 = apiserver_requests(&client).await?;
    let started = Instant::now();
    let progress = {
        let (created, ready, client) = (created_count.clone(), ready_count.clone(), client.clone());
        let (migrated, rolled_out) = (migrated.clone(), rolled_out.clone());
        let ips0 = converge_r0.get("POST ipaddresses").copied().unwrap_or(0.0);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(PROGRESS_EVERY).await;
                // ClusterIPs: the API server allocates them one at a time (an IPAddress each).
                let ips = apiserver_requests(&client).await.ok().and_then(|r| r.get("POST ipaddresses").copied());
                eprintln!(
                    "bench:   {:.0} s: {} created, {} ClusterIPs, {} Jobs done, {} rolled out, {} Ready",
                    started.elapsed().as_secs_f64(),
                    created.load(Ordering::Relaxed),
                    ips.map_or(0.0, |n| n - ips0),
                    migrated.load(Ordering::Relaxed),
                    rolled_out.load(Ordering::Relaxed),
                    ready.load(Ordering::Relaxed)
                );
            }
        })
    };
    let created = futures::stream::iter(0..count)
        .map(|i| {
            let (backends, created_count) = (backends.clone(), created_count.clone());
            async move {
                let cb: ChatBackend = serde_json::from_value(json!({
                    "apiVersion": "colloquy.dev/v1alpha1", "kind": "ChatBackend",
                    "metadata": {"name": format!("bench-{i:04}")},
                    "spec": {"image": "registry.test/chat-api:bench", "replicas": 1, "provider": {"mock": {}},
                             "databaseUrlSecretRef": {"name": "db", "key": "url"},
                             "apiKeySecretRef": {"name": "api", "key": "key"}}
                }))?;
                backends.create(&PostParams::default(), &cb).await?;
                created_count.fetch_add(1, Ordering::Relaxed);
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
    progress.abort();
    let ready_secs = started.elapsed().as_secs_f64();
    let n_ready = ready_count.load(Ordering::Relaxed);
    eprintln!("bench: {n_ready}/{count} Ready after {ready_secs:.1} s");
    let cpu_ready = cpu.sample();
    cpu.report("create and converge", ready_secs, &cpu_start, &cpu_ready);
    let converge_r1 = apiserver_requests(&client).await?;
    let mut rows: Vec<(String, f64)> =
        requests_between(&converge_r0, &converge_r1).into_iter().filter(|(k, _)| !k.starts_with("WATCH ")).collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    eprintln!(
        "bench: requests while converging (every client): {}",
        rows.iter().map(|(k, d)| format!("{k} {d}")).collect::<Vec<_>>().join(", ")
    );

    // Settle. apiserver_request_total cannot tell clients apart, so the window
    // must be quiet of every other one: kube-controller-manager (which still
    // catches up with the new objects, endpoint slices and endpoints of the
    // Services, PDB status and its "NoPods" Events, at its own client rate
    // limit) is paused (SIGSTOP) until the window ends, the plane's API server
    // runs without its own periodic writes (see the script), and this driver
    // only reacts to the controller's writes. Then the window starts once
    // nobody has written for QUIET: the last writes of the convergence are
    // not steady state. The controller runs throughout, so every request it
    // makes in the window (and every simulated reaction to it) is counted.
    let paused = Paused::from_env();
    paused.signal("-STOP");
    let settle_start = Instant::now();
    let settle_r0 = apiserver_requests(&client).await?;
    let mut last = settle_r0.clone();
    let mut quiet_since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = apiserver_requests(&client).await?;
        if !writes_between(&last, &now).is_empty() {
            quiet_since = Instant::now();
        }
        last = now;
        if quiet_since.elapsed() >= QUIET || settle_start.elapsed() >= SETTLE_MAX {
            break;
        }
    }
    let settled = quiet_since.elapsed() >= QUIET;
    let settle_secs = settle_start.elapsed().as_secs_f64();
    eprintln!(
        "bench: paused {}; {} after {settle_secs:.1} s; writes meanwhile: {}",
        paused.names(),
        if settled {
            format!("no writes for {} s", QUIET.as_secs())
        } else {
            "still writing (measuring anyway)".into()
        },
        writes_between(&settle_r0, &last).iter().map(|(k, d)| format!("{k} {d}")).collect::<Vec<_>>().join(", ")
    );
    let cpu_settled = cpu.sample();
    cpu.report("settle", settle_secs, &cpu_ready, &cpu_settled);

    // Steady state: one resync window.
    let r0 = apiserver_requests(&client).await?;
    let c0 = controller_reconciles(&http, &metrics_url).await?;
    tokio::time::sleep(window).await;
    let r1 = apiserver_requests(&client).await?;
    let c1 = controller_reconciles(&http, &metrics_url).await?;
    cpu.report("steady-state window", window.as_secs_f64(), &cpu_settled, &cpu.sample());
    // Watches are long-lived streams, not requests per reconcile.
    let window_rows: Vec<(String, f64)> =
        requests_between(&r0, &r1).into_iter().filter(|(k, _)| !k.starts_with("WATCH ")).collect();
    let reconciles = (c1 - c0).max(1.0);
    // `+ 0.0`: the sum of no f64 is -0.0, which printed as "-0 API requests".
    let requests: f64 = window_rows.iter().map(|(_, d)| d).sum::<f64>() + 0.0;
    let writes: f64 = window_rows.iter().filter(|(k, _)| is_write(k)).map(|(_, d)| d).sum::<f64>() + 0.0;
    eprintln!(
        "bench: steady-state window {} s: {reconciles} reconciles, {requests} API requests ({writes} writes) in the whole cluster",
        window.as_secs()
    );
    // By verb and resource.
    for (key, d) in &window_rows {
        eprintln!("bench:   {key}: {d}");
    }
    drop(paused);
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

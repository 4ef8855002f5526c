//! Two `chat-controller` processes competing for one Lease, on a real API
//! server: at most one reconciles at any moment (from their own logs, on one
//! clock), and the standby takes over within the lease duration when the
//! leader freezes (SIGSTOP: a GC pause or a partition) or dies (SIGKILL). The
//! frozen leader, resumed after losing the Lease, does not reconcile again.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::jiff::Timestamp;

const LEASE_SECS: u64 = 6;
/// The lease manager waits up to 1 s before taking an expired Lease (to
/// avoid collisions), and the test polls.
const SLACK: Duration = Duration::from_millis(2500);

struct Proc {
    id: &'static str,
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Proc {
    /// A failing test must not leave controllers running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn spawn(id: &'static str, ns: &str) -> Proc {
    let port = free_port();
    let log = std::env::temp_dir().join(format!("cc-leader-{ns}-{id}.log"));
    let file = std::fs::File::create(&log).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_chat-controller"))
        .args([
            "--namespace",
            ns,
            "--leader-election",
            "true",
            "--lease-name",
            "leader",
            "--lease-namespace",
            ns,
            "--identity",
            id,
            "--lease-duration-secs",
            &LEASE_SECS.to_string(),
            "--renew-deadline-secs",
            "4",
            "--renew-interval-secs",
            "1",
            "--resync-secs",
            "1",
            "--image-resolve-secs",
            "0",
            "--default-image",
            "registry.test/chat-api:leader",
            "--http-addr",
            &format!("127.0.0.1:{port}"),
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "info,chat_controller=debug,kube=warn")
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("start chat-controller");
    Proc { id, child, port, log }
}

fn signal(p: &Proc, sig: &str) {
    let ok = Command::new("kill").args([sig, &p.child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig} {}", p.id);
}

/// The `chat_controller_leader` gauge, or None when the process does not answer.
async fn leader_gauge(http: &reqwest::Client, p: &Proc) -> Option<bool> {
    let text = http.get(format!("http://127.0.0.1:{}/metrics", p.port)).send().await.ok()?.text().await.ok()?;
    let line = text.lines().find(|l| l.starts_with("chat_controller_leader "))?;
    Some(line.ends_with(" 1"))
}

/// (timestamp, message) of every log line.
fn events(p: &Proc) -> Vec<(Timestamp, String)> {
    std::fs::read_to_string(&p.log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["timestamp"].as_str()?.parse().ok()?, v["message"].as_str()?.to_string())))
        .collect()
}

/// Periods in which `p` ran its controller: from "controller started" to
/// "controller stopped" (or `end` when it was killed first). A period that
/// contains `frozen` (when the process was stopped) ends there: a frozen
/// process runs nothing, and it logs "controller stopped" only once resumed.
fn leading_periods(p: &Proc, end: Timestamp, frozen: Option<Timestamp>) -> Vec<(Timestamp, Timestamp)> {
    let mut out = Vec::new();
    let mut start = None;
    for (t, m) in events(p) {
        if m == "leading: controller started" {
            start = Some(t);
        } else if m == "leading: controller stopped"
            && let Some(s) = start.take()
        {
            out.push((s, t));
        }
    }
    out.extend(start.map(|s| (s, end)));
    out.into_iter()
        .map(|(s, e)| match frozen {
            Some(f) if s <= f && f <= e => (s, f),
            _ => (s, e),
        })
        .collect()
}

/// When `p` started reconciles (a reconcile starts only while its leadership
/// holds; one caught in flight by a freeze cannot write: its client is fenced).
fn reconciles(p: &Proc) -> Vec<Timestamp> {
    events(p).into_iter().filter(|(_, m)| m == "reconcile start").map(|(t, _)| t).collect()
}

async fn wait_gauge(http: &reqwest::Client, p: &Proc, want: bool, within: Duration) -> Duration {
    let t = Instant::now();
    loop {
        if leader_gauge(http, p).await == Some(want) {
            return t.elapsed();
        }
        assert!(t.elapsed() < within, "{} did not report leader={want} within {within:?}", p.id);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn two_processes_never_reconcile_at_once_and_fail_over_within_the_lease() {
    let client = client().await;
    let ns_guard = TestNs::new(&client, "cc-2proc").await;
    let ns = ns_guard.name.clone();
    put_secret(&client, &ns, "db", "url", "postgres://u:p@db/chat").await;
    put_secret(&client, &ns, "api", "key", "0123456789abcdef-internal").await;
    create_backend(&client, &ns, &mock_backend("demo", 1)).await;
    let http = reqwest::Client::builder().timeout(Duration::from_millis(400)).build().unwrap();

    let mut procs = [spawn("a", &ns), spawn("b", &ns)];
    // Whoever wins, exactly one leads and reconciles.
    let t = Instant::now();
    let first = loop {
        let (a, b) = (leader_gauge(&http, &procs[0]).await, leader_gauge(&http, &procs[1]).await);
        assert!(!(a == Some(true) && b == Some(true)), "both processes report leadership");
        if a == Some(true) {
            break 0;
        }
        if b == Some(true) {
            break 1;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "no leader elected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let second = 1 - first;
    first_migration_job(&client, &ns, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!reconciles(&procs[first]).is_empty(), "the leader reconciles");
    assert_eq!(leader_gauge(&http, &procs[second]).await, Some(false));

    // The leader freezes: the standby takes over within the lease duration.
    let frozen_at = Timestamp::now();
    signal(&procs[first], "-STOP");
    let failover = wait_gauge(&http, &procs[second], true, Duration::from_secs(LEASE_SECS) + SLACK * 4).await;
    assert!(failover <= Duration::from_secs(LEASE_SECS) + SLACK, "failover after a freeze took {failover:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Resumed, the old leader finds its term over and stops without reconciling.
    signal(&procs[first], "-CONT");
    wait_gauge(&http, &procs[first], false, Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The new leader dies: the resumed one takes over within the lease duration.
    let killed_at = Timestamp::now();
    procs[second].child.kill().unwrap();
    let _ = procs[second].child.wait();
    let failover = wait_gauge(&http, &procs[first], true, Duration::from_secs(LEASE_SECS) + SLACK * 4).await;
    assert!(failover <= Duration::from_secs(LEASE_SECS) + SLACK, "failover after a crash took {failover:?}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal(&procs[first], "-TERM");
    let _ = procs[first].child.wait();
    let end = Timestamp::now();

    // From the logs, on one clock: no reconcile of one process while the other leads.
    for (me, other) in [(first, second), (second, first)] {
        let other_end = if other == second { killed_at } else { end };
        let frozen = (other == first).then_some(frozen_at);
        let periods = leading_periods(&procs[other], other_end, frozen);
        assert!(!periods.is_empty(), "{} never led", procs[other].id);
        for t in reconciles(&procs[me]) {
            let overlap = periods.iter().find(|(s, e)| *s <= t && t <= *e);
            assert!(
                overlap.is_none(),
                "{} reconciled at {t} while {} led ({overlap:?}); logs: {} {}",
                procs[me].id,
                procs[other].id,
                procs[me].log.display(),
                procs[other].log.display()
            );
        }
    }
    for p in &procs {
        let _ = std::fs::remove_file(&p.log);
    }
}

//! The streaming benchmark's load generator (`scripts/bench.sh`): starts
//! `--turns` streamed turns (`"stream": true`, each on a new conversation) at
//! `--rate` per second, so that `rate * answer duration` turns are in flight
//! at once, reads every event, and prints one `STREAM key=value ...` line:
//! turns that failed (anything but `conversation`, deltas, `done`), the most
//! turns in flight, the time to the `conversation` event (chat-api's own first
//! byte, sent before it calls the upstream), the time to the first delta and
//! to `done` added over the upstream's own (its first chunk at once, its last
//! at `(chunks - 1) * duration / chunks`), p50/p99/max in microseconds, and
//! the client's own CPU time (it shares the machine with what it measures).
//! Before the turns it measures the machine's floor: the round trip of one
//! byte between two threads over loopback TCP, 10 ms apart (an idle machine
//! between messages, as a turn's hops are), printed as one `FLOOR` line; a
//! turn's first delta crosses at least two such round trips (client to
//! chat-api, chat-api to the upstream).
//!
//!   cargo run --release -p chat-api --example bench_stream_client -- --url http://127.0.0.1:8000 ...

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use clap::Parser;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use tokio::time::Instant;

#[derive(Parser)]
struct Args {
    #[arg(long)]
    url: String,
    #[arg(long)]
    api_key: String,
    #[arg(long)]
    user: String,
    #[arg(long, default_value_t = 10_000)]
    turns: usize,
    /// Turns started per second.
    #[arg(long, default_value_t = 1_000)]
    rate: u64,
    /// The upstream's pacing (to subtract its own times).
    #[arg(long, default_value_t = 50)]
    chunks: u32,
    #[arg(long, default_value_t = 10_000)]
    duration_ms: u64,
    /// Speak HTTP/2 (h2c, prior knowledge) over this many connections, as a
    /// proxying server or an ingress would; 0: HTTP/1.1, one connection per turn.
    #[arg(long, default_value_t = 0)]
    h2_connections: usize,
}

struct Turn {
    ok: bool,
    /// When the `conversation` event arrived.
    announced: Option<Duration>,
    first_delta: Option<Duration>,
    done: Option<Duration>,
    /// Why a failed turn failed: the HTTP status and error code, the error
    /// event's code, or the transport error's kind.
    failure: Option<String>,
}

fn failed(why: String) -> Turn {
    Turn { ok: false, announced: None, first_delta: None, done: None, failure: Some(why) }
}

fn transport(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    };
    format!("transport {kind}")
}

/// The `error.code` of a JSON error body or event payload.
fn error_code(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".to_owned())
}

async fn turn(client: reqwest::Client, url: String, body: String, key: String) -> Turn {
    let sent = Instant::now();
    let response = match client
        .post(format!("{url}/api/ai/chat"))
        .header("content-type", "application/json")
        .header("x-api-key", key)
        .body(body)
        .send()
        .await
    {
        Ok(r) if r.status().is_success() => r,
        Ok(r) => {
            let status = r.status().as_u16();
            let body = r.text().await.unwrap_or_default();
            return failed(format!("HTTP {status} {}", error_code(&body)));
        }
        Err(e) => return failed(transport(&e)),
    };
    let mut events = response.bytes_stream().eventsource();
    let (mut announced, mut first_delta, mut deltas) = (None, None, 0usize);
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => return failed(format!("stream {e}")),
        };
        match event.event.as_str() {
            "conversation" => {
                announced.get_or_insert_with(|| sent.elapsed());
            }
            "delta" => {
                deltas += 1;
                first_delta.get_or_insert_with(|| sent.elapsed());
            }
            "done" => {
                return Turn { ok: deltas > 0, announced, first_delta, done: Some(sent.elapsed()), failure: None };
            }
            "error" => return failed(format!("error event {}", error_code(&event.data))),
            other => return failed(format!("unexpected event {other}")),
        }
    }
    failed("stream ended without done".to_owned())
}

/// This process's CPU time so far (user + system), in clock ticks, from
/// `/proc/self/stat` (fields 14 and 15); 0 where there is no procfs.
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after "pid (comm) ": the 3rd field (state) is the first word.
    let fields: Vec<&str> = stat.rsplit_once(") ").map_or(Vec::new(), |(_, rest)| rest.split(' ').collect());
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    field(14) + field(15)
}

/// One timing of each turn, in microseconds, sorted.
fn sorted_micros<'a>(turns: impl Iterator<Item = &'a Turn>, pick: fn(&Turn) -> Option<Duration>) -> Vec<i64> {
    let mut us: Vec<i64> = turns.filter_map(pick).map(|d| d.as_micros() as i64).collect();
    us.sort_unstable();
    us
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Round trips of one byte between this thread and an echo thread over
/// loopback TCP (`TCP_NODELAY`), `gap` apart, in microseconds, sorted.
fn loopback_round_trips(rounds: usize, gap: Duration) -> std::io::Result<Vec<i64>> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut peer, _) = listener.accept()?;
        peer.set_nodelay(true)?;
        let mut byte = [0u8; 1];
        while peer.read(&mut byte)? == 1 {
            peer.write_all(&byte)?;
        }
        Ok(())
    });
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut micros = Vec::with_capacity(rounds);
    let mut byte = [0u8; 1];
    for _ in 0..rounds {
        let sent = std::time::Instant::now();
        stream.write_all(&byte)?;
        stream.read_exact(&mut byte)?;
        micros.push(sent.elapsed().as_micros() as i64);
        std::thread::sleep(gap);
    }
    drop(stream);
    echo.join().map_err(|_| std::io::Error::other("the echo thread panicked"))??;
    micros.sort_unstable();
    Ok(micros)
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let floor = tokio::task::spawn_blocking(|| loopback_round_trips(300, Duration::from_millis(10)))
        .await
        .expect("floor task")
        .expect("loopback round trips");
    println!(
        "FLOOR rtt_p50_us={} rtt_p99_us={} rtt_max_us={}",
        percentile(&floor, 50.0),
        percentile(&floor, 99.0),
        floor.last().copied().unwrap_or(0)
    );
    let client = |h2: bool| {
        let builder = reqwest::Client::builder().tcp_nodelay(true).timeout(Duration::from_secs(120));
        let builder = if h2 { builder.http2_prior_knowledge() } else { builder };
        builder.build().expect("HTTP client")
    };
    // One client per HTTP/2 connection (a reqwest client keeps one per host).
    let clients: Vec<reqwest::Client> = if args.h2_connections > 0 {
        (0..args.h2_connections).map(|_| client(true)).collect()
    } else {
        vec![client(false)]
    };
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.turns);
    for i in 0..args.turns {
        tokio::time::sleep_until(started + Duration::from_micros(i as u64 * 1_000_000 / args.rate.max(1))).await;
        let body = format!(
            "{{\"user_message\":\"Benchmark turn {i}: tell me a long story\",\"client_user_id\":\"{}\",\"stream\":true}}",
            args.user
        );
        let (in_flight, peak) = (in_flight.clone(), peak.clone());
        let run = turn(clients[i % clients.len()].clone(), args.url.clone(), body, args.api_key.clone());
        tasks.push(tokio::spawn(async move {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            let result = run.await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            result
        }));
    }
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        results.push(task.await.unwrap_or_else(|e| failed(format!("task {e}"))));
    }
    let step_us = (args.duration_ms * 1000 / u64::from(args.chunks.max(1))) as i64;
    let upstream_last_us = step_us * (i64::from(args.chunks) - 1);
    let ok: Vec<&Turn> = results.iter().filter(|t| t.ok).collect();
    let conv = sorted_micros(ok.iter().copied(), |t| t.announced);
    let ttfb = sorted_micros(ok.iter().copied(), |t| t.first_delta);
    let last: Vec<i64> = sorted_micros(ok.iter().copied(), |t| t.done).iter().map(|us| us - upstream_last_us).collect();
    println!(
        "STREAM turns={} failed={} peak_in_flight={} elapsed_s={:.1} cpu_ticks={} conv_p50_us={} conv_p99_us={} \
         conv_max_us={} ttfb_p50_us={} ttfb_p99_us={} ttfb_max_us={} \
         last_p50_us={} last_p99_us={} last_max_us={}",
        results.len(),
        results.len() - ok.len(),
        peak.load(Ordering::SeqCst),
        started.elapsed().as_secs_f64(),
        cpu_ticks(),
        percentile(&conv, 50.0),
        percentile(&conv, 99.0),
        conv.last().copied().unwrap_or(0),
        percentile(&ttfb, 50.0),
        percentile(&ttfb, 99.0),
        ttfb.last().copied().unwrap_or(0),
        percentile(&last, 50.0),
        percentile(&last, 99.0),
        last.last().copied().unwrap_or(0),
    );
    // When the slow ones started: the added first byte's p99 by second of
    // start (turn i starts at i / rate seconds; results are in start order).
    let per_second = args.rate.max(1) as usize;
    let by_second: Vec<String> = results
        .chunks(per_second)
        .map(|turns| {
            let firsts = sorted_micros(turns.iter().filter(|t| t.ok), |t| t.first_delta);
            format!("{:.1}", percentile(&firsts, 99.0) as f64 / 1000.0)
        })
        .collect();
    println!("STREAM-BY-SECOND {}", by_second.join(" "));
    let mut reasons: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for why in results.iter().filter_map(|t| t.failure.as_deref()) {
        *reasons.entry(why).or_default() += 1;
    }
    if !reasons.is_empty() {
        let list: Vec<String> = reasons.iter().map(|(why, n)| format!("{why}: {n}")).collect();
        println!("STREAM failures: {}", list.join("; "));
    }
}

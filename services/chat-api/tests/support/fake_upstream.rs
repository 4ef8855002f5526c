//! A scriptable fake HTTP upstream (model provider, metadata server, ...).
//!
//! ```ignore
//! let upstream = FakeUpstream::start().await;
//! upstream.push(FakeResponse::json(200, json!({"ok": true})));
//! // ... point the code under test at upstream.url ...
//! let seen = upstream.requests();
//! assert_eq!(seen[0].path, "/v1/things");
//! ```
//!
//! It speaks HTTP/1.1 and, by prior knowledge, HTTP/2 (h2c).
//!
//! Every request is recorded (before any scripted delay), then answered with
//! the responder's answer when one is set and gives one, or the next queued
//! response, or the default one. Chunked (SSE) bodies that the connection
//! dropped before their last chunk are counted: the client closed the connection.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// A request the fake received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// HTTP/1.1, or HTTP/2 (the fake also speaks h2c, by prior knowledge).
    pub version: http::Version,
    /// The client's address: one per connection.
    pub peer: SocketAddr,
}

impl RecordedRequest {
    /// The body parsed as JSON; panics (failing the test) when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("request body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// A header's value as text (the first one if repeated).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }

    /// The body as (lossy) UTF-8 text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Debug, Clone)]
enum FakeBody {
    Full(Bytes),
    /// Each item is sent as its own chunk.
    Chunks(Vec<Bytes>),
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct FakeResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: FakeBody,
    delay: Option<Duration>,
    chunk_delay: Option<Duration>,
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl FakeResponse {
    /// `status` with a JSON body (`content-type: application/json`).
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: FakeBody::Full(Bytes::from(body.to_string())),
            delay: None,
            chunk_delay: None,
            gate: None,
        }
    }

    /// A 200 `text/event-stream`; each item is sent as `data: {item}\n\n`, in its own chunk.
    pub fn sse(events: Vec<String>) -> Self {
        let chunks = events.into_iter().map(|e| Bytes::from(format!("data: {e}\n\n"))).collect();
        Self::sse_chunks(chunks)
    }

    /// A 200 `text/event-stream` whose body is exactly these chunks, written one
    /// by one (to test SSE framing split across reads).
    pub fn sse_chunks(chunks: Vec<Bytes>) -> Self {
        Self {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            body: FakeBody::Chunks(chunks),
            delay: None,
            chunk_delay: None,
            gate: None,
        }
    }

    /// `status` with an arbitrary body and content type (e.g. garbage, HTML error pages).
    pub fn raw(status: u16, content_type: &str, body: impl Into<Bytes>) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), content_type.into())],
            body: FakeBody::Full(body.into()),
            delay: None,
            chunk_delay: None,
            gate: None,
        }
    }

    /// Adds a response header (repeatable).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Waits this long before answering (the request is recorded first).
    pub fn with_delay(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }

    /// Holds the answer until `gate` has a permit for it (`add_permits`; each
    /// answer takes one), to observe what happens while an upstream call is in
    /// flight without timing anything.
    pub fn held_until(mut self, gate: Arc<tokio::sync::Semaphore>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Waits this long before each chunk of a chunked (SSE) body after the first.
    pub fn with_chunk_delay(mut self, d: Duration) -> Self {
        self.chunk_delay = Some(d);
        self
    }

    fn into_response(self, dropped: Arc<AtomicUsize>) -> Response {
        let status = StatusCode::from_u16(self.status).expect("valid status code");
        let body = match self.body {
            FakeBody::Full(bytes) => Body::from(bytes),
            FakeBody::Chunks(chunks) => {
                let chunk_delay = self.chunk_delay;
                let watch = DropWatch { remaining: chunks.len(), dropped };
                let stream = futures::stream::unfold(
                    (chunks.into_iter(), true, watch),
                    move |(mut it, first, mut watch)| async move {
                        let chunk = it.next()?;
                        if let (false, Some(d)) = (first, chunk_delay) {
                            tokio::time::sleep(d).await;
                        }
                        watch.remaining -= 1;
                        Some((Ok::<_, Infallible>(chunk), (it, false, watch)))
                    },
                );
                Body::from_stream(stream)
            }
        };
        let mut response = Response::new(body);
        *response.status_mut() = status;
        for (name, value) in self.headers {
            response.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).expect("valid header name"),
                HeaderValue::from_str(&value).expect("valid header value"),
            );
        }
        response
    }
}

/// Counts a chunked body dropped before its last chunk was taken.
struct DropWatch {
    remaining: usize,
    dropped: Arc<AtomicUsize>,
}

impl Drop for DropWatch {
    fn drop(&mut self) {
        if self.remaining > 0 {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// Picks an answer from the request itself (`None`: use the queue).
type Responder = Box<dyn Fn(&RecordedRequest) -> Option<FakeResponse> + Send + Sync>;

struct Shared {
    responder: Mutex<Option<Responder>>,
    queue: Mutex<VecDeque<FakeResponse>>,
    default: Mutex<FakeResponse>,
    requests: Mutex<Vec<RecordedRequest>>,
    dropped_streams: Arc<AtomicUsize>,
}

/// An HTTP server on `127.0.0.1:<random port>`, answering from a script. Stops when dropped.
pub struct FakeUpstream {
    /// `http://127.0.0.1:PORT`, no trailing slash.
    pub url: String,
    /// `127.0.0.1:PORT` (e.g. for `GCE_METADATA_HOST`).
    pub host: String,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeUpstream {
    pub async fn start() -> FakeUpstream {
        let shared = Arc::new(Shared {
            responder: Mutex::new(None),
            queue: Mutex::new(VecDeque::new()),
            default: Mutex::new(FakeResponse::json(500, serde_json::json!({"error": "no scripted response"}))),
            requests: Mutex::new(Vec::new()),
            dropped_streams: Arc::new(AtomicUsize::new(0)),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake upstream");
        let addr = listener.local_addr().expect("fake upstream address");
        let server = tokio::spawn(async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .await
                .expect("fake upstream server");
        });
        FakeUpstream { url: format!("http://{addr}"), host: addr.to_string(), shared, server }
    }

    /// Queues an answer (first in, first out).
    pub fn push(&self, response: FakeResponse) {
        self.shared.queue.lock().unwrap().push_back(response);
    }

    /// Answers requests `responder` recognises (returns `Some`) from it, before
    /// the queue: for upstreams that several callers use concurrently.
    pub fn respond_with(&self, responder: impl Fn(&RecordedRequest) -> Option<FakeResponse> + Send + Sync + 'static) {
        *self.shared.responder.lock().unwrap() = Some(Box::new(responder));
    }

    /// The answer used when the queue is empty.
    pub fn set_default(&self, response: FakeResponse) {
        *self.shared.default.lock().unwrap() = response;
    }

    /// Answers every request with what `f` makes of it.
    pub fn set_responder(&self, f: impl Fn(&RecordedRequest) -> FakeResponse + Send + Sync + 'static) {
        self.respond_with(move |r| Some(f(r)));
    }

    /// How many chunked bodies were dropped before their end: the client closed the connection.
    pub fn dropped_streams(&self) -> usize {
        self.shared.dropped_streams.load(Ordering::SeqCst)
    }

    /// Waits (up to `within`) until `n` chunked bodies were dropped; returns the count.
    pub async fn wait_dropped_streams(&self, n: usize, within: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + within;
        while self.dropped_streams() < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.dropped_streams()
    }

    /// Everything received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The only request received; panics unless exactly one arrived.
    pub fn single_request(&self) -> RecordedRequest {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "expected exactly one request, got {requests:#?}");
        requests.into_iter().next().unwrap()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let recorded = RecordedRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
        version: parts.version,
        peer,
    };
    let chosen = shared.responder.lock().unwrap().as_ref().and_then(|responder| responder(&recorded));
    shared.requests.lock().unwrap().push(recorded);
    let response = chosen.unwrap_or_else(|| {
        let next = shared.queue.lock().unwrap().pop_front();
        next.unwrap_or_else(|| shared.default.lock().unwrap().clone())
    });
    if let Some(gate) = &response.gate
        && let Ok(permit) = gate.acquire().await
    {
        permit.forget();
    }
    if let Some(delay) = response.delay {
        tokio::time::sleep(delay).await;
    }
    response.into_response(shared.dropped_streams.clone())
}

//! The provider connections: a set of HTTP clients, each carrying at most
//! `streams_per_connection` provider requests at once, with another client
//! (so another connection) added when every one is full.
//!
//! Why not one `reqwest::Client`: over HTTP/2 (what `https://` providers
//! negotiate) its pool keeps exactly one connection per host, and requests
//! beyond the server's `SETTINGS_MAX_CONCURRENT_STREAMS` (commonly 100) wait
//! inside hyper for a stream to end (hyperium/hyper#2197,
//! seanmonstar/reqwest#976). With answers streaming for 10 to 60 s, the 101st
//! turn of a pod would wait for a whole answer before its request even left.
//! No maintained crate spreads HTTP/2 streams over several connections for
//! reqwest, hence this small set: each member is a `reqwest::Client` (its own
//! pool, so its own connection per host), and a [`Lease`] counts a request
//! against its member until the request's response, streamed or not, is done.
//!
//! Over HTTP/1.1 the set changes nothing that matters (each member pools one
//! connection per request in flight, as a single client would).
//!
//! Many multiplexed streams also cost far less than as many HTTP/1.1
//! connections: the streaming bench measured about 36 KiB of buffers and
//! tasks per HTTP/1.1 upstream connection, one per streamed turn.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use colloquy_contract::{defaults, http_version};

/// The HTTP version of provider calls (`LLM_HTTP_VERSION`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HttpVersion {
    /// HTTP/2 where TLS negotiates it (ALPN), HTTP/1.1 over plain `http://`.
    #[default]
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only, over plain `http://` too (prior knowledge, h2c).
    Http2,
}

impl HttpVersion {
    /// The value of `LLM_HTTP_VERSION` naming this version.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => http_version::AUTO,
            Self::Http1 => http_version::HTTP1,
            Self::Http2 => http_version::HTTP2,
        }
    }

    /// Parses a value of `LLM_HTTP_VERSION`.
    pub fn parse(value: &str) -> Option<Self> {
        [Self::Auto, Self::Http1, Self::Http2].into_iter().find(|v| v.as_str() == value)
    }
}

/// How provider connections are made and shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionSettings {
    pub http_version: HttpVersion,
    /// Requests in flight per member of the set (`LLM_STREAMS_PER_CONNECTION`).
    pub streams_per_connection: usize,
}

impl Default for ConnectionSettings {
    fn default() -> Self {
        Self { http_version: HttpVersion::Auto, streams_per_connection: defaults::LLM_STREAMS_PER_CONNECTION }
    }
}

/// How long an unanswered HTTP/2 PING may take before the connection (and
/// every stream on it) is given up: a half-open connection must not leave a
/// hundred answers waiting for the per-chunk timeout one by one.
const HTTP2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an HTTP/2 connection carrying streams is pinged.
const HTTP2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);

/// The outbound client settings every client of the process shares.
pub fn client_builder(version: HttpVersion) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(concat!("colloquy-chat-api/", env!("CARGO_PKG_VERSION")))
        .http2_keep_alive_interval(HTTP2_KEEP_ALIVE_INTERVAL)
        .http2_keep_alive_timeout(HTTP2_KEEP_ALIVE_TIMEOUT);
    match version {
        HttpVersion::Auto => builder,
        HttpVersion::Http1 => builder.http1_only(),
        HttpVersion::Http2 => builder.http2_prior_knowledge(),
    }
}

struct Member {
    client: reqwest::Client,
    in_flight: AtomicUsize,
}

/// The provider connections, cheap to clone (one shared set).
#[derive(Clone)]
pub struct Connections {
    inner: Arc<Inner>,
}

struct Inner {
    settings: ConnectionSettings,
    /// Never shrinks: an idle member's connections close after the pool's
    /// idle timeout, leaving only the client itself (a few KiB). The number of
    /// members is bounded by the requests in flight (`MAX_IN_FLIGHT`) divided
    /// by `streams_per_connection`.
    members: Mutex<Vec<Arc<Member>>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections").field("settings", &self.inner.settings).field("members", &self.members()).finish()
    }
}

impl Connections {
    /// A set with one member; fails only when the TLS backend cannot start.
    pub fn new(settings: ConnectionSettings) -> Result<Self, reqwest::Error> {
        let first = Arc::new(Member { client: client_builder(settings.http_version).build()?, in_flight: 0.into() });
        let settings =
            ConnectionSettings { streams_per_connection: settings.streams_per_connection.max(1), ..settings };
        Ok(Self { inner: Arc::new(Inner { settings, members: Mutex::new(vec![first]) }) })
    }

    /// A client for a call that is not counted (small, rare requests such as
    /// access tokens): the first member's.
    pub fn client(&self) -> reqwest::Client {
        self.lock()[0].client.clone()
    }

    /// How many clients the set holds (each at most one connection per host over HTTP/2).
    pub fn members(&self) -> usize {
        self.lock().len()
    }

    /// A client with room for one more request, counted until the lease is
    /// dropped: the first member below `streams_per_connection`, or a new one.
    pub fn acquire(&self) -> Lease {
        let limit = self.inner.settings.streams_per_connection;
        let mut members = self.lock();
        let member = match members.iter().find(|m| m.in_flight.load(Ordering::Relaxed) < limit) {
            Some(m) => m.clone(),
            None => match client_builder(self.inner.settings.http_version).build() {
                Ok(client) => {
                    let m = Arc::new(Member { client, in_flight: 0.into() });
                    members.push(m.clone());
                    tracing::debug!(members = members.len(), "provider connections: added a client");
                    m
                }
                Err(e) => {
                    // Cannot happen once the first client was built (same TLS
                    // configuration); share the least loaded rather than fail.
                    tracing::warn!(error = %e, "provider connections: could not add a client");
                    members.iter().min_by_key(|m| m.in_flight.load(Ordering::Relaxed)).expect("one member").clone()
                }
            },
        };
        member.in_flight.fetch_add(1, Ordering::Relaxed);
        Lease { member }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Member>>> {
        // The critical sections cannot panic half-way; a poisoned lock still holds a valid list.
        self.inner.members.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests in flight per member, in order (the metrics' gauges, tests).
    pub fn in_flight(&self) -> Vec<usize> {
        self.lock().iter().map(|m| m.in_flight.load(Ordering::Relaxed)).collect()
    }
}

/// One request's place on a member of the set; dropping it frees the place.
/// A streamed response keeps its lease until the stream is dropped.
pub struct Lease {
    member: Arc<Member>,
}

impl Lease {
    pub fn client(&self) -> &reqwest::Client {
        &self.member.client
    }

    /// `stream`, holding this lease until the stream is dropped (its
    /// response body is read for as long as the stream lives).
    pub fn hold(self, stream: super::ProviderStream) -> super::ProviderStream {
        use futures::StreamExt;
        Box::pin(stream.map(move |event| {
            let _held = &self;
            event
        }))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.member.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(per: usize) -> Connections {
        Connections::new(ConnectionSettings { http_version: HttpVersion::Http2, streams_per_connection: per }).unwrap()
    }

    #[test]
    fn a_member_is_added_only_when_every_member_is_full() {
        let c = set(2);
        let a = c.acquire();
        let b = c.acquire();
        assert_eq!(c.in_flight(), [2]);
        let d = c.acquire();
        assert_eq!(c.in_flight(), [2, 1]);
        drop(a);
        // The freed place on the first member is taken before the second's.
        let e = c.acquire();
        assert_eq!(c.in_flight(), [2, 1]);
        drop((b, d, e));
        assert_eq!(c.in_flight(), [0, 0]);
        assert_eq!(c.members(), 2, "members are kept for reuse");
    }

    #[test]
    fn versions_round_trip_through_their_names() {
        for v in http_version::ALL {
            assert_eq!(HttpVersion::parse(v).unwrap().as_str(), *v);
        }
        assert_eq!(HttpVersion::parse("h3"), None);
    }
}

//! `chat-api serve` and `chat-api migrate`: wiring configuration, database,
//! provider and HTTP servers together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::auth::Authenticator;
use crate::auth::api_key::ApiKey;
use crate::auth::jwt::JwtVerifier;
use crate::chat::{self, ChatService, ChatSettings};
use crate::config::{Config, DatabaseConfig, ShutdownConfig};
use crate::idempotency::Idempotency;
use crate::limits::RateLimiter;
use crate::metrics::Metrics;
use crate::routes::{self, AppState};
use crate::shutdown::{self, Lifecycle};
use crate::{db, llm, sweep};

/// The shared outbound HTTP client of everything but model calls (JWKS,
/// metadata server, Secret Manager); model calls go through
/// [`llm::Connections`].
pub fn http_client() -> reqwest::Client {
    llm::connections::client_builder(llm::connections::HttpVersion::Auto).build().expect("TLS backend initialises")
}

/// The clients of provider calls for `config`.
pub fn provider_clients(config: &Config, http: reqwest::Client) -> llm::Clients {
    let connections = llm::Connections::new(config.connections).expect("TLS backend initialises");
    llm::Clients { connections, http }
}

/// A listener whose accepted connections have `TCP_NODELAY` set: a streamed
/// answer is many small writes (one event each), and with Nagle's algorithm
/// every write after the first waits for the client's ACK, which Linux delays
/// by up to 40 ms. The streaming bench showed exactly that: the first delta
/// came about 42 ms after the `conversation` event, whatever the load.
/// (`axum::serve` leaves Nagle on; reqwest, our client side, turns it off.)
pub type ApiListener = axum::serve::TapIo<TcpListener, fn(&mut tokio::net::TcpStream)>;

/// Binds `addr` for HTTP serving (see [`ApiListener`]).
pub async fn listen(addr: SocketAddr) -> std::io::Result<ApiListener> {
    use axum::serve::ListenerExt;
    fn no_delay(stream: &mut tokio::net::TcpStream) {
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY on an accepted connection");
        }
    }
    Ok(TcpListener::bind(addr).await?.tap_io(no_delay as fn(&mut tokio::net::TcpStream)))
}

/// Builds the application state from a validated configuration.
pub fn state(config: &Config, pool: sqlx::PgPool, http: reqwest::Client) -> AppState {
    state_with(config, pool, &provider_clients(config, http))
}

/// [`state`] with the provider clients given.
pub fn state_with(config: &Config, pool: sqlx::PgPool, clients: &llm::Clients) -> AppState {
    let http = clients.http.clone();
    let metrics = Arc::new(Metrics::new());
    metrics.watch_connections(clients.connections.clone());
    let provider = llm::build_resilient(
        &config.provider,
        config.fallback_provider.as_ref(),
        config.resilience,
        clients,
        config.llm_timeout,
        metrics.clone(),
    );
    let auth = Arc::new(Authenticator::new(ApiKey::new(&config.internal_api_key), JwtVerifier::new(&config.jwt, http)));
    let settings = ChatSettings {
        system_prompt: config.system_prompt.clone(),
        max_history_messages: config.max_history_messages,
        max_message_chars: config.max_message_chars,
        llm_timeout: config.llm_timeout,
        turn_wait: config.turn_wait,
        summaries: config.summaries,
        titles: config.titles,
    };
    let chat = ChatService::new(pool.clone(), provider, settings, metrics.clone());
    let idempotency = Arc::new(Idempotency::new(
        pool.clone(),
        config.limits.idempotency_ttl,
        config.http.request_timeout,
        config.http.max_body_bytes,
        metrics.clone(),
    ));
    AppState {
        chat,
        auth,
        limiter: RateLimiter::new(&config.limits, pool.clone()),
        idempotency,
        pool,
        metrics,
        http: Arc::new(config.http.clone()),
        lifecycle: Lifecycle::new(),
    }
}

/// Runs the API and metrics servers until SIGTERM or Ctrl-C, then shuts down
/// gracefully ([`crate::shutdown`]). `http` is the client that already
/// resolved the secrets (one connection pool per process).
pub async fn serve(config: Config, http: reqwest::Client) -> anyhow::Result<()> {
    let pool = db::lazy_pool(&config.database)?;
    if config.run_migrations {
        db::wait_until_reachable(&pool, &config.database).await?;
        db::migrate(&pool).await?;
        tracing::info!("migrations applied");
    }
    tokio::spawn(db::warm(pool.clone()));
    let clients = provider_clients(&config, http);
    crate::provider_probe::install(crate::provider_probe::ProviderProbe::new(
        config.provider.clone(),
        &clients,
        crate::provider_probe::interval(),
    ));
    let state = state_with(&config, pool.clone(), &clients);
    tracing::info!(
        provider = state.chat.provider.name(),
        model = state.chat.provider.model(),
        llm_http_version = config.connections.http_version.as_str(),
        bearer_auth = config.jwt.enabled(),
        rate_limit_rpm = config.limits.requests_per_minute,
        rate_limit_tpm = config.limits.tokens_per_minute,
        "configured"
    );
    let lifecycle = state.lifecycle.clone();
    let api = routes::api_router(state.clone());
    let metrics = routes::metrics_router(state.metrics.clone(), pool.clone());

    let api_addr = SocketAddr::new(config.host, config.port);
    let metrics_addr = SocketAddr::new(config.host, config.metrics_port);
    let api_listener = listen(api_addr).await.map_err(|e| anyhow::anyhow!("PORT {api_addr}: {e}"))?;
    let metrics_listener =
        listen(metrics_addr).await.map_err(|e| anyhow::anyhow!("METRICS_PORT {metrics_addr}: {e}"))?;
    tracing::info!(%api_addr, %metrics_addr, "listening");
    let sweeper = tokio::spawn(sweep::forever(pool.clone()));

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let worker = tokio::spawn(chat::worker::run(state.chat.clone(), stop_rx.clone()));
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // `into_make_service`: the router's routes are built once, not for every
    // connection (axum's default re-runs `with_state` per connection: about
    // 10 KB of boxed services per connection, which counts with 10,000 streams open).
    let api_server = axum::serve(api_listener, api.into_make_service()).with_graceful_shutdown(wait(stop_rx.clone()));
    let metrics_server = axum::serve(metrics_listener, metrics).with_graceful_shutdown(wait(stop_rx));
    let servers = async move {
        let (api_result, metrics_result) = tokio::join!(api_server, metrics_server);
        api_result.and(metrics_result)
    };
    let ShutdownConfig { drain, grace } = config.shutdown;
    let shutdown = async move {
        shutdown::signal().await;
        lifecycle.start_draining();
        tracing::info!(drain_secs = drain.as_secs(), "shutting down: not ready; still accepting connections");
        tokio::time::sleep(drain).await;
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutting down: refusing new connections, finishing in-flight requests"
        );
        let _ = stop_tx.send(true);
        tokio::time::sleep(grace).await;
    };
    let result = tokio::select! {
        result = servers => result.map_err(anyhow::Error::from),
        () = shutdown => {
            tracing::warn!("shutdown grace period over: exiting with requests still in flight");
            Ok(())
        }
    };
    sweeper.abort();
    // The worker hands unfinished tasks back to the database before the pool
    // closes (it stopped with the listeners).
    let _ = tokio::time::timeout(Duration::from_secs(5), worker).await;
    // Requests cut at the end of the grace period may still hold connections.
    let _ = tokio::time::timeout(Duration::from_secs(2), pool.close()).await;
    tracing::info!("stopped");
    result
}

/// Applies migrations and returns (`chat-api migrate`).
pub async fn migrate(database: &DatabaseConfig) -> anyhow::Result<()> {
    let pool = db::lazy_pool(database)?;
    db::wait_until_reachable(&pool, database).await?;
    db::migrate(&pool).await?;
    let applied = db::MIGRATOR.iter().count();
    tracing::info!(migrations = applied, "database schema is up to date");
    pool.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use axum::serve::Listener;

    #[tokio::test]
    async fn accepted_connections_send_small_writes_at_once() {
        let mut listener = super::listen("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, peer) = listener.accept().await;
        assert_eq!(peer, client.local_addr().unwrap());
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY is set on accepted connections");
        // A plain listener leaves it off: the test would catch a regression.
        let plain = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let _client = tokio::net::TcpStream::connect(plain.local_addr().unwrap()).await.unwrap();
        assert!(!plain.accept().await.unwrap().0.nodelay().unwrap());
    }
}

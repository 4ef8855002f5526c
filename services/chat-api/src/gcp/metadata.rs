//! Access tokens from the GCE/GKE metadata server (Workload Identity), cached
//! until shortly before they expire. Transient failures (connection errors,
//! 5xx, 429) are retried a few times with jittered backoff, as Google's auth
//! libraries do: the GKE metadata server is known to fail briefly right
//! after a pod starts.

use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use serde::Deserialize;
use tokio::sync::Mutex;

/// Refresh this long before the token's stated expiry.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
const TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
/// Retries of a transient failure (so at most four requests per token).
const RETRIES: usize = 3;
/// Each request's own timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("metadata server token request failed: {0}")]
pub struct TokenError(pub String);

/// One failed request, and whether another may succeed.
struct Attempt {
    error: TokenError,
    transient: bool,
}

fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .with_max_times(RETRIES)
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

struct Cached {
    token: String,
    refresh_at: Instant,
}

/// Fetches and caches the default service account's OAuth2 access token.
pub struct MetadataTokenSource {
    http: reqwest::Client,
    url: String,
    cached: Mutex<Option<Cached>>,
}

impl MetadataTokenSource {
    /// `host` is `GCE_METADATA_HOST` (host[:port]) or `metadata.google.internal`.
    pub fn new(http: reqwest::Client, host: &str) -> Self {
        let base = if host.starts_with("http://") || host.starts_with("https://") {
            host.trim_end_matches('/').to_owned()
        } else {
            format!("http://{host}")
        };
        Self { http, url: format!("{base}{TOKEN_PATH}"), cached: Mutex::new(None) }
    }

    /// A valid access token, from cache when it is fresh.
    pub async fn token(&self) -> Result<String, TokenError> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| Instant::now() < c.refresh_at) {
            return Ok(c.token.clone());
        }
        let body = (|| self.fetch())
            .retry(backoff())
            .when(|a: &Attempt| a.transient)
            .notify(|a: &Attempt, wait: Duration| {
                tracing::info!(error = %a.error, wait_ms = wait.as_millis() as u64, "retrying the metadata server");
            })
            .await
            .map_err(|a| a.error)?;
        let lifetime = Duration::from_secs(body.expires_in).saturating_sub(REFRESH_MARGIN);
        *cached = Some(Cached { token: body.access_token.clone(), refresh_at: Instant::now() + lifetime });
        Ok(body.access_token)
    }

    async fn fetch(&self) -> Result<TokenResponse, Attempt> {
        let response = self
            .http
            .get(&self.url)
            .header("Metadata-Flavor", "Google")
            .timeout(REQUEST_TIMEOUT)
            .send()
            .await
            .map_err(|e| Attempt { error: TokenError(format!("{}: {e}", self.url)), transient: true })?;
        let status = response.status();
        if !status.is_success() {
            let transient = status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
            return Err(Attempt { error: TokenError(format!("{} answered {status}", self.url)), transient });
        }
        response.json().await.map_err(|e| Attempt {
            error: TokenError(format!("unreadable token response: {e}")),
            transient: e.is_body() || e.is_timeout(),
        })
    }
}

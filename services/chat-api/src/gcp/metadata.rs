//! Access tokens from the GCE/GKE metadata server (Workload Identity), cached
//! until shortly before they expire.

use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Mutex;

/// Refresh this long before the token's stated expiry.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);
const TOKEN_PATH: &str = "/computeMetadata/v1/instance/service-accounts/default/token";

#[derive(Debug, thiserror::Error)]
#[error("metadata server token request failed: {0}")]
pub struct TokenError(pub String);

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
        let response = self
            .http
            .get(&self.url)
            .header("Metadata-Flavor", "Google")
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| TokenError(format!("{}: {e}", self.url)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(TokenError(format!("{} answered {status}", self.url)));
        }
        let body: TokenResponse =
            response.json().await.map_err(|e| TokenError(format!("unreadable token response: {e}")))?;
        let lifetime = Duration::from_secs(body.expires_in).saturating_sub(REFRESH_MARGIN);
        *cached = Some(Cached { token: body.access_token.clone(), refresh_at: Instant::now() + lifetime });
        Ok(body.access_token)
    }
}

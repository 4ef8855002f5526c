//! What an image reference points to: its digest and the chat API's
//! migrations version from the image's label, read from the registry (OCI
//! distribution API, through `oci-client`). Answers are cached per reference
//! and refreshed at most every `refresh` (so a tag pushed again is noticed);
//! a registry that cannot be reached leaves both unknown, and the controller
//! falls back to the reference itself ("digest when known").

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use colloquy_contract::image_labels;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client as OciClient, Reference};
use tokio::time::Instant;
use tracing::{debug, info};

/// What the registry said about a reference.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resolved {
    /// `sha256:...` of what the reference points to (a multi-platform index or a manifest).
    pub digest: Option<String>,
    /// The image's `dev.colloquy.migrations-version` label.
    pub migrations_version: Option<i64>,
    /// Why the registry could not answer, if it could not.
    pub error: Option<String>,
}

/// The digest part of a reference (`...@sha256:...`), if it has one.
pub fn digest_of(reference: &str) -> Option<&str> {
    reference.rsplit_once('@').map(|(_, d)| d).filter(|d| d.contains(':'))
}

/// `reference` pinned to `digest` (the tag is kept for readers: `repo:tag@sha256:...`).
pub fn pinned(reference: &str, digest: &str) -> String {
    match digest_of(reference) {
        Some(_) => reference.to_string(),
        None => format!("{reference}@{digest}"),
    }
}

/// Registry credentials of a `.dockerconfigjson` for `registry`, if it has some.
pub fn docker_config_auth(config_json: &[u8], registry: &str) -> Option<(String, String)> {
    let v: serde_json::Value = serde_json::from_slice(config_json).ok()?;
    let auths = v.get("auths")?.as_object()?;
    let entry = auths.iter().find(|(host, _)| {
        let h = host.trim_start_matches("https://").trim_start_matches("http://");
        h.split('/').next() == Some(registry)
    })?;
    let e = entry.1;
    if let (Some(u), Some(p)) = (e.get("username").and_then(|u| u.as_str()), e.get("password").and_then(|p| p.as_str()))
    {
        return Some((u.to_string(), p.to_string()));
    }
    let raw = base64::engine::general_purpose::STANDARD.decode(e.get("auth")?.as_str()?).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (u, p) = text.split_once(':')?;
    Some((u.to_string(), p.to_string()))
}

/// The registry host of a reference (`docker.io` for short names).
pub fn registry_of(reference: &str) -> Option<String> {
    Reference::try_from(reference).ok().map(|r| r.registry().to_string())
}

struct Entry {
    fetched: Instant,
    resolved: Resolved,
}

/// One reference's cached answer; its lock makes concurrent lookups of it wait for one.
type Slot = Arc<tokio::sync::Mutex<Option<Entry>>>;

/// Cached lookups of image references.
#[derive(Clone)]
pub struct ImageResolver {
    client: Option<Arc<OciClient>>,
    refresh: Duration,
    cache: Arc<Mutex<HashMap<String, Slot>>>,
}

impl ImageResolver {
    /// `refresh`: how long an answer is reused; zero turns lookups off.
    /// `insecure`: registries (`host:port`) spoken to over plain HTTP.
    pub fn new(refresh: Duration, insecure: Vec<String>) -> Self {
        let client = (!refresh.is_zero()).then(|| {
            let config = ClientConfig {
                protocol: if insecure.is_empty() {
                    ClientProtocol::Https
                } else {
                    ClientProtocol::HttpsExcept(insecure)
                },
                read_timeout: Some(Duration::from_secs(5)),
                connect_timeout: Some(Duration::from_secs(3)),
                ..Default::default()
            };
            Arc::new(OciClient::new(config))
        });
        Self { client, refresh, cache: Default::default() }
    }

    /// Lookups off (tests, air-gapped clusters without a registry mirror).
    pub fn disabled() -> Self {
        Self::new(Duration::ZERO, Vec::new())
    }

    /// The cached answer for `reference`, looked up again when older than the
    /// refresh interval. `auth`: credentials for its registry, awaited only
    /// when a lookup is due.
    pub async fn resolve(
        &self,
        reference: &str,
        auth: impl std::future::Future<Output = Option<(String, String)>>,
    ) -> Resolved {
        let Some(client) = &self.client else {
            return Resolved { digest: digest_of(reference).map(str::to_string), ..Default::default() };
        };
        let slot = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.entry(reference.to_string()).or_default().clone()
        };
        // One lookup per reference at a time; the others wait for its answer.
        let mut entry = slot.lock().await;
        if let Some(e) = entry.as_ref()
            && e.fetched.elapsed() < self.refresh
        {
            return e.resolved.clone();
        }
        let resolved = lookup(client, reference, auth.await).await;
        match &resolved.error {
            Some(e) => debug!(image = %reference, error = %e, "image lookup failed; using the reference as is"),
            None => {
                info!(image = %reference, digest = ?resolved.digest, version = ?resolved.migrations_version, "image resolved")
            }
        }
        *entry = Some(Entry { fetched: Instant::now(), resolved: resolved.clone() });
        resolved
    }
}

async fn lookup(client: &OciClient, reference: &str, auth: Option<(String, String)>) -> Resolved {
    let known_digest = digest_of(reference).map(str::to_string);
    let r = match Reference::try_from(reference) {
        Ok(r) => r,
        Err(e) => {
            return Resolved {
                digest: known_digest,
                error: Some(format!("invalid reference: {e}")),
                ..Default::default()
            };
        }
    };
    let auth = match auth {
        Some((u, p)) => RegistryAuth::Basic(u, p),
        None => RegistryAuth::Anonymous,
    };
    let digest = match &known_digest {
        Some(d) => d.clone(),
        None => match client.fetch_manifest_digest(&r, &auth).await {
            Ok(d) => d,
            Err(e) => return Resolved { error: Some(e.to_string()), ..Default::default() },
        },
    };
    let migrations_version = match client.pull_manifest_and_config(&r, &auth).await {
        Ok((_, _, config)) => labels_version(&config),
        Err(e) => return Resolved { digest: Some(digest), error: Some(e.to_string()), ..Default::default() },
    };
    Resolved { digest: Some(digest), migrations_version, error: None }
}

/// The migrations version label of an image config (`config.Labels`).
pub fn labels_version(config_json: &str) -> Option<i64> {
    let v: serde_json::Value = serde_json::from_str(config_json).ok()?;
    let label = v.get("config")?.get("Labels")?.get(image_labels::MIGRATIONS_VERSION)?;
    label.as_str()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_pinning() {
        assert_eq!(digest_of("r/x:1@sha256:ab"), Some("sha256:ab"));
        assert_eq!(digest_of("r/x:1"), None);
        assert_eq!(pinned("r/x:1", "sha256:ab"), "r/x:1@sha256:ab");
        assert_eq!(pinned("r/x@sha256:ab", "sha256:cd"), "r/x@sha256:ab");
        assert_eq!(registry_of("ghcr.io/colloquy-dev/chat-api:1").as_deref(), Some("ghcr.io"));
        assert_eq!(registry_of("127.0.0.1:5000/chat-api:1").as_deref(), Some("127.0.0.1:5000"));
    }

    #[test]
    fn label_and_docker_config() {
        let cfg = r#"{"architecture":"amd64","config":{"Labels":{"dev.colloquy.migrations-version":"7"}}}"#;
        assert_eq!(labels_version(cfg), Some(7));
        assert_eq!(labels_version(r#"{"config":{}}"#), None);
        let dc =
            br#"{"auths":{"https://ghcr.io":{"auth":"dXNlcjpwYXNz"},"r.example":{"username":"a","password":"b"}}}"#;
        assert_eq!(docker_config_auth(dc, "ghcr.io"), Some(("user".into(), "pass".into())));
        assert_eq!(docker_config_auth(dc, "r.example"), Some(("a".into(), "b".into())));
        assert_eq!(docker_config_auth(dc, "other"), None);
    }
}

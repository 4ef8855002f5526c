//! A fake container registry speaking the OCI distribution API (the parts a
//! digest and label lookup uses: `/v2/`, manifests by tag or digest, blobs),
//! with real sha256 digests. `push` moves a tag to a new image.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use sha2::{Digest, Sha256};

const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const CONFIG_TYPE: &str = "application/vnd.oci.image.config.v1+json";

#[derive(Default)]
struct Inner {
    /// tag -> manifest digest
    tags: HashMap<String, String>,
    /// digest -> (media type, bytes)
    blobs: HashMap<String, (String, Vec<u8>)>,
}

#[derive(Clone, Default)]
pub struct FakeRegistry {
    inner: Arc<Mutex<Inner>>,
    /// Manifest requests served (HEAD and GET).
    pub manifest_requests: Arc<AtomicUsize>,
    pub host: String,
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl FakeRegistry {
    /// Starts the registry on a free loopback port.
    pub async fn start() -> Self {
        let mut reg = FakeRegistry::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        reg.host = listener.local_addr().unwrap().to_string();
        let app = Router::new()
            .route("/v2/", any(|| async { (StatusCode::OK, "{}") }))
            .route("/v2/{*rest}", any(serve))
            .with_state(reg.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        reg
    }

    /// Points `repo:tag` at a new image whose label says `migrations_version`
    /// (and `salt` makes its content unique); returns the manifest digest.
    pub fn push(&self, tag: &str, migrations_version: i64, salt: &str) -> String {
        let config = serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Labels": {"dev.colloquy.migrations-version": migrations_version.to_string(), "salt": salt}},
            "rootfs": {"type": "layers", "diff_ids": []},
        })
        .to_string()
        .into_bytes();
        let config_digest = digest(&config);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "config": {"mediaType": CONFIG_TYPE, "digest": config_digest, "size": config.len()},
            "layers": [],
        })
        .to_string()
        .into_bytes();
        let manifest_digest = digest(&manifest);
        let mut inner = self.inner.lock().unwrap();
        inner.blobs.insert(config_digest, (CONFIG_TYPE.to_string(), config));
        inner.blobs.insert(manifest_digest.clone(), (MANIFEST_TYPE.to_string(), manifest));
        inner.tags.insert(tag.to_string(), manifest_digest.clone());
        manifest_digest
    }
}

async fn serve(State(reg): State<FakeRegistry>, method: Method, Path(rest): Path<String>) -> Response {
    // <name...>/manifests/<reference> or <name...>/blobs/<digest>
    let (kind, reference) = if let Some((_, r)) = rest.rsplit_once("/manifests/") {
        ("manifests", r.to_string())
    } else if let Some((_, r)) = rest.rsplit_once("/blobs/") {
        ("blobs", r.to_string())
    } else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let inner = reg.inner.lock().unwrap();
    let key = if kind == "manifests" {
        reg.manifest_requests.fetch_add(1, Ordering::SeqCst);
        inner.tags.get(&reference).cloned().unwrap_or(reference)
    } else {
        reference
    };
    let Some((media_type, bytes)) = inner.blobs.get(&key).cloned() else {
        return (StatusCode::NOT_FOUND, r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}"#)
            .into_response();
    };
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(&media_type).unwrap());
    headers.insert("docker-content-digest", HeaderValue::from_str(&key).unwrap());
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    if method == Method::HEAD {
        return (StatusCode::OK, headers).into_response();
    }
    (StatusCode::OK, headers, bytes).into_response()
}

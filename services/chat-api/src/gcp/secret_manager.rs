//! Reads secrets from Google Secret Manager's REST API (the seed's mode).

use base64::Engine;
use serde::Deserialize;

use super::metadata::MetadataTokenSource;

pub const DEFAULT_ENDPOINT: &str = "https://secretmanager.googleapis.com";

/// proto3 JSON leaves out empty fields: a secret version whose payload is
/// empty comes back without `data` (and possibly without `payload`).
#[derive(Deserialize)]
struct AccessResponse {
    #[serde(default)]
    payload: Payload,
}

#[derive(Deserialize, Default)]
struct Payload {
    #[serde(default)]
    data: String,
}

/// A Secret Manager client for one project.
pub struct SecretManager<'a> {
    pub http: &'a reqwest::Client,
    pub endpoint: &'a str,
    pub project: &'a str,
    pub tokens: &'a MetadataTokenSource,
}

impl SecretManager<'_> {
    /// The latest version of secret `name`, decoded as UTF-8 (empty when the
    /// payload is). Errors never contain the value.
    pub async fn access_latest(&self, name: &str) -> Result<String, String> {
        let url = format!(
            "{}/v1/projects/{}/secrets/{}/versions/latest:access",
            self.endpoint.trim_end_matches('/'),
            self.project,
            name
        );
        let token = self.tokens.token().await.map_err(|e| e.to_string())?;
        let response = self
            .http
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| format!("Secret Manager request for {name:?} failed: {e}"))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("Secret Manager answered {status} for secret {name:?} in project {:?}", self.project));
        }
        let body: AccessResponse =
            response.json().await.map_err(|e| format!("unreadable Secret Manager response: {e}"))?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body.payload.data.as_bytes())
            .map_err(|_| format!("secret {name:?} payload is not base64"))?;
        String::from_utf8(bytes).map_err(|_| format!("secret {name:?} is not UTF-8"))
    }
}

//! Where a chat-completions request goes and how it authenticates: the only
//! differences between Azure OpenAI and OpenAI-compatible servers.

use reqwest::Url;

use crate::config::Secret;

/// How requests authenticate.
#[derive(Clone)]
pub enum Auth {
    /// Azure OpenAI: `api-key: <key>`.
    ApiKeyHeader(Secret),
    /// OpenAI and compatible servers: `Authorization: Bearer <key>`.
    Bearer(Secret),
    /// A server that needs no credential (a local vLLM or Ollama).
    None,
}

impl Auth {
    pub(super) fn secret(&self) -> Option<&str> {
        match self {
            Self::ApiKeyHeader(s) | Self::Bearer(s) => Some(s.expose()),
            Self::None => None,
        }
    }
}

/// A chat-completions endpoint.
#[derive(Clone)]
pub struct Endpoint {
    /// The `LLM_PROVIDER` name.
    pub(super) provider: &'static str,
    /// The full URL, query included.
    pub(super) url: Url,
    /// The configured model (metrics label, and the answer's model when it names none).
    pub(super) model: String,
    /// Whether the body names the model (not on Azure, where the deployment in the URL picks it).
    pub(super) model_in_body: bool,
    pub(super) auth: Auth,
    /// The header carrying our request id.
    pub(super) request_id_header: &'static str,
    /// What a 401/403 says was rejected.
    pub(super) credential: &'static str,
}

impl Endpoint {
    /// Azure OpenAI: `POST {endpoint}/openai/deployments/{deployment}/chat/completions?api-version=...`
    /// with `api-key`; the deployment picks the model.
    pub fn azure(endpoint: &str, deployment: &str, api_version: &str, api_key: Secret) -> Self {
        let mut url =
            parse(&format!("{}/openai/deployments/{deployment}/chat/completions", endpoint.trim_end_matches('/')));
        url.query_pairs_mut().append_pair("api-version", api_version);
        Self {
            provider: colloquy_contract::provider::AZURE_OPENAI,
            url,
            model: deployment.to_owned(),
            model_in_body: false,
            auth: Auth::ApiKeyHeader(api_key),
            request_id_header: "x-ms-client-request-id",
            credential: "Azure OpenAI API key",
        }
    }

    /// An OpenAI-compatible server: `POST {base_url}/chat/completions` (`base_url`
    /// includes `/v1`), `Authorization: Bearer` when a key is set.
    pub fn compatible(base_url: &str, model: &str, api_key: Option<Secret>) -> Self {
        Self {
            provider: colloquy_contract::provider::OPENAI,
            url: parse(&format!("{}/chat/completions", base_url.trim_end_matches('/'))),
            model: model.to_owned(),
            model_in_body: true,
            auth: api_key.map_or(Auth::None, Auth::Bearer),
            request_id_header: "x-request-id",
            credential: "API key",
        }
    }
}

/// The URLs come from validated configuration (`check_url`); a URL that still
/// does not parse becomes one that fails at request time with a clear message.
fn parse(raw: &str) -> Url {
    Url::parse(raw).unwrap_or_else(|_| Url::parse("http://invalid.invalid/").expect("static URL parses"))
}

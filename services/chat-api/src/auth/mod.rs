//! Who is calling: a trusted server with the internal `X-API-Key` (acting for
//! a `client_user_id` it names), or an end user with a Bearer JWT.

pub mod api_key;
pub mod jwt;

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use colloquy_contract::headers::API_KEY;
use uuid::Uuid;

use crate::error::ApiError;
use api_key::ApiKey;
use jwt::JwtVerifier;

/// The authenticated caller of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// A server holding the internal API key; the user is named per request.
    Service,
    /// An end user authenticated by a Bearer token.
    User(Uuid),
}

/// Checks credentials; shared by all requests.
pub struct Authenticator {
    api_key: ApiKey,
    jwt: Option<JwtVerifier>,
}

const BEARER_CHALLENGE: &str = r#"Bearer realm="colloquy""#;

impl Authenticator {
    pub fn new(api_key: ApiKey, jwt: Option<JwtVerifier>) -> Self {
        Self { api_key, jwt }
    }

    fn challenge(&self) -> Option<String> {
        self.jwt.as_ref().map(|_| BEARER_CHALLENGE.to_owned())
    }

    fn unauthorized(&self, message: &str) -> ApiError {
        ApiError::Unauthorized { message: message.to_owned(), challenge: self.challenge() }
    }

    /// Whether `presented` is the internal API key (constant time): the
    /// OpenAI SDKs send it as their Bearer `api_key` on `/v1`.
    pub fn is_internal_key(&self, presented: &[u8]) -> bool {
        self.api_key.matches(presented)
    }

    /// Authenticates from request headers.
    pub async fn authenticate(&self, parts: &Parts) -> Result<Caller, ApiError> {
        if let Some(key) = parts.headers.get(API_KEY) {
            return if self.api_key.matches(key.as_bytes()) {
                Ok(Caller::Service)
            } else {
                Err(ApiError::Unauthorized { message: "invalid API key".to_owned(), challenge: None })
            };
        }
        let Some(authorization) = parts.headers.get(AUTHORIZATION) else {
            return Err(self.unauthorized("missing credentials: send X-API-Key or Authorization: Bearer <token>"));
        };
        let token = authorization
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| self.unauthorized("the Authorization header must be 'Bearer <token>'"))?;
        let Some(jwt) = &self.jwt else {
            return Err(ApiError::Unauthorized {
                message: "bearer tokens are not accepted by this server (no JWT_SECRET or JWT_JWKS_URL configured)"
                    .to_owned(),
                challenge: None,
            });
        };
        match jwt.verify(token).await {
            Ok(user) => Ok(Caller::User(user)),
            Err(e) => Err(ApiError::Unauthorized {
                message: format!("invalid bearer token: {}", e.description()),
                challenge: Some(format!(
                    r#"{BEARER_CHALLENGE}, error="invalid_token", error_description="{}""#,
                    e.description()
                )),
            }),
        }
    }
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Arc<Authenticator>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Arc::<Authenticator>::from_ref(state);
        auth.authenticate(parts).await
    }
}

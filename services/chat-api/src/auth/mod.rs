//! Who is calling: a trusted server with the internal `X-API-Key` (acting for
//! a `client_user_id` it names), or an end user with a Bearer JWT. The
//! [`middleware`] authenticates before any handler, limit or idempotency
//! check runs.

pub mod api_key;
pub mod jwt;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRef, FromRequestParts, Query, Request, State};
use axum::http::Method;
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
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

/// The caller as authenticated by [`middleware`] (or, on a route without it,
/// authenticated here).
impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    Arc<Authenticator>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(*caller);
        }
        let auth = Arc::<Authenticator>::from_ref(state);
        auth.authenticate(parts).await
    }
}

/// The end user a request acts for: the Bearer token's user, or the
/// `client_user_id` a server holding the API key names (in the query or the
/// JSON body). Limits and idempotency keys are per acting user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActingUser(pub Uuid);

/// The request body's size in bytes, when known before the handler reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodySize(pub usize);

/// What the authentication middleware needs.
#[derive(Clone)]
pub struct AuthState {
    pub auth: Arc<Authenticator>,
    pub max_body_bytes: usize,
}

#[derive(serde::Deserialize)]
struct NamedUser {
    client_user_id: Option<Uuid>,
}

/// Middleware: authenticates every request of the routes it wraps (401
/// before anything else runs), and tells the layers inside who the caller
/// and the acting user are (reading a server's JSON body once, bounded, for
/// its `client_user_id`); the response carries them for the access log.
pub async fn middleware(State(state): State<AuthState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let caller = match state.auth.authenticate(&parts).await {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    parts.extensions.insert(caller);
    let content_length =
        parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if let Some(len) = content_length {
        if len > state.max_body_bytes {
            return ApiError::PayloadTooLarge { limit: state.max_body_bytes }.into_response();
        }
        parts.extensions.insert(BodySize(len));
    }
    let mut body = body;
    let user = match caller {
        Caller::User(id) => Some(id),
        Caller::Service => {
            let from_query = Query::<NamedUser>::try_from_uri(&parts.uri).ok().and_then(|q| q.0.client_user_id);
            if from_query.is_some() || parts.method == Method::GET {
                from_query
            } else {
                // The user is named in the JSON body: read it once here (bounded), hand it on.
                let bytes = match axum::body::to_bytes(body, state.max_body_bytes).await {
                    Ok(bytes) => bytes,
                    Err(_) => return ApiError::PayloadTooLarge { limit: state.max_body_bytes }.into_response(),
                };
                parts.extensions.insert(BodySize(bytes.len()));
                let named = serde_json::from_slice::<NamedUser>(&bytes).ok().and_then(|n| n.client_user_id);
                body = Body::from(bytes);
                named
            }
        }
    };
    if let Some(user) = user {
        parts.extensions.insert(ActingUser(user));
    }
    let mut response = next.run(Request::from_parts(parts, body)).await;
    response.extensions_mut().insert(caller);
    if let Some(user) = user {
        response.extensions_mut().insert(ActingUser(user));
    }
    response
}

//! Who calls `/v1`. The OpenAI SDKs send their `api_key` as
//! `Authorization: Bearer <key>`: the internal API key there (compared in
//! constant time) makes the caller a trusted server, which names its end user
//! with `X-Client-User-Id`; any other Bearer token is a JWT, checked as on
//! `/api`, and the caller is its user. `X-API-Key` works too.
//!
//! [`middleware`] authenticates every `/v1` request before the rate limits
//! and idempotency keys, which are per acting user, as on `/api`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRef, FromRequestParts, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_LENGTH};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use colloquy_contract::headers::CLIENT_USER_ID;
use uuid::Uuid;

use crate::auth::jwt::user_id_from_subject;
use crate::auth::{ActingUser, AuthState, Authenticator, BodySize, Caller};
use crate::error::ApiError;

/// The end user a `/v1` request acts for (owner of what it reads and writes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct User(pub Uuid);

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    value.strip_prefix("Bearer ").or_else(|| value.strip_prefix("bearer ")).map(str::trim)
}

/// The user named by `X-Client-User-Id`: a UUID as is, any other id mapped
/// to a UUID exactly as a JWT `sub` is (so both name the same user).
fn client_user(parts: &Parts) -> Result<Uuid, ApiError> {
    let value = parts
        .headers
        .get(CLIENT_USER_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(
                "client_user_id_required",
                "X-Client-User-Id is required with the internal API key: it names the end user",
            )
        })?;
    if value.len() > 256 {
        return Err(ApiError::bad_request("invalid_request", "X-Client-User-Id is longer than 256 characters"));
    }
    Ok(user_id_from_subject(value))
}

/// Who calls, and the user they act for.
async fn identify(auth: &Authenticator, parts: &Parts) -> Result<(Caller, User), ApiError> {
    let caller = match bearer(parts) {
        Some(token) if auth.is_internal_key(token.as_bytes()) => Caller::Service,
        _ => auth.authenticate(parts).await?,
    };
    let user = match caller {
        Caller::User(id) => User(id),
        Caller::Service => User(client_user(parts)?),
    };
    Ok((caller, user))
}

/// The user as identified by [`middleware`] (or, on a route without it,
/// identified here).
impl<S> FromRequestParts<S> for User
where
    S: Send + Sync,
    Arc<Authenticator>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(user) = parts.extensions.get::<User>() {
            return Ok(*user);
        }
        let auth = Arc::<Authenticator>::from_ref(state);
        identify(&auth, parts).await.map(|(_, user)| user)
    }
}

/// Middleware on every `/v1` route: authenticates (401 before anything else
/// runs) and tells the layers inside who the caller and the acting user are,
/// and how large the body is (a turn's token reservation); the response
/// carries them for the access log. The `/v1` counterpart of
/// [`crate::auth::middleware`]: the user comes from headers, never the body.
pub async fn middleware(State(state): State<AuthState>, request: Request, next: Next) -> Response {
    let (mut parts, body) = request.into_parts();
    let (caller, user) = match identify(&state.auth, &parts).await {
        Ok(who) => who,
        Err(e) => return e.into_response(),
    };
    let content_length =
        parts.headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    let body = match content_length {
        Some(len) if len > state.max_body_bytes => {
            return ApiError::PayloadTooLarge { limit: state.max_body_bytes }.into_response();
        }
        Some(len) => {
            parts.extensions.insert(BodySize(len));
            body
        }
        None if parts.method == axum::http::Method::POST => {
            // A chunked body: read it once here (bounded) to know its size.
            let Ok(bytes) = axum::body::to_bytes(body, state.max_body_bytes).await else {
                return ApiError::PayloadTooLarge { limit: state.max_body_bytes }.into_response();
            };
            parts.extensions.insert(BodySize(bytes.len()));
            Body::from(bytes)
        }
        None => body,
    };
    parts.extensions.insert(caller);
    parts.extensions.insert(user);
    parts.extensions.insert(ActingUser(user.0));
    let mut response = next.run(Request::from_parts(parts, body)).await;
    response.extensions_mut().insert(caller);
    response.extensions_mut().insert(ActingUser(user.0));
    response
}

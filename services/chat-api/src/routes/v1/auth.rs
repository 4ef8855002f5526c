//! Who calls `/v1`. The OpenAI SDKs send their `api_key` as
//! `Authorization: Bearer <key>`: the internal API key there (compared in
//! constant time) makes the caller a trusted server, which names its end user
//! with `X-Client-User-Id`; any other Bearer token is a JWT, checked as on
//! `/api`, and the caller is its user. `X-API-Key` works too.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use colloquy_contract::headers::CLIENT_USER_ID;
use uuid::Uuid;

use crate::auth::jwt::user_id_from_subject;
use crate::auth::{Authenticator, Caller};
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

impl<S> FromRequestParts<S> for User
where
    S: Send + Sync,
    Arc<Authenticator>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = Arc::<Authenticator>::from_ref(state);
        let caller = match bearer(parts) {
            Some(token) if auth.is_internal_key(token.as_bytes()) => Caller::Service,
            _ => auth.authenticate(parts).await?,
        };
        match caller {
            Caller::User(id) => Ok(User(id)),
            Caller::Service => client_user(parts).map(User),
        }
    }
}

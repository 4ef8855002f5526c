//! OpenAI's error shape, `{"error": {"message", "type", "param", "code"}}`,
//! with the statuses the SDKs map to their exceptions (400
//! `BadRequestError`, 401 `AuthenticationError`, 404 `NotFoundError`, 409
//! `ConflictError`, 422 `UnprocessableEntityError`, 429 `RateLimitError`,
//! 5xx `InternalServerError`).
//!
//! Every `/v1` failure is an [`ApiError`] like anywhere else (one error type
//! for the service); [`openai_errors`] rewrites the envelope of `/v1` error
//! responses, whatever produced them (handlers, extractors, authentication,
//! the body limit), keeping status and headers (`Retry-After`,
//! `WWW-Authenticate`). Hand-written: a response-mapping layer is a few lines
//! and no crate knows OpenAI's envelope.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::ApiError;

/// Error bodies are small; anything larger is passed on untouched.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// OpenAI's error envelope.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OpenAiErrorBody {
    pub error: OpenAiError,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct OpenAiError {
    /// Human-readable explanation.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `not_found_error`,
    /// `rate_limit_error`, `server_error`, ...
    #[serde(rename = "type")]
    pub kind: String,
    /// The request field at fault, when known.
    pub param: Option<String>,
    /// Machine-readable code: Colloquy's codes (`not_found`,
    /// `upstream_rate_limited`, ...) and OpenAI's `model_not_found`.
    pub code: Option<String>,
}

/// The error `type` OpenAI uses for a status.
fn kind(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        409 => "conflict_error",
        429 => "rate_limit_error",
        500.. => "server_error",
        _ => "invalid_request_error",
    }
}

impl OpenAiErrorBody {
    pub fn new(status: StatusCode, code: &str, message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            error: OpenAiError {
                message: message.into(),
                kind: kind(status).to_owned(),
                param: param.map(str::to_owned),
                code: Some(code.to_owned()),
            },
        }
    }

    /// The body of an error (also the data of a stream's `error` event).
    pub fn from_api(error: &ApiError) -> Self {
        Self::new(error.status(), error.code(), error.to_string(), None)
    }
}

/// An error response in OpenAI's shape with a code of its own (e.g. `model_not_found`).
pub fn response(status: StatusCode, code: &str, message: impl Into<String>, param: Option<&str>) -> Response {
    (status, axum::Json(OpenAiErrorBody::new(status, code, message, param))).into_response()
}

/// Our `{"error": {"code", "message", "request_id"}}` envelope, as found in a response.
#[derive(Deserialize)]
struct OurEnvelope {
    error: OurError,
}

#[derive(Deserialize)]
struct OurError {
    code: String,
    message: String,
    /// Set only in a body already in OpenAI's shape.
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Puts `/v1` error responses in OpenAI's shape (see the module documentation).
pub async fn openai_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || !is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_ERROR_BODY).await else {
        return (StatusCode::INTERNAL_SERVER_ERROR, "error body too large").into_response();
    };
    let body = match serde_json::from_slice::<OurEnvelope>(&bytes) {
        Ok(ours) if ours.error.kind.is_none() => {
            let rewritten = OpenAiErrorBody::new(status, &ours.error.code, ours.error.message, None);
            parts.headers.remove(header::CONTENT_LENGTH);
            parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Body::from(serde_json::to_vec(&rewritten).expect("error body serialises"))
        }
        _ => Body::from(bytes),
    };
    Response::from_parts(parts, body)
}

//! The one error type of the chat API, and how each error maps to an HTTP
//! status and a `{"error": {"code", "message", "request_id"}}` body.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::time::Duration;
use utoipa::ToSchema;

use crate::limits::RateLimitHeaders;
use crate::llm::ProviderError;
use crate::request_id;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed: bad JSON, wrong types, failed validation.
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    /// Missing or invalid credentials. `challenge` becomes `WWW-Authenticate`.
    #[error("{message}")]
    Unauthorized { message: String, challenge: Option<String> },
    /// Unknown resource, or one the caller may not see (never tell which).
    #[error("{0}")]
    NotFound(String),
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The caller is over a per-user rate limit (`RATE_LIMIT_RPM` / `RATE_LIMIT_TPM`).
    #[error("{message}")]
    RateLimited { message: String, retry_after: Duration, headers: RateLimitHeaders },
    /// Same `Idempotency-Key`, different request.
    #[error("this Idempotency-Key was used for a different request; use a new key for a new request")]
    IdempotencyKeyReused,
    /// Same `Idempotency-Key` while the first request is still running.
    #[error("a request with this Idempotency-Key is still in progress; retry after it completes")]
    RequestInProgress { retry_after: Duration },
    /// `MAX_IN_FLIGHT` requests are already being served by this process.
    #[error("the server is overloaded, try again shortly")]
    Overloaded,
    /// No response head within `REQUEST_TIMEOUT_SECS`.
    #[error("the request did not complete within {0:?}")]
    RequestTimeout(Duration),
    /// The provider failed or answered with something we cannot use.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// Another turn holds the conversation and did not finish within the wait.
    #[error("another turn of this conversation is in progress; retry after it (waited {0:?})")]
    ConversationBusy(Duration),
    /// PostgreSQL cannot be reached right now.
    #[error("the database is unavailable, try again shortly")]
    DatabaseUnavailable(#[source] sqlx::Error),
    /// Anything else; details go to the log, not to the caller.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest { code, message: message.into() }
    }

    pub fn conversation_not_found() -> Self {
        Self::NotFound("conversation not found".to_owned())
    }

    pub fn conversation_busy(waited: Duration) -> Self {
        Self::ConversationBusy(waited)
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::RequestInProgress { .. } => StatusCode::CONFLICT,
            Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::RequestTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Provider(e) => match e {
                ProviderError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
                ProviderError::ContentFiltered { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                ProviderError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
                ProviderError::Unavailable { .. } | ProviderError::Overloaded { .. } => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            },
            Self::ConversationBusy(_) => StatusCode::CONFLICT,
            Self::DatabaseUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. } => code,
            Self::Unauthorized { .. } => "unauthorized",
            Self::NotFound(_) => "not_found",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::RateLimited { .. } => "rate_limited",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::RequestInProgress { .. } => "request_in_progress",
            Self::Overloaded => "overloaded",
            Self::RequestTimeout(_) => "request_timeout",
            Self::Provider(e) => match e {
                ProviderError::Timeout(_) => "upstream_timeout",
                ProviderError::ContentFiltered { .. } => "content_filtered",
                ProviderError::RateLimited { .. } => "upstream_rate_limited",
                ProviderError::QuotaExhausted { .. } => "upstream_quota_exhausted",
                ProviderError::Unavailable { .. } | ProviderError::Overloaded { .. } => "upstream_unavailable",
                _ => "upstream_error",
            },
            Self::ConversationBusy(_) => "conversation_busy",
            Self::DatabaseUnavailable(_) => "database_unavailable",
            Self::Internal(_) => "internal_error",
        }
    }

    /// Logs what the caller is not told (server-side failures).
    pub fn log(&self) {
        match self {
            Self::Internal(detail) => tracing::error!(error = %detail, "internal error"),
            Self::DatabaseUnavailable(e) => tracing::warn!(error = %e, "database unavailable"),
            Self::Provider(e) => log_provider_error(e),
            _ => {}
        }
    }

    /// The JSON error body (also the data of a stream's `error` event).
    pub fn body(&self, request_id: Option<String>) -> ErrorBody {
        ErrorBody { error: ErrorDetail { code: self.code().to_owned(), message: self.to_string(), request_id } }
    }
}

/// Whether a database error means "cannot reach PostgreSQL" (503) rather than a bug (500).
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed)
        || matches!(err, sqlx::Error::Database(db) if db.code().is_some_and(|c|
        // admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections
        matches!(c.as_ref(), "57P01" | "57P02" | "57P03" | "53300")))
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        if is_unavailable(&err) { Self::DatabaseUnavailable(err) } else { Self::Internal(format!("database: {err}")) }
    }
}

/// Logs a failed provider call without the provider's own text: an error
/// message may quote the prompt (the caller still gets it in the response).
/// [`ProviderError::redacted`] is the one place that decides what is safe.
fn log_provider_error(e: &ProviderError) {
    tracing::warn!(outcome = e.error_type(), error = %e.redacted(), "provider call failed");
}

/// The JSON error envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, e.g. `not_found`, `content_filtered`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// The request id (also in the `x-request-id` response header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        self.log();
        let body = self.body(request_id::current());
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            Self::Unauthorized { challenge: Some(challenge), .. } => {
                if let Ok(v) = HeaderValue::from_str(challenge) {
                    headers.insert(header::WWW_AUTHENTICATE, v);
                }
            }
            Self::Provider(ProviderError::RateLimited { retry_after, .. }) => {
                let secs = retry_after.unwrap_or(Duration::from_secs(1)).as_secs().max(1);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            Self::Provider(
                ProviderError::Unavailable { retry_after } | ProviderError::Overloaded { retry_after, .. },
            ) => {
                headers.insert(header::RETRY_AFTER, retry_after_secs(*retry_after));
            }
            Self::DatabaseUnavailable(_) | Self::Overloaded | Self::ConversationBusy(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            Self::RateLimited { retry_after, headers: limits, .. } => {
                limits.apply(headers);
                headers.insert(header::RETRY_AFTER, retry_after_secs(*retry_after));
            }
            Self::RequestInProgress { retry_after } => {
                headers.insert(header::RETRY_AFTER, retry_after_secs(*retry_after));
            }
            _ => {}
        }
        response
    }
}

/// A `Retry-After` value: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> HeaderValue {
    HeaderValue::from(wait.as_secs_f64().ceil().max(1.0) as u64)
}

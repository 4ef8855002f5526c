//! The request id: taken from the caller's `x-request-id` when it is sane,
//! generated otherwise; returned in the response header, present in error
//! bodies and logs, and sent upstream to the provider.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use colloquy_contract::headers::REQUEST_ID;

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request being served on this task, if any.
pub fn current() -> Option<String> {
    CURRENT.try_with(Clone::clone).ok()
}

/// The caller's id when it is short printable ASCII, else a fresh UUID.
fn choose(incoming: Option<&HeaderValue>) -> String {
    incoming
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// Middleware: assigns the id, runs the request in its scope, echoes it back.
pub async fn middleware(mut request: Request, next: Next) -> Response {
    let id = choose(request.headers().get(REQUEST_ID));
    let value = HeaderValue::from_str(&id).expect("request id is printable ASCII");
    request.headers_mut().insert(REQUEST_ID, value.clone());
    let mut response = CURRENT.scope(id, next.run(request)).await;
    response.headers_mut().insert(REQUEST_ID, value);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_ids_and_replaces_others() {
        assert_eq!(choose(Some(&HeaderValue::from_static("abc-123"))), "abc-123");
        let generated = choose(Some(&HeaderValue::from_static("has space")));
        assert!(uuid::Uuid::parse_str(&generated).is_ok());
        assert!(uuid::Uuid::parse_str(&choose(None)).is_ok());
    }
}

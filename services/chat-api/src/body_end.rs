//! What a request holds until its response body has been sent: the in-flight
//! permit, the rate limiter's token settlement. A streamed answer is produced
//! after its handler returned, so anything held for a request must last as
//! long as the body, not the response head. Hand-written because tower's
//! layers (`ConcurrencyLimit`, ...) let go at the response head.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

struct Held<T> {
    inner: Body,
    /// Dropped once the body ended or failed (or with the body, when it is cut).
    value: Option<T>,
}

impl<T: Send + Unpin + 'static> HttpBody for Held<T> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.value = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// `response` holding `value` (a permit, a guard) until its body has been
/// sent or dropped (sizes and headers unchanged).
pub fn hold<T: Send + Unpin + 'static>(response: Response, value: T) -> Response {
    response.map(|inner| Body::new(Held { inner, value: Some(value) }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts its drops.
    struct Count(Arc<AtomicUsize>);

    impl Drop for Count {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn a_value_is_held_until_the_body_ends_and_the_size_is_kept() {
        let drops = Arc::new(AtomicUsize::new(0));
        let response = hold(Response::new(Body::from("hello")), Count(drops.clone()));
        assert_eq!(response.body().size_hint().exact(), Some(5));
        assert_eq!(drops.load(Ordering::Relaxed), 0);
        let mut body = response.into_body();
        let first = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        assert_eq!(first.unwrap().unwrap().into_data().unwrap(), "hello");
        assert!(std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await.is_none());
        assert_eq!(drops.load(Ordering::Relaxed), 1, "released at the end, before the body is dropped");

        drop(hold(Response::new(Body::from("cut")), Count(drops.clone())));
        assert_eq!(drops.load(Ordering::Relaxed), 2, "released with a body never sent");
    }
}

//! What a request holds until its response body has been sent: the in-flight
//! permit, the rate limiter's token settlement. A streamed answer is produced after its
//! handler returned, so anything that watches a request must last as long as
//! the body, not the response head. Hand-written because tower's layers
//! (`ConcurrencyLimit`, ...) end their watch at the response head.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

/// Sees a response body go by.
pub trait BodyWatch: Send + Unpin + 'static {
    /// Each data chunk, as it is handed to the connection.
    fn chunk(&mut self, _data: &Bytes) {}
    /// The body was sent whole. Not called when it was cut (client gone,
    /// error, shutdown): the watch is then just dropped.
    fn complete(self)
    where
        Self: Sized,
    {
    }
}

/// Holds a value (a permit, a guard) until the body is sent or dropped.
pub struct Hold<T>(pub T);

impl<T: Send + Unpin + 'static> BodyWatch for Hold<T> {}

struct Watched<W> {
    inner: Body,
    watch: Option<W>,
}

impl<W: BodyWatch> HttpBody for Watched<W> {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(watch)) = (frame.data_ref(), self.watch.as_mut()) {
                    watch.chunk(data);
                }
            }
            Poll::Ready(None) => {
                if let Some(watch) = self.watch.take() {
                    watch.complete();
                }
            }
            Poll::Ready(Some(Err(_))) => self.watch = None,
            Poll::Pending => {}
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

/// `response` with `watch` attached to its body (sizes and headers unchanged).
pub fn watch<W: BodyWatch>(response: Response, watch: W) -> Response {
    response.map(|inner| Body::new(Watched { inner, watch: Some(watch) }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    struct Count(Arc<AtomicUsize>, Arc<AtomicUsize>);

    impl BodyWatch for Count {
        fn chunk(&mut self, data: &Bytes) {
            self.0.fetch_add(data.len(), Ordering::Relaxed);
        }
        fn complete(self) {
            self.1.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tokio::test]
    async fn a_watch_sees_every_chunk_and_the_end_and_keeps_the_size() {
        let (bytes, ends) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let response = watch(Response::new(Body::from("hello")), Count(bytes.clone(), ends.clone()));
        assert_eq!(response.body().size_hint().exact(), Some(5));
        let body = axum::body::to_bytes(response.into_body(), 100).await.unwrap();
        assert_eq!(&body[..], b"hello");
        assert_eq!((bytes.load(Ordering::Relaxed), ends.load(Ordering::Relaxed)), (5, 1));

        let dropped = watch(Response::new(Body::from("cut")), Count(bytes.clone(), ends.clone()));
        drop(dropped);
        assert_eq!(ends.load(Ordering::Relaxed), 1, "a body never sent does not complete");
    }
}

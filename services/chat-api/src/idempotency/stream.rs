//! The body of a streamed answer to a request with an `Idempotency-Key`.
//!
//! Events pass through as they come, except the last event of an answer that
//! went well (`/api`'s `done`, `/v1/responses`' `response.completed`:
//! [`FINAL_EVENTS`]). By then the turn is written in the request's open
//! transaction; the final event is held back while the finish runs (the whole
//! stream recorded as the key's response, and COMMIT: turn and record
//! together), and sent only once it succeeded. The finish runs in a task of
//! its own that the body awaits, so a client gone at that moment cannot cut
//! it half-way. When it fails, nothing is stored (rolled back, turn included),
//! the key is freed for a retry, and the client gets the route's `error`
//! event in place of the final one.
//!
//! A stream that ends without its final event (it ended with `error`) or is
//! dropped (the client went away) drops the finish unrun, which rolls back
//! and frees the key.
//!
//! Events are found by hand (an event ends at a blank line, `\n\n`, as
//! axum's `Sse` writes them; its `event:` line names it) rather than with
//! `eventsource-stream`: the bytes must reach the client and the record
//! exactly as they were written, and that crate parses events without
//! keeping their bytes, so each would have to be written again.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::task::JoinHandle;

use crate::error::ApiError;
use crate::routes::sse::{self, FINAL_EVENTS, FinalEvent};

/// Largest streamed answer recorded for a replay; a longer one frees its key.
pub(super) const MAX_RECORDED_STREAM: usize = 8 * 1024 * 1024;

/// Stores the stream (`Some`: its whole body, the final event included;
/// `None`: longer than the recording limit) and commits.
pub(super) type Finish = Box<dyn FnOnce(Option<Vec<u8>>) -> BoxFuture<'static, Result<(), ApiError>> + Send>;

/// `response` (a `text/event-stream`) with its final event held back until
/// `finish` has run (see the module documentation). `request_id` goes into
/// an `/api` error event.
pub(super) fn hold_final_event(response: Response, request_id: String, finish: Finish) -> Response {
    response.map(|inner| Body::new(HeldBack::new(inner, request_id, finish, MAX_RECORDED_STREAM)))
}

struct HeldBack {
    inner: Body,
    request_id: String,
    /// Until the final event comes; then it runs in `finishing`.
    finish: Option<Finish>,
    /// The stream so far; `None` once it is longer than `limit`.
    recorded: Option<Vec<u8>>,
    limit: usize,
    /// An event whose end has not come yet.
    partial: BytesMut,
    /// The finish: what to send in the final event's place.
    finishing: Option<JoinHandle<Bytes>>,
    /// What followed the final event in its chunk, sent after it.
    after: Bytes,
    /// The inner body ended.
    ended: bool,
}

impl HeldBack {
    fn new(inner: Body, request_id: String, finish: Finish, limit: usize) -> Self {
        Self {
            inner,
            request_id,
            finish: Some(finish),
            recorded: Some(Vec::new()),
            limit,
            partial: BytesMut::new(),
            finishing: None,
            after: Bytes::new(),
            ended: false,
        }
    }

    fn record(&mut self, bytes: &[u8]) {
        if let Some(recorded) = &mut self.recorded {
            if recorded.len() + bytes.len() > self.limit {
                self.recorded = None;
            } else {
                recorded.extend_from_slice(bytes);
            }
        }
    }

    /// Takes a chunk: returns what can be sent now (whole events up to the
    /// final one), and starts the finish when the final event came.
    fn scan(&mut self, data: Bytes) -> Option<Bytes> {
        self.partial.extend_from_slice(&data);
        let whole = match find_last(&self.partial, b"\n\n") {
            Some(end) => self.partial.split_to(end + 2).freeze(),
            None => return None,
        };
        let mut start = 0;
        while let Some(len) = find_first(&whole[start..], b"\n\n") {
            let event = &whole[start..start + len + 2];
            if let Some(kind) = final_event(event) {
                let before = whole.slice(..start);
                let held = whole.slice(start..start + len + 2);
                let mut after = BytesMut::from(&whole[start + len + 2..]);
                after.extend_from_slice(&self.partial.split());
                self.after = after.freeze();
                self.record(&before);
                self.record(&held);
                self.start_finish(kind, held);
                return (!before.is_empty()).then_some(before);
            }
            start += len + 2;
        }
        self.record(&whole);
        Some(whole)
    }

    fn start_finish(&mut self, kind: &'static FinalEvent, held: Bytes) {
        let Some(finish) = self.finish.take() else { return };
        let recorded = self.recorded.take();
        let request_id = std::mem::take(&mut self.request_id);
        self.finishing = Some(tokio::spawn(async move {
            match finish(recorded).await {
                Ok(()) => held,
                Err(error) => {
                    error.log();
                    let data = data_of(&held);
                    sse::encode((kind.error)(&error, &request_id, &data)).await
                }
            }
        }));
    }
}

impl HttpBody for HeldBack {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        loop {
            if let Some(task) = this.finishing.as_mut() {
                let sent = ready!(Pin::new(task).poll(cx));
                this.finishing = None;
                return Poll::Ready(Some(match sent {
                    Ok(sent) => {
                        let mut out = BytesMut::from(&sent[..]);
                        out.extend_from_slice(&std::mem::take(&mut this.after));
                        Ok(Frame::data(out.freeze()))
                    }
                    // The finish panicked: nothing was committed.
                    Err(e) => Err(axum::Error::new(e)),
                }));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            let frame = match ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                end => {
                    // Ended (or failed) without the final event: nothing to
                    // keep, roll back and free the key now.
                    this.finish = None;
                    this.ended = true;
                    if end.is_none() && !this.partial.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(this.partial.split().freeze()))));
                    }
                    return Poll::Ready(end);
                }
            };
            if this.finish.is_none() {
                return Poll::Ready(Some(Ok(frame)));
            }
            let data = match frame.into_data() {
                Ok(data) => data,
                Err(frame) => return Poll::Ready(Some(Ok(frame))),
            };
            if let Some(ready) = this.scan(data) {
                return Poll::Ready(Some(Ok(Frame::data(ready))));
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.finishing.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

fn find_first(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn find_last(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).rposition(|w| w == needle)
}

/// The value of each `field:` line of one event (one leading space dropped).
fn field<'a>(event: &'a [u8], name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    event.split(|&b| b == b'\n').filter_map(move |line| {
        let value = line.strip_prefix(name.as_bytes())?.strip_prefix(b":")?;
        Some(value.strip_prefix(b" ").unwrap_or(value))
    })
}

/// Which final event `event` is, if it is one.
fn final_event(event: &[u8]) -> Option<&'static FinalEvent> {
    let name = field(event, "event").next()?;
    FINAL_EVENTS.iter().find(|f| f.name.as_bytes() == name)
}

/// An event's data (its `data:` lines joined), parsed as JSON.
fn data_of(event: &[u8]) -> serde_json::Value {
    let data: Vec<&[u8]> = field(event, "data").collect();
    serde_json::from_slice(&data.join(&b'\n')).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use futures::StreamExt;
    use tokio::sync::oneshot;

    use super::*;

    const CONVERSATION: &str = "event: conversation\ndata: {\"conversation_id\":\"c\"}\n\n";
    const DELTA: &str = "event: delta\ndata: {\"text\":\"hi\"}\n\n";
    const DONE: &str = "event: done\ndata: {\"response\":\"hi\"}\n\n";
    const COMPLETED: &str =
        "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":7}\n\n";

    /// What a finish was given: `None` until it ran.
    type Seen = Arc<Mutex<Option<Option<Vec<u8>>>>>;

    /// A body sending `chunks`, held back with a finish that reports what it
    /// was given and returns `result` once `gate` opens.
    fn held(
        chunks: &[&str],
        limit: usize,
        gate: oneshot::Receiver<()>,
        result: Result<(), ApiError>,
    ) -> (HeldBack, Seen) {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            chunks.iter().map(|c| Ok(Bytes::from(c.to_string()))).collect();
        let inner = Body::from_stream(futures::stream::iter(chunks));
        let seen = Arc::new(Mutex::new(None));
        let finish: Finish = Box::new({
            let seen = seen.clone();
            move |recorded| {
                *seen.lock().unwrap() = Some(recorded);
                Box::pin(async move {
                    let _ = gate.await;
                    result
                })
            }
        });
        (HeldBack::new(inner, "req-1".into(), finish, limit), seen)
    }

    async fn text(body: HeldBack) -> String {
        let bytes = axum::body::to_bytes(Body::new(body), usize::MAX).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn the_final_event_waits_for_the_finish() {
        let (open, gate) = oneshot::channel();
        let (body, seen) = held(&[CONVERSATION, DELTA, DONE], usize::MAX, gate, Ok(()));
        let mut frames = Body::new(body).into_data_stream();
        assert_eq!(frames.next().await.unwrap().unwrap(), CONVERSATION);
        assert_eq!(frames.next().await.unwrap().unwrap(), DELTA);
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), frames.next()).await;
        assert!(waiting.is_err(), "done is held while the finish runs");
        assert_eq!(seen.lock().unwrap().clone(), Some(Some(format!("{CONVERSATION}{DELTA}{DONE}").into_bytes())));
        open.send(()).unwrap();
        assert_eq!(frames.next().await.unwrap().unwrap(), DONE);
        assert!(frames.next().await.is_none());
    }

    #[tokio::test]
    async fn a_failed_finish_sends_the_routes_error_event_instead() {
        let failure = || Err(ApiError::Internal("no".into()));
        let (open, gate) = oneshot::channel();
        open.send(()).unwrap();
        let (body, _) = held(&[CONVERSATION, DONE], usize::MAX, gate, failure());
        let sent = text(body).await;
        let error = sent.strip_prefix(CONVERSATION).unwrap();
        assert!(error.starts_with("event: error\ndata: "), "{sent}");
        let data = data_of(error.as_bytes());
        assert_eq!(data["error"]["code"], "internal_error");
        assert_eq!(data["error"]["request_id"], "req-1");

        let (open, gate) = oneshot::channel();
        open.send(()).unwrap();
        let (body, _) = held(&[COMPLETED], usize::MAX, gate, failure());
        let sent = text(body).await;
        let data = data_of(sent.as_bytes());
        assert!(sent.starts_with("event: error\n"), "{sent}");
        assert_eq!((data["type"].as_str(), data["code"].as_str()), (Some("error"), Some("internal_error")));
        assert_eq!(data["sequence_number"], 7, "in the completed event's place");
    }

    #[tokio::test]
    async fn events_split_or_joined_across_chunks_are_found() {
        let (open, gate) = oneshot::channel();
        open.send(()).unwrap();
        let all = format!("{CONVERSATION}{DELTA}{DONE}");
        let (first, rest) = all.split_at(CONVERSATION.len() + DELTA.len() + 9);
        let (body, seen) = held(&[first, rest], usize::MAX, gate, Ok(()));
        assert_eq!(text(body).await, all);
        assert_eq!(seen.lock().unwrap().clone(), Some(Some(all.into_bytes())));
    }

    #[tokio::test]
    async fn a_stream_without_its_final_event_never_finishes() {
        let (_open, gate) = oneshot::channel();
        let error = "event: error\ndata: {\"error\":{}}\n\n";
        let (body, seen) = held(&[CONVERSATION, error], usize::MAX, gate, Ok(()));
        assert_eq!(text(body).await, format!("{CONVERSATION}{error}"));
        assert_eq!(seen.lock().unwrap().clone(), None, "the finish was dropped unrun");
    }

    #[tokio::test]
    async fn a_stream_over_the_limit_finishes_unrecorded() {
        let (open, gate) = oneshot::channel();
        open.send(()).unwrap();
        let (body, seen) = held(&[CONVERSATION, DELTA, DONE], CONVERSATION.len() + 1, gate, Ok(()));
        assert_eq!(text(body).await, format!("{CONVERSATION}{DELTA}{DONE}"));
        assert_eq!(seen.lock().unwrap().clone(), Some(None));
    }
}

//! Decoding a streamed (server-sent events) provider answer: the framing
//! (lines, `data:` fields, comments, events split across reads) is the
//! `eventsource-stream` crate's; what each event's data means is a
//! provider's [`SseDecoder`]. The silence between two chunks of the body is
//! bounded, so is the body's size (`http::MAX_RESPONSE_BYTES`, which also
//! bounds an event that never ends), and the stream ends after `Done` or the
//! first error.

use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::{EventStreamError, Eventsource};
use futures::{Stream, StreamExt};

use super::{ProviderError, ProviderStream, StreamEvent};

/// What the `data` of each event means, for one provider.
pub(super) trait SseDecoder: Send + 'static {
    /// One event's data (multi-line data joined with `\n`). Returning
    /// `StreamEvent::Done` ends the stream; `None` means "nothing to report".
    fn on_event(&mut self, data: &str) -> Result<Option<StreamEvent>, ProviderError>;

    /// The body ended without an event having returned `Done`.
    fn on_eof(&mut self) -> Result<StreamEvent, ProviderError>;
}

/// The response body, each chunk awaited for at most `idle`.
fn body_with_idle_timeout(
    response: reqwest::Response,
    idle: Duration,
) -> impl Stream<Item = Result<Bytes, ProviderError>> + Send + 'static {
    futures::stream::unfold(Some((response, 0)), move |state| async move {
        let (mut response, mut total) = state?;
        match tokio::time::timeout(idle, response.chunk()).await {
            Err(_) => Some((Err(ProviderError::Timeout(idle)), None)),
            Ok(Err(e)) => Some((Err(ProviderError::from_reqwest(&e, idle)), None)),
            Ok(Ok(Some(chunk))) => match super::http::count_streamed(&mut total, &chunk) {
                Ok(()) => Some((Ok(chunk), Some((response, total)))),
                Err(e) => Some((Err(e), None)),
            },
            Ok(Ok(None)) => None,
        }
    })
}

fn framing_error(err: EventStreamError<ProviderError>) -> ProviderError {
    match err {
        EventStreamError::Transport(e) => e,
        EventStreamError::Utf8(_) => ProviderError::InvalidResponse("the event stream is not UTF-8".into()),
        // The parser's error quotes the rest of the input: only its start is shown.
        EventStreamError::Parser(e) => ProviderError::InvalidResponse(format!(
            "malformed event stream: {}",
            super::upstream_error::excerpt(e.to_string().as_bytes(), 120)
        )),
    }
}

/// Decodes an SSE response body with `decoder`. `idle` bounds the wait for
/// each chunk of the body (comments such as keep-alives count as activity).
pub(super) fn decode<D: SseDecoder>(response: reqwest::Response, idle: Duration, decoder: D) -> ProviderStream {
    events(body_with_idle_timeout(response, idle), decoder)
}

/// [`decode`] over any byte stream (the unit tests feed it arbitrary chunkings).
fn events<S, D>(body: S, decoder: D) -> ProviderStream
where
    S: Stream<Item = Result<Bytes, ProviderError>> + Send + 'static,
    D: SseDecoder,
{
    let state = (Box::pin(body.eventsource()), decoder, false);
    Box::pin(futures::stream::unfold(state, |(mut events, mut decoder, finished)| async move {
        if finished {
            return None;
        }
        loop {
            let item = match events.next().await {
                Some(Ok(event)) => match decoder.on_event(&event.data) {
                    Ok(None) => continue,
                    Ok(Some(event)) => Ok(event),
                    Err(e) => Err(e),
                },
                Some(Err(e)) => Err(framing_error(e)),
                None => decoder.on_eof(),
            };
            let finished = !matches!(item, Ok(StreamEvent::Delta(_)));
            return Some((item, (events, decoder, finished)));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Collects every event's data, and reports end of body as `Done`.
    struct Collect;

    impl SseDecoder for Collect {
        fn on_event(&mut self, data: &str) -> Result<Option<StreamEvent>, ProviderError> {
            Ok(Some(StreamEvent::Delta(data.to_owned())))
        }

        fn on_eof(&mut self) -> Result<StreamEvent, ProviderError> {
            Ok(StreamEvent::Done { usage: None, model: String::new(), finish_reason: None })
        }
    }

    async fn datas(chunks: &[&[u8]]) -> Vec<String> {
        let body = futures::stream::iter(chunks.iter().map(|c| Ok(Bytes::copy_from_slice(c))).collect::<Vec<_>>());
        let mut out = Vec::new();
        let mut stream = events(body, Collect);
        while let Some(event) = stream.next().await {
            match event.unwrap() {
                StreamEvent::Delta(d) => out.push(d),
                StreamEvent::Done { .. } => break,
            }
        }
        out
    }

    #[tokio::test]
    async fn framing_survives_arbitrary_chunk_boundaries() {
        let body =
            "data: {\"a\":1}\n\n: keep-alive\nevent: x\ndata: two\ndata: lines\r\n\r\ndata:[DONE]\n\ndata: é\n\n";
        let expected = vec!["{\"a\":1}", "two\nlines", "[DONE]", "é"];
        assert_eq!(datas(&[body.as_bytes()]).await, expected);
        let bytes = body.as_bytes();
        for cut in 0..bytes.len() {
            assert_eq!(datas(&[&bytes[..cut], &bytes[cut..]]).await, expected, "cut at {cut}");
        }
        let bytewise: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(datas(&bytewise).await, expected);
    }

    #[tokio::test]
    async fn stream_ends_after_an_error() {
        struct Fail;
        impl SseDecoder for Fail {
            fn on_event(&mut self, _: &str) -> Result<Option<StreamEvent>, ProviderError> {
                Err(ProviderError::InvalidResponse("no".into()))
            }
            fn on_eof(&mut self) -> Result<StreamEvent, ProviderError> {
                panic!("not reached")
            }
        }
        let body = futures::stream::iter(vec![Ok(Bytes::from_static(b"data: a\n\ndata: b\n\n"))]);
        let items: Vec<_> = events(body, Fail).collect().await;
        assert_eq!(items, vec![Err(ProviderError::InvalidResponse("no".into()))]);
    }
}

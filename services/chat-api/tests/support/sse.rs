//! Reading a streamed (`text/event-stream`) answer in tests, with the same
//! SSE framing crate the service uses for its upstreams.

use axum::body::Body;
use eventsource_stream::Eventsource;
use futures::{Stream, StreamExt};
use serde_json::Value;

/// One server-sent event: its name and its JSON data.
#[derive(Debug, Clone)]
pub struct SseEvent {
    pub event: String,
    pub data: Value,
}

/// The events of a body, as they arrive.
pub fn events(body: Body) -> impl Stream<Item = SseEvent> + Unpin {
    Box::pin(body.into_data_stream().eventsource().map(|event| {
        let event = event.expect("a well-formed event stream");
        let data = serde_json::from_str(&event.data)
            .unwrap_or_else(|e| panic!("event {:?} has non-JSON data ({e}): {}", event.event, event.data));
        SseEvent { event: event.event, data }
    }))
}

/// Every event of a body, until it ends.
pub async fn all_events(body: Body) -> Vec<SseEvent> {
    events(body).collect().await
}

/// The concatenated `delta` texts.
pub fn streamed_text(events: &[SseEvent]) -> String {
    events.iter().filter(|e| e.event == "delta").map(|e| e.data["text"].as_str().expect("delta text")).collect()
}

/// The event names, in order, with consecutive deltas folded into one `delta*`.
pub fn shape(events: &[SseEvent]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in events {
        let name = if e.event == "delta" { "delta*".to_owned() } else { e.event.clone() };
        if out.last() != Some(&name) {
            out.push(name);
        }
    }
    out
}

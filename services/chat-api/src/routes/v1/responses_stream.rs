//! A streamed response: OpenAI's Responses event sequence, each event
//! `event: <type>` with a JSON `data` carrying `type` and `sequence_number`:
//!
//! 1. `response.created`, `response.in_progress` (status `in_progress`),
//!    `response.output_item.added`, `response.content_part.added`, once the
//!    turn is under way (its conversation claimed);
//! 2. `response.output_text.delta` per piece of the answer, as it arrives;
//! 3. `response.output_text.done`, `response.content_part.done`,
//!    `response.output_item.done`, `response.completed` (with usage) once the
//!    turn is stored; or `error` instead when it fails midway (nothing stored).

use std::convert::Infallible;

use axum::response::Response;
use axum::response::sse::Event;
use futures::{Stream, StreamExt};
use serde_json::{Value, json};

use super::error::OpenAiErrorBody;
use super::items::item_id;
use super::responses::ResponseMeta;
use crate::error::ApiError;
use crate::llm::Usage;
use crate::routes::sse;

/// What happens to a response, whichever way it is answered.
pub enum Step {
    Started,
    Delta(String),
    Done { usage: Usage, model: String },
    Failed(ApiError),
}

struct Encoder {
    meta: ResponseMeta,
    item_id: String,
    sequence: u64,
    text: String,
}

/// The last event of a response that completed (its turn stored).
pub const COMPLETED_EVENT: &str = "response.completed";

/// An event of the stream: `data` with its `type` and `sequence_number`.
fn event(kind: &str, mut data: Value, sequence_number: u64) -> Event {
    data["type"] = json!(kind);
    data["sequence_number"] = json!(sequence_number);
    Event::default().event(kind).data(data.to_string())
}

/// OpenAI's `error` event for `error`, as the event number `sequence_number`.
pub fn error_event(error: &ApiError, sequence_number: u64) -> Event {
    let body = OpenAiErrorBody::from_api(error).error;
    event("error", json!({"code": body.code, "message": body.message, "param": body.param}), sequence_number)
}

impl Encoder {
    /// The next event's `sequence_number`.
    fn next_sequence(&mut self) -> u64 {
        self.sequence += 1;
        self.sequence - 1
    }

    fn event(&mut self, kind: &str, data: Value) -> Event {
        let sequence_number = self.next_sequence();
        event(kind, data, sequence_number)
    }

    fn part(&self, text: &str) -> Value {
        json!({"type": "output_text", "text": text, "annotations": []})
    }

    fn events(&mut self, step: Step) -> Vec<Event> {
        match step {
            Step::Started => {
                let response = serde_json::to_value(self.meta.object("in_progress", Vec::new(), None))
                    .expect("responses serialise");
                let item = json!({"type": "message", "id": self.item_id, "status": "in_progress",
                                  "role": "assistant", "content": []});
                let part = self.part("");
                vec![
                    self.event("response.created", json!({"response": response})),
                    self.event("response.in_progress", json!({"response": response})),
                    self.event("response.output_item.added", json!({"output_index": 0, "item": item})),
                    self.event(
                        "response.content_part.added",
                        json!({"item_id": self.item_id, "output_index": 0, "content_index": 0, "part": part}),
                    ),
                ]
            }
            Step::Delta(delta) => {
                self.text.push_str(&delta);
                let data = json!({"item_id": self.item_id, "output_index": 0, "content_index": 0,
                                  "delta": delta, "logprobs": []});
                vec![self.event("response.output_text.delta", data)]
            }
            Step::Done { usage, model } => {
                let text = std::mem::take(&mut self.text);
                self.meta.model = model;
                let output = self.meta.output(text.clone());
                let item = serde_json::to_value(&output[0]).expect("items serialise");
                let response = serde_json::to_value(self.meta.object("completed", output, Some(usage)))
                    .expect("responses serialise");
                let part = self.part(&text);
                vec![
                    self.event(
                        "response.output_text.done",
                        json!({"item_id": self.item_id, "output_index": 0, "content_index": 0,
                               "text": text, "logprobs": []}),
                    ),
                    self.event(
                        "response.content_part.done",
                        json!({"item_id": self.item_id, "output_index": 0, "content_index": 0, "part": part}),
                    ),
                    self.event("response.output_item.done", json!({"output_index": 0, "item": item})),
                    self.event(COMPLETED_EVENT, json!({"response": response})),
                ]
            }
            Step::Failed(error) => {
                error.log();
                vec![error_event(&error, self.next_sequence())]
            }
        }
    }
}

/// The SSE response of a streamed response.
pub fn response(meta: ResponseMeta, steps: impl Stream<Item = Step> + Send + 'static) -> Response {
    let item_id = item_id(meta.answer_id);
    let mut encoder = Encoder { meta, item_id, sequence: 0, text: String::new() };
    let events = steps.flat_map(move |step| futures::stream::iter(encoder.events(step)));
    sse::response(events.map(Ok::<_, Infallible>))
}

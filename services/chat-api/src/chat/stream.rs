//! A streamed turn: the events a caller sees, in order, produced as the
//! caller reads them (nothing runs ahead of the reader, nothing is buffered):
//!
//! 1. [`TurnEvent::Conversation`] at once (the conversation is known and claimed);
//! 2. [`TurnEvent::Delta`] for each piece of the answer, as the provider sends it;
//! 3. [`TurnEvent::Done`] once the turn is stored, exactly as a non-streamed
//!    turn stores it (in the request's write unit when it has one: with an
//!    `Idempotency-Key` the store commits with the recorded answer, before
//!    the idempotency layer lets `Done` out), or [`TurnEvent::Error`];
//!    nothing after either.
//!
//! Dropping the stream (the client went away) drops the provider stream,
//! which closes the upstream connection, and the claim, which is released;
//! nothing is stored.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use tracing::Instrument;
use uuid::Uuid;

use super::{ChatService, PreparedTurn, ProviderCall, TurnOutput};
use crate::db::turn_write;
use crate::error::ApiError;
use crate::llm::{Completion, ProviderError, ProviderStream, StreamEvent};
use crate::metrics::StreamOutcome;

/// One event of a streamed turn.
#[derive(Debug)]
pub enum TurnEvent {
    Conversation { conversation_id: Uuid, request_id: String },
    Delta(String),
    Done(TurnOutput),
    Error { error: ApiError, request_id: String },
}

/// The events of one streamed turn (see the module documentation).
pub struct TurnStream {
    inner: BoxStream<'static, TurnEvent>,
}

impl TurnStream {
    pub(super) fn new(service: ChatService, turn: PreparedTurn) -> Self {
        let state = State {
            service,
            request_id: turn.request_id.clone(),
            turn: Some(turn),
            call: None,
            phase: Phase::Announce,
            text: String::new(),
            started: Instant::now(),
            outcome: None,
            // The request's span: the stream is polled after the handler
            // returned, and its provider and database spans belong to the request.
            span: tracing::Span::current(),
        };
        // The request's token slot (rate limits) and write unit (an
        // `Idempotency-Key`): the turn is stored, and its usage known, while
        // the body streams, after the handler returned.
        let tokens = crate::limits::current_turn_tokens();
        let unit = turn_write::current_unit();
        let inner = futures::stream::unfold(state, move |mut state| {
            let (tokens, unit) = (tokens.clone(), unit.clone());
            async move {
                let span = state.span.clone();
                let next = crate::limits::with_turn_tokens(tokens, state.next().instrument(span));
                let event = turn_write::in_unit(unit, next).await?;
                Some((event, state))
            }
        });
        Self { inner: Box::pin(inner) }
    }
}

impl Stream for TurnStream {
    type Item = TurnEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<TurnEvent>> {
        self.inner.poll_next_unpin(cx)
    }
}

enum Phase {
    Announce,
    Open,
    Streaming(ProviderStream),
    Finished,
}

struct State {
    service: ChatService,
    request_id: String,
    turn: Option<PreparedTurn>,
    call: Option<ProviderCall>,
    phase: Phase,
    /// The answer so far.
    text: String,
    started: Instant,
    /// How the stream ended; `None` while it runs (or when it was dropped).
    outcome: Option<StreamOutcome>,
    span: tracing::Span,
}

impl State {
    async fn next(&mut self) -> Option<TurnEvent> {
        loop {
            match std::mem::replace(&mut self.phase, Phase::Finished) {
                Phase::Announce => {
                    let turn = self.turn.as_ref()?;
                    self.phase = Phase::Open;
                    return Some(TurnEvent::Conversation {
                        conversation_id: turn.conversation_id,
                        request_id: turn.request_id.clone(),
                    });
                }
                Phase::Open => {
                    let turn = self.turn.as_mut()?;
                    let provider = self.service.provider.clone();
                    let mut call = ProviderCall::start(provider.as_ref(), &self.service.metrics, &mut turn.request);
                    // Boxed, as is the commit below: a future is as large as its
                    // largest state, and this one lives as long as the stream; the
                    // opening and storing states (retries, fallback, the database
                    // write) would otherwise be carried by every stream in flight.
                    let opened = Box::pin(call.open(provider.as_ref(), &turn.request)).await;
                    self.call = Some(call);
                    match opened {
                        Ok(stream) => self.phase = Phase::Streaming(stream),
                        Err(e) => return Some(self.fail(e.into())),
                    }
                }
                Phase::Streaming(mut stream) => {
                    let call = self.call.as_mut()?;
                    match stream.next().instrument(call.span().clone()).await {
                        Some(Ok(StreamEvent::Delta(text))) => {
                            call.token();
                            self.text.push_str(&text);
                            self.phase = Phase::Streaming(stream);
                            return Some(TurnEvent::Delta(text));
                        }
                        Some(Ok(StreamEvent::Done { usage, model, finish_reason })) => {
                            call.succeeded(&model, finish_reason.as_deref(), usage);
                            drop(stream);
                            let completion =
                                Completion { text: std::mem::take(&mut self.text), usage, model, finish_reason };
                            let turn = self.turn.take()?;
                            return Some(match Box::pin(self.service.commit(turn, completion)).await {
                                Ok(out) => {
                                    self.outcome = Some(StreamOutcome::Completed);
                                    TurnEvent::Done(out)
                                }
                                Err(e) => self.fail(e),
                            });
                        }
                        Some(Err(e)) => {
                            call.failed(e.error_type());
                            return Some(self.fail(e.into()));
                        }
                        None => {
                            let e = ProviderError::InvalidResponse("the answer stream ended without an end".into());
                            call.failed(e.error_type());
                            return Some(self.fail(e.into()));
                        }
                    }
                }
                Phase::Finished => return None,
            }
        }
    }

    /// Ends the stream with an error; the claim is released, nothing stored.
    fn fail(&mut self, error: ApiError) -> TurnEvent {
        self.turn = None;
        self.outcome = Some(StreamOutcome::Failed);
        error.log();
        TurnEvent::Error { error, request_id: self.request_id.clone() }
    }
}

impl Drop for State {
    fn drop(&mut self) {
        let outcome = self.outcome.unwrap_or(StreamOutcome::Cancelled);
        self.service.metrics.observe_stream(outcome, self.started.elapsed());
    }
}

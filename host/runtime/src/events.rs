//! One bounded event stream per request: all of a request's choices (its n sequences) send
//! on one channel, tagged by choice index. The bound is what a choice can send: `Accepted`,
//! `Scheduled`, prompt logprobs, at most `max_tokens` tokens and one final event; so the engine's
//! `try_send` never finds it full, and never waits on a slow client.

use crate::request::{EngineRequest, Event};
use tokio::sync::mpsc::{channel, Receiver, Sender};

/// Events one choice can send besides its tokens.
const EVENTS_BESIDES_TOKENS: usize = 4;

/// Far above any context length, far below what tokio's channel accepts.
const MAX_BOUND: usize = 1 << 40;

/// The engine's end of one choice's events.
pub struct EventSink {
    tx: Sender<(usize, Event)>,
    choice: usize,
}

impl EventSink {
    /// Sends an event. A receiver that is gone will end the request itself (its owner's drop
    /// finishes it); a full channel would be a broken bound (see the module): the event is
    /// dropped and the error logged.
    pub fn send(&self, event: Event) {
        if let Err(tokio::sync::mpsc::error::TrySendError::Full(_)) = self.tx.try_send((self.choice, event)) {
            tracing::error!(choice = self.choice, "a request's event stream is full: its bound is wrong");
        }
    }
}

/// The front end's end: every choice's events in the order the engine sent them.
pub struct EngineEvents {
    rx: Receiver<(usize, Event)>,
}

impl EngineEvents {
    pub async fn recv(&mut self) -> Option<(usize, Event)> {
        self.rx.recv().await
    }

    /// For callers off the async runtime (tests, inline drivers).
    pub fn blocking_recv(&mut self) -> Option<(usize, Event)> {
        self.rx.blocking_recv()
    }

    pub fn try_recv(&mut self) -> Option<(usize, Event)> {
        self.rx.try_recv().ok()
    }
}

/// A stream for `requests` (one per choice) and one sink per choice.
pub fn event_stream(requests: &[EngineRequest]) -> (Vec<EventSink>, EngineEvents) {
    let bound = requests.iter().fold(0usize, |b, r| b.saturating_add(r.max_tokens.saturating_add(EVENTS_BESIDES_TOKENS)));
    // tokio allocates a channel's blocks as they fill, so a large bound costs nothing up front;
    // it refuses bounds past its semaphore's limit, which no real request comes near.
    let (tx, rx) = channel(bound.clamp(1, MAX_BOUND));
    let sinks = (0..requests.len()).map(|choice| EventSink { tx: tx.clone(), choice }).collect();
    (sinks, EngineEvents { rx })
}

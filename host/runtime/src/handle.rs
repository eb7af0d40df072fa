//! The server's side of an engine core: the core runs on its own thread, and async front
//! ends talk to it through a cloneable handle over one command channel. A request's choices
//! share one bounded event stream (`events`); it is ended by one path: `finish` (the front end
//! found a stop string, or the client left and the request's owner was dropped).

use crate::core::ServingCore;
use crate::metrics::Metrics;
use crate::events::{event_stream, EngineEvents, EventSink};
use crate::request::{EngineRequest, FinishReason};
use mlahost_core::SeqId;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

enum Command {
    Submit { ids: Vec<SeqId>, requests: Vec<EngineRequest>, sinks: Vec<EventSink> },
    Finish(SeqId, FinishReason),
    AbortAll,
    /// Drop every cached prefix page nobody uses; replies with how many went.
    ResetPrefixCache(tokio::sync::oneshot::Sender<usize>),
}

/// The HTTP side's handle on the engine loop. Cloning shares the loop.
#[derive(Clone)]
pub struct EngineHandle {
    commands: UnboundedSender<Command>,
    next_id: Arc<AtomicU64>,
    metrics: Arc<Metrics>,
}

impl EngineHandle {
    /// Queues a request's choices (one engine request each); their events arrive on one
    /// stream tagged by choice index, `Accepted` or `Rejected` first for each. The caller ends
    /// what it no longer wants with `finish` (the stream's closing alone does not).
    pub fn submit(&self, requests: Vec<EngineRequest>) -> (Vec<SeqId>, EngineEvents) {
        let ids: Vec<SeqId> = requests.iter().map(|_| self.next_id.fetch_add(1, Relaxed)).collect();
        let (sinks, events) = event_stream(&requests);
        if self.commands.send(Command::Submit { ids: ids.clone(), requests, sinks }).is_err() {
            // The loop is gone; the stream sees its senders dropped and ends.
        }
        (ids, events)
    }

    /// Ends a choice with `reason`: `Abort` (the client left) or `Stop` (a stop string).
    pub fn finish(&self, id: SeqId, reason: FinishReason) {
        let _ = self.commands.send(Command::Finish(id, reason));
    }

    /// The core's counters. Generated tokens are counted here by the front end as it takes
    /// them (vLLM's rule): tokens the engine made after a stop string reached it are not.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Cancels everything in flight (used after the shutdown grace period).
    pub fn abort_all(&self) {
        let _ = self.commands.send(Command::AbortAll);
    }

    /// Empties the prefix cache of pages no request uses; None if the loop is gone.
    pub async fn reset_prefix_cache(&self) -> Option<usize> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.commands.send(Command::ResetPrefixCache(tx)).ok()?;
        rx.await.ok()
    }
}

/// Starts a core's loop on its own thread. The loop ends when every handle is dropped.
pub fn spawn(core: ServingCore) -> std::io::Result<(EngineHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = unbounded_channel();
    let handle = EngineHandle { commands: tx, next_id: Arc::new(AtomicU64::new(1)), metrics: core.metrics().clone() };
    let join = std::thread::Builder::new().name("engine-loop".into()).spawn(move || run(core, rx))?;
    Ok((handle, join))
}

fn run(mut core: ServingCore, mut commands: UnboundedReceiver<Command>) {
    let metrics = core.metrics().clone();
    metrics.engine_alive.store(true, Relaxed);
    // Marks the engine dead however the loop ends, a panic included, so /health turns 503.
    struct Alive(Arc<Metrics>);
    impl Drop for Alive {
        fn drop(&mut self) {
            self.0.engine_alive.store(false, Relaxed);
        }
    }
    let _alive = Alive(metrics);
    loop {
        if !core.has_work() {
            match commands.blocking_recv() {
                Some(c) => handle(&mut core, c),
                None => break,
            }
        }
        while let Ok(c) = commands.try_recv() {
            handle(&mut core, c);
        }
        if !core.step() {
            break;
        }
    }
}

fn handle(core: &mut ServingCore, command: Command) {
    match command {
        Command::Submit { ids, requests, sinks } => {
            for ((id, request), sink) in ids.into_iter().zip(requests).zip(sinks) {
                core.add(id, request, sink);
            }
        }
        Command::Finish(id, reason) => core.end(id, reason),
        Command::AbortAll => core.abort_all(),
        Command::ResetPrefixCache(reply) => {
            let _ = reply.send(core.reset_prefix_cache());
        }
    }
}

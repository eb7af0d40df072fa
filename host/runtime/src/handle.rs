//! The server's side of an engine core: the core runs on its own thread, and async front
//! ends talk to it through a cloneable handle over one command channel. A request whose event
//! receiver is gone (client disconnected) is aborted at whatever stage it is in.

use crate::core::ServingCore;
use crate::request::{EngineRequest, Event};
use mlahost_core::SeqId;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

enum Command {
    Submit { id: SeqId, request: EngineRequest, events: UnboundedSender<Event> },
    Abort(SeqId),
    AbortAll,
    /// Drop every cached prefix page nobody uses; replies with how many went.
    ResetPrefixCache(tokio::sync::oneshot::Sender<usize>),
}

/// The HTTP side's handle on the engine loop. Cloning shares the loop.
#[derive(Clone)]
pub struct EngineHandle {
    commands: UnboundedSender<Command>,
    next_id: Arc<AtomicU64>,
}

impl EngineHandle {
    /// Queues a request; its events arrive on the returned receiver, `Accepted` or `Rejected`
    /// first. Dropping the receiver aborts the request.
    pub fn submit(&self, request: EngineRequest) -> (SeqId, UnboundedReceiver<Event>) {
        let id = self.next_id.fetch_add(1, Relaxed);
        let (events, rx) = unbounded_channel();
        if self.commands.send(Command::Submit { id, request, events }).is_err() {
            // The loop is gone; the receiver sees a closed channel.
        }
        (id, rx)
    }

    pub fn abort(&self, id: SeqId) {
        let _ = self.commands.send(Command::Abort(id));
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
    let handle = EngineHandle { commands: tx, next_id: Arc::new(AtomicU64::new(1)) };
    let join = std::thread::Builder::new().name("engine-loop".into()).spawn(move || run(core, rx))?;
    Ok((handle, join))
}

fn run(mut core: ServingCore, mut commands: UnboundedReceiver<Command>) {
    let metrics = core.metrics().clone();
    metrics.engine_alive.store(true, Relaxed);
    // Marks the engine dead however the loop ends, a panic included, so /health turns 503.
    struct Alive(Arc<crate::metrics::Metrics>);
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
        Command::Submit { id, request, events } => core.add(id, request, events),
        Command::Abort(id) => core.abort(id),
        Command::AbortAll => core.abort_all(),
        Command::ResetPrefixCache(reply) => {
            let _ = reply.send(core.reset_prefix_cache());
        }
    }
}


//! The sandbox's monotonic clock: frozen at 0, and with no timers. WASI's clock subscriptions
//! (what a guest's `sleep` or a poll with a timeout uses) would block the calling host thread
//! where the epoch deadline cannot reach it, so asking for one traps: a plugin can spin until
//! its deadline, but never wait.

use crate::sandbox::Sandbox;
use wasmtime::component::{HasSelf, Linker, Resource};
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock::{self, Duration, Instant};
use wasmtime_wasi::p2::DynPollable;

const NO_TIMERS: &str = "the plugin sandbox has no timers: a plugin may not sleep or wait";

impl monotonic_clock::Host for Sandbox {
    fn now(&mut self) -> wasmtime::Result<Instant> {
        Ok(0)
    }

    fn resolution(&mut self) -> wasmtime::Result<Instant> {
        Ok(1_000_000_000)
    }

    fn subscribe_instant(&mut self, _when: Instant) -> wasmtime::Result<Resource<DynPollable>> {
        Err(wasmtime::Error::msg(NO_TIMERS))
    }

    fn subscribe_duration(&mut self, _duration: Duration) -> wasmtime::Result<Resource<DynPollable>> {
        Err(wasmtime::Error::msg(NO_TIMERS))
    }
}

/// Replaces WASI's monotonic clock in a linker that already has the rest of WASI.
pub fn shadow_monotonic_clock(linker: &mut Linker<Sandbox>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let added = monotonic_clock::add_to_linker::<Sandbox, HasSelf<Sandbox>>(linker, |s| s);
    linker.allow_shadowing(false);
    added
}

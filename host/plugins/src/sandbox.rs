//! Each plugin instance's store: WASI with no capabilities (no preopened directories, no
//! environment, no sockets, frozen clocks), stdout/stderr captured for tracing, a memory cap.

use std::time::Duration;
use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

/// Output an instance may buffer; writing past it traps the call. Instances are retired once
/// half full, so each call may print at least half of it.
const OUTPUT_CAPACITY: usize = 64 << 10;

/// A clock that never moves: plugins get time only through their hooks' arguments.
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

pub struct Sandbox {
    wasi: WasiCtx,
    pub table: ResourceTable,
    pub limits: StoreLimits,
    stdout: MemoryOutputPipe,
    stderr: MemoryOutputPipe,
    drained: (usize, usize),
}

impl Sandbox {
    pub fn new(memory_bytes: usize) -> Self {
        let stdout = MemoryOutputPipe::new(OUTPUT_CAPACITY);
        let stderr = MemoryOutputPipe::new(OUTPUT_CAPACITY);
        let wasi = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .insecure_random_seed(0)
            .build();
        let limits = StoreLimitsBuilder::new().memory_size(memory_bytes).instances(64).tables(64).memories(8).build();
        Self { wasi, table: ResourceTable::new(), limits, stdout, stderr, drained: (0, 0) }
    }

    /// What the plugin printed since the last drain, stdout then stderr.
    pub fn drain_output(&mut self) -> (String, String) {
        let out = self.stdout.contents();
        let err = self.stderr.contents();
        let new_out = String::from_utf8_lossy(&out[self.drained.0.min(out.len())..]).to_string();
        let new_err = String::from_utf8_lossy(&err[self.drained.1.min(err.len())..]).to_string();
        self.drained = (out.len(), err.len());
        (new_out, new_err)
    }

    /// True when the output buffers are nearly full (time for a fresh instance).
    pub fn output_nearly_full(&self) -> bool {
        self.drained.0.max(self.drained.1) > OUTPUT_CAPACITY / 2
    }
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

//! A plugin version's instances. Up to `size` serve calls; beside them pre-initialized
//! standbys wait, built off the request path by a background thread, so an instance dropped
//! after a trap is replaced at once and `init` never runs on a request's path. A caller waits
//! for a free instance at most the hook's deadline; then the call fails as busy. A caller may
//! name a lane (a fixed share of the requests): it gets back the instance that served that
//! lane last when it is free, so per-request state inside a plugin (a grammar's matcher) stays
//! warm when several instances serve one step in parallel.

use crate::instance::Live;
use std::sync::{Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

pub struct Pool {
    state: Mutex<State>,
    changed: Condvar,
    size: usize,
}

struct State {
    /// Free instances, each with the lane it served last.
    idle: Vec<(Live, Option<usize>)>,
    standby: Vec<Live>,
    /// Instances serving calls: the idle ones plus those lent to a call.
    in_service: usize,
    building: usize,
}

impl Pool {
    /// A pool whose first instance (already initialized) serves at once.
    pub fn new(size: usize, first: Live) -> Self {
        let state = State { idle: vec![(first, None)], standby: Vec::new(), in_service: 1, building: 0 };
        Self { state: Mutex::new(state), changed: Condvar::new(), size: size.max(1) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A free instance, waiting at most `wait` for one: the one that last served `lane` when it
    /// is free, else any.
    pub fn take(&self, lane: Option<usize>, wait: Duration) -> Option<Live> {
        let deadline = Instant::now() + wait;
        let mut st = self.lock();
        loop {
            let same_lane = lane.and_then(|l| st.idle.iter().position(|(_, last)| *last == Some(l)));
            let pick = same_lane.or_else(|| st.idle.iter().position(|(_, last)| last.is_none())).or(st.idle.len().checked_sub(1));
            if let Some(i) = pick {
                return Some(st.idle.swap_remove(i).0);
            }
            if st.in_service < self.size {
                if let Some(live) = st.standby.pop() {
                    st.in_service += 1;
                    self.changed.notify_all();
                    return Some(live);
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            st = self.changed.wait_timeout(st, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    pub fn give_back(&self, live: Live, lane: Option<usize>) {
        self.lock().idle.push((live, lane));
        self.changed.notify_all();
    }

    /// A lent instance was dropped (it trapped, overran or filled its output buffer).
    pub fn discard(&self) {
        let mut st = self.lock();
        st.in_service = st.in_service.saturating_sub(1);
        self.changed.notify_all();
    }

    /// Instances in service and ready standbys (for tests and metrics).
    pub fn counts(&self) -> (usize, usize) {
        let st = self.lock();
        (st.in_service, st.standby.len())
    }

    /// Standbys wanted: enough to fill the service up to `size`, and always one.
    fn wants_more(&self, st: &State) -> bool {
        st.standby.len() + st.building < self.size.saturating_sub(st.in_service).max(1)
    }

    /// Waits up to `wait` until another instance is wanted, and reserves building it.
    fn reserve_build(&self, wait: Duration) -> bool {
        let mut st = self.lock();
        if !self.wants_more(&st) {
            st = self.changed.wait_timeout(st, wait).unwrap_or_else(|p| p.into_inner()).0;
        }
        if self.wants_more(&st) {
            st.building += 1;
            return true;
        }
        false
    }

    fn built(&self, live: Option<Live>) {
        let mut st = self.lock();
        st.building -= 1;
        st.standby.extend(live);
        self.changed.notify_all();
    }
}

/// Keeps a pool supplied from a background thread until the pool is dropped. `build` makes
/// one initialized instance; failures back off (50 ms doubling to 5 s) so a plugin whose
/// `init` always fails cannot spin a core.
pub fn spawn_refiller(
    name: &str,
    pool: Weak<Pool>,
    build: impl Fn() -> Result<Live, crate::PluginError> + Send + 'static,
) -> std::io::Result<()> {
    let plugin = name.to_string();
    std::thread::Builder::new().name(format!("plugin-refill-{name}")).spawn(move || {
        let mut backoff = Duration::from_millis(50);
        loop {
            let Some(pool) = pool.upgrade() else { return };
            if !pool.reserve_build(Duration::from_millis(250)) {
                continue;
            }
            match build() {
                Ok(live) => {
                    pool.built(Some(live));
                    backoff = Duration::from_millis(50);
                }
                Err(e) => {
                    pool.built(None);
                    drop(pool);
                    tracing::warn!(plugin = %plugin, error = %e, "could not prepare a plugin instance; retrying");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    })?;
    Ok(())
}

//! The CPU backend's worker team: persistent threads that split each parallel op of a forward
//! pass into parts and take them from a shared counter. While a pass is running (`Team::hot`)
//! idle workers spin for the next op instead of sleeping, so the many small ops of a decode
//! step cost no wake-ups; between passes they park on a condition variable.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// One op: `parts` calls of `f`, each with a distinct part index.
struct Job {
    /// Points at a `&(dyn Fn(usize) + Sync)` on the caller's stack (see `Team::run`).
    f: *const (dyn Fn(usize) + Sync),
    parts: usize,
}

// SAFETY: the pointee is `Sync` and outlives every use (`Team::run` waits for all workers to
// leave the job before returning).
unsafe impl Send for Job {}
unsafe impl Sync for Job {}

struct Shared {
    /// Bumped for each new job; workers compare it with the last one they joined.
    epoch: AtomicUsize,
    job: Mutex<Option<Arc<Job>>>,
    next: AtomicUsize,
    /// Workers still inside the current job.
    busy: AtomicUsize,
    /// Forward passes running now: while above 0, idle workers spin instead of parking.
    hot: AtomicUsize,
    /// Held through each `run`, so callers on several threads (replicas) take turns.
    runner: Mutex<()>,
    /// Set by a worker whose part panicked; `run` panics in turn.
    panicked: AtomicBool,
    wake: Condvar,
    park: Mutex<()>,
}

pub struct Team {
    shared: Arc<Shared>,
    threads: usize,
}

/// How long an idle worker spins outside a hot pass before it parks.
const COOL_SPIN: Duration = Duration::from_micros(50);

impl Team {
    /// A team of `threads` (the caller counts as one; `threads - 1` workers are started).
    pub fn new(threads: usize) -> Team {
        let shared = Arc::new(Shared {
            epoch: AtomicUsize::new(0),
            job: Mutex::new(None),
            next: AtomicUsize::new(0),
            busy: AtomicUsize::new(0),
            hot: AtomicUsize::new(0),
            runner: Mutex::new(()),
            panicked: AtomicBool::new(false),
            wake: Condvar::new(),
            park: Mutex::new(()),
        });
        for i in 1..threads.max(1) {
            let s = shared.clone();
            // A worker that cannot be started only makes the team smaller.
            let _ = std::thread::Builder::new().name(format!("mlahost-cpu-{i}")).spawn(move || worker(&s));
        }
        Team { shared, threads: threads.max(1) }
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `body` with the workers spinning between ops, then lets them park.
    pub fn hot<R>(&self, body: impl FnOnce() -> R) -> R {
        struct Cool<'a>(&'a AtomicUsize);
        impl Drop for Cool<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.shared.hot.fetch_add(1, Ordering::SeqCst);
        let _cool = Cool(&self.shared.hot);
        body()
    }

    /// Calls `f(i)` for every `i < parts`, spread over the team; returns when all are done.
    /// A `run` from inside `f` runs its parts serially on that thread.
    pub fn run(&self, parts: usize, f: &(dyn Fn(usize) + Sync)) {
        if parts <= 1 || self.threads == 1 || IN_PART.with(|p| p.get()) {
            (0..parts).for_each(f);
            return;
        }
        let s = &*self.shared;
        let _turn = s.runner.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the 'static is a lie kept inside this call: every worker that takes the job
        // increments `busy` before reading `f` and decrements it after its last call, and this
        // function waits for `busy == 0` and withdraws the job before returning.
        let f_static: &'static (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
        {
            let mut job = s.job.lock().unwrap_or_else(|e| e.into_inner());
            s.next.store(0, Ordering::SeqCst);
            *job = Some(Arc::new(Job { f: f_static, parts }));
            s.epoch.fetch_add(1, Ordering::SeqCst);
        }
        s.wake.notify_all();
        // Withdraws the job and waits for the workers inside it, also when `f` panics here.
        struct Finish<'a>(&'a Shared);
        impl Drop for Finish<'_> {
            fn drop(&mut self) {
                *self.0.job.lock().unwrap_or_else(|e| e.into_inner()) = None;
                // A worker preempted inside a part (a busy machine) gets the core back soon.
                let mut spins = 0u32;
                while self.0.busy.load(Ordering::Acquire) != 0 {
                    spins = spins.wrapping_add(1);
                    if spins % 256 == 0 {
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
            }
        }
        let finish = Finish(s);
        take_parts(s, parts, f);
        drop(finish);
        if s.panicked.swap(false, Ordering::SeqCst) {
            panic!("a CPU worker thread panicked");
        }
    }
}

thread_local! {
    /// Set while this thread runs parts of a job: a `run` from inside one runs serially.
    static IN_PART: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn take_parts(s: &Shared, parts: usize, f: &(dyn Fn(usize) + Sync)) {
    struct Leave;
    impl Drop for Leave {
        fn drop(&mut self) {
            IN_PART.with(|p| p.set(false));
        }
    }
    IN_PART.with(|p| p.set(true));
    let _leave = Leave;
    loop {
        let i = s.next.fetch_add(1, Ordering::Relaxed);
        if i >= parts {
            break;
        }
        f(i);
    }
}

fn worker(s: &Shared) {
    let mut seen = 0usize;
    loop {
        let idle_since = Instant::now();
        let mut spins = 0u32;
        while s.epoch.load(Ordering::Acquire) == seen {
            spins = spins.wrapping_add(1);
            if spins % 64 == 0 && s.hot.load(Ordering::Relaxed) == 0 && idle_since.elapsed() > COOL_SPIN {
                let guard = s.park.lock().unwrap_or_else(|e| e.into_inner());
                if s.epoch.load(Ordering::Acquire) == seen {
                    // Timed, so a missed notify costs at most a millisecond.
                    let _ = s.wake.wait_timeout(guard, Duration::from_millis(1));
                }
            } else if spins % 256 == 0 {
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
        seen = s.epoch.load(Ordering::Acquire);
        let job = {
            let guard = s.job.lock().unwrap_or_else(|e| e.into_inner());
            match guard.as_ref() {
                Some(j) => {
                    s.busy.fetch_add(1, Ordering::AcqRel);
                    j.clone()
                }
                None => continue,
            }
        };
        // SAFETY: `busy` was raised under the job lock while the job was still posted, so
        // `Team::run` has not returned and the closure is alive.
        let f = unsafe { &*job.f };
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| take_parts(s, job.parts, f))).is_err() {
            s.panicked.store(true, Ordering::SeqCst);
        }
        drop(job);
        s.busy.fetch_sub(1, Ordering::Release);
    }
}

/// A mutable slice handed out in disjoint chunks to the parts of one `Team::run`.
pub struct Chunks<'a, T> {
    ptr: *mut T,
    len: usize,
    chunk: usize,
    _life: std::marker::PhantomData<&'a mut [T]>,
}

// SAFETY: parts only reach disjoint chunks (`Chunks::get` with distinct indices).
unsafe impl<T: Send> Sync for Chunks<'_, T> {}

impl<'a, T> Chunks<'a, T> {
    pub fn new(data: &'a mut [T], chunk: usize) -> Self {
        Self { ptr: data.as_mut_ptr(), len: data.len(), chunk: chunk.max(1), _life: std::marker::PhantomData }
    }

    /// How many chunks there are (the last may be short).
    pub fn count(&self) -> usize {
        self.len.div_ceil(self.chunk)
    }

    /// Chunk `i`.
    ///
    /// # Safety
    /// No two live results may come from the same `i` (each part of a `run` takes its own).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get(&self, i: usize) -> &mut [T] {
        let start = (i * self.chunk).min(self.len);
        let end = (start + self.chunk).min(self.len);
        // SAFETY: start..end lies inside the borrowed slice, and the caller promises that no
        // other reference to this chunk is alive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), end - start) }
    }
}

/// `f(i, chunk_i)` for every `chunk`-long piece of `data`, spread over the team.
pub fn for_each_chunk<T: Send>(data: &mut [T], chunk: usize, f: &(dyn Fn(usize, &mut [T]) + Sync)) {
    let chunks = Chunks::new(data, chunk);
    // SAFETY: `run` calls each part index exactly once, so each chunk is taken once.
    team().run(chunks.count(), &|i| f(i, unsafe { chunks.get(i) }));
}

static TEAM: OnceLock<Team> = OnceLock::new();

/// Sizes the process's team (first call wins; later calls with another size are refused).
pub fn init(threads: usize) -> bool {
    let mut made = false;
    let t = TEAM.get_or_init(|| {
        made = true;
        Team::new(threads)
    });
    made || t.threads() == threads
}

/// The process's team, sized like rayon's global pool unless `init` came first.
pub fn team() -> &'static Team {
    TEAM.get_or_init(|| Team::new(rayon::current_num_threads()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_part_runs_exactly_once_across_many_ops() {
        let team = Team::new(3);
        let counts: Vec<AtomicUsize> = (0..97).map(|_| AtomicUsize::new(0)).collect();
        team.hot(|| {
            for parts in [0, 1, 2, 5, 97, 64] {
                team.run(parts, &|i| {
                    counts[i].fetch_add(1, Ordering::Relaxed);
                });
            }
        });
        team.run(7, &|i| {
            counts[i].fetch_add(1, Ordering::Relaxed);
        });
        let want = |i: usize| [1, 2, 5, 97, 64, 7].iter().filter(|&&p| i < p).count();
        for (i, c) in counts.iter().enumerate() {
            assert_eq!(c.load(Ordering::Relaxed), want(i), "part {i}");
        }
    }
}

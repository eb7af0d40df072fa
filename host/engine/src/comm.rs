//! Collectives between the ranks of one model instance spread over several devices. The
//! engine's tensor-parallel forward needs two: a sum of every rank's partial hidden states
//! (after the row-parallel o_proj and down projections) and a gather of the vocabulary-parallel
//! logits. `LocalGroup` runs the ranks as threads of one process (the CPU reference and the
//! emulation that checks a split against one device); NCCL is the device implementation.

use crate::{EngineError, Result};
use std::sync::{Arc, Condvar, Mutex};

/// One rank's end of a group. Every rank calls the same collectives in the same order.
pub trait Communicator: Send + Sync {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    /// Replaces `buf` on every rank with the sum of every rank's `buf`, added in rank order (so
    /// every rank holds the same bits).
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()>;
    /// Every rank's `local` (lengths may differ), concatenated in rank order, on every rank.
    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>>;
    /// Tells the other ranks this one failed, so none waits for it forever.
    fn abandon(&self);
}

/// Ranks as threads of one process, exchanging through shared memory.
pub struct LocalGroup;

impl LocalGroup {
    /// The `world` ranks' ends, rank 0 first.
    pub fn new(world: usize) -> Vec<LocalComm> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State { slots: vec![Vec::new(); world], arrived: 0, generation: 0, abandoned: false }),
            turn: Condvar::new(),
        });
        (0..world).map(|rank| LocalComm { rank, world, shared: shared.clone() }).collect()
    }
}

pub struct LocalComm {
    rank: usize,
    world: usize,
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    turn: Condvar,
}

struct State {
    /// Each rank's contribution to the collective in progress.
    slots: Vec<Vec<f32>>,
    arrived: usize,
    /// Counts completed barriers, so a rank that wakes knows its barrier has passed.
    generation: u64,
    abandoned: bool,
}

fn abandoned() -> EngineError {
    EngineError::Collective("another rank failed during the collective".into())
}

impl LocalComm {
    /// Waits until every rank has arrived (or one abandoned the group).
    fn barrier(&self) -> Result<()> {
        let mut s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.abandoned {
            return Err(abandoned());
        }
        let generation = s.generation;
        s.arrived += 1;
        if s.arrived == self.world {
            s.arrived = 0;
            s.generation += 1;
            self.shared.turn.notify_all();
            return Ok(());
        }
        while s.generation == generation && !s.abandoned {
            s = self.shared.turn.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        if s.abandoned {
            return Err(abandoned());
        }
        Ok(())
    }

    /// Deposits `local`, waits for every rank's, reads them all with `read`, then waits until
    /// every rank has read before anyone deposits again.
    fn exchange<R>(&self, local: &[f32], read: impl FnOnce(&[Vec<f32>]) -> R) -> Result<R> {
        {
            let mut s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            s.slots[self.rank] = local.to_vec();
        }
        self.barrier()?;
        let out = {
            let s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            read(&s.slots)
        };
        self.barrier()?;
        Ok(out)
    }
}

impl Communicator for LocalComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.world
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let n = buf.len();
        let sum = self.exchange(buf, |slots| {
            if slots.iter().any(|s| s.len() != n) {
                return Err(EngineError::Collective(format!("all-reduce of unequal lengths: {:?}", slots.iter().map(Vec::len).collect::<Vec<_>>())));
            }
            let mut sum = slots[0].clone();
            for s in &slots[1..] {
                sum.iter_mut().zip(s).for_each(|(a, b)| *a += b);
            }
            Ok(sum)
        })??;
        buf.copy_from_slice(&sum);
        Ok(())
    }

    fn all_gather(&self, local: &[f32]) -> Result<Vec<f32>> {
        self.exchange(local, |slots| slots.concat())
    }

    fn abandon(&self) {
        let mut s = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        s.abandoned = true;
        self.shared.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_gathers_in_rank_order_on_every_rank() {
        let comms = LocalGroup::new(3);
        let results: Vec<(Vec<f32>, Vec<f32>)> = std::thread::scope(|s| {
            let handles: Vec<_> = comms
                .iter()
                .map(|c| {
                    s.spawn(move || {
                        let r = c.rank() as f32;
                        let mut buf = vec![r, 10.0 * r + 1.0];
                        // several rounds: slots are reused only after every rank has read them
                        for _ in 0..50 {
                            buf = vec![r, 10.0 * r + 1.0];
                            c.all_reduce_sum(&mut buf).unwrap();
                        }
                        let gathered = c.all_gather(&vec![r; c.rank() + 1]).unwrap();
                        (buf, gathered)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (sum, gathered) in results {
            assert_eq!(sum, vec![3.0, 33.0]);
            assert_eq!(gathered, vec![0.0, 1.0, 1.0, 2.0, 2.0, 2.0]);
        }
    }

    #[test]
    fn a_failed_rank_releases_the_others() {
        let comms = LocalGroup::new(2);
        std::thread::scope(|s| {
            let waiting = s.spawn(|| comms[0].all_reduce_sum(&mut [1.0]));
            comms[1].abandon();
            assert!(matches!(waiting.join().unwrap(), Err(EngineError::Collective(_))));
        });
        let mut buf = [1.0];
        assert!(comms[0].all_reduce_sum(&mut buf).is_err(), "an abandoned group stays failed");
    }
}

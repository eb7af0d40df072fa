use super::*;

fn sched(pages: usize, page_size: usize, budget: usize, max_seqs: usize, queue: usize) -> Scheduler {
    let cfg = SchedulerConfig { max_num_batched_tokens: budget, max_num_seqs: max_seqs, max_queued_requests: queue, ..SchedulerConfig::default() };
    Scheduler::new(cfg, BlockAllocator::new(pages, page_size).unwrap()).unwrap()
}

fn seq(id: SeqId, len: usize, priority: i32) -> Sequence {
    Sequence::new(id, (0..len as u32).collect(), priority)
}

/// Runs one step, "sampling" token 1000 + step for every sequence that samples.
fn step(s: &mut Scheduler, n: u32) -> StepPlan {
    let plan = s.schedule();
    let sampled: Vec<(SeqId, u32)> = plan.chunks.iter().filter(|c| c.samples).map(|c| (c.seq, 1000 + n)).collect();
    s.commit(&plan, &sampled);
    plan
}

#[test]
fn chunked_prefill_respects_the_token_budget() {
    let mut s = sched(64, 4, 10, 8, 8);
    s.add(seq(1, 23, 0), 30).unwrap();
    s.add(seq(2, 3, 0), 30).unwrap();
    let p = step(&mut s, 0);
    assert_eq!(p.chunks, vec![ScheduledChunk { seq: 1, start: 0, len: 10, samples: false }]);
    let p = step(&mut s, 1);
    assert_eq!(p.chunks[0], ScheduledChunk { seq: 1, start: 10, len: 10, samples: false });
    let p = step(&mut s, 2);
    // Seq 1 finishes its prompt (3 tokens) and seq 2 prefills in the same step.
    assert_eq!(p.chunks[0], ScheduledChunk { seq: 1, start: 20, len: 3, samples: true });
    assert_eq!(p.chunks[1], ScheduledChunk { seq: 2, start: 0, len: 3, samples: true });
    let p = step(&mut s, 3);
    assert_eq!(p.num_tokens(), 2, "both decode one token");
    assert_eq!(s.get(1).unwrap().output(), &[1002, 1003]);
}

#[test]
fn priority_first_then_fifo_and_the_sequence_cap() {
    let mut s = sched(64, 4, 100, 2, 8);
    s.add(seq(1, 2, 0), 4).unwrap();
    s.add(seq(2, 2, 5), 4).unwrap();
    s.add(seq(3, 2, 0), 4).unwrap();
    s.add(seq(4, 2, 5), 4).unwrap();
    let p = s.schedule();
    let order: Vec<SeqId> = p.chunks.iter().map(|c| c.seq).collect();
    assert_eq!(order, vec![2, 4], "higher priority first, FIFO within, at most 2 running");
    s.remove(2);
    s.commit(&p, &[]);
    let p = s.schedule();
    assert_eq!(p.chunks.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![4, 1]);
}

#[test]
fn queue_limit_and_impossible_requests_are_refused() {
    let mut s = sched(4, 4, 100, 8, 2);
    s.add(seq(1, 2, 0), 4).unwrap();
    s.add(seq(2, 2, 0), 4).unwrap();
    assert_eq!(s.add(seq(3, 2, 0), 4), Err(CoreError::QueueFull { limit: 2 }));
    let mut s = sched(4, 4, 100, 8, 8);
    assert!(matches!(s.add(seq(1, 2, 0), 17), Err(CoreError::OutOfPages { .. })));
    assert_eq!(s.add(seq(1, 0, 0), 4), Err(CoreError::EmptySequence(1)));
}

#[test]
fn preemption_recomputes_and_keeps_the_output() {
    // 4 pages of 4 tokens; two sequences that each grow to 12 tokens cannot both fit.
    let mut s = sched(4, 4, 64, 8, 8);
    s.add(seq(1, 6, 0), 12).unwrap();
    s.add(seq(2, 6, 0), 12).unwrap();
    let mut outputs: HashMap<SeqId, Vec<u32>> = HashMap::new();
    let mut preempted = 0;
    for n in 0..40 {
        if !s.has_work() {
            break;
        }
        let plan = s.schedule();
        preempted += plan.preempted.len();
        let mut sampled = Vec::new();
        for c in plan.chunks.iter().filter(|c| c.samples) {
            // A deterministic "model": the next token depends only on the sequence so far.
            let toks = s.get(c.seq).unwrap().tokens();
            sampled.push((c.seq, toks.iter().sum::<u32>() % 97 + c.seq as u32 * 1000));
        }
        s.commit(&plan, &sampled);
        for &(id, _) in &sampled {
            let seq = s.get(id).unwrap();
            if seq.output().len() == 6 {
                outputs.insert(id, seq.output().to_vec());
                s.remove(id);
            }
        }
        assert!(s.stats().pages_used <= 4, "step {n}");
    }
    assert!(preempted > 0, "the tiny pool forces a preemption");
    assert_eq!(s.stats().pages_used, 0, "every page comes back");
    // Each output equals what the sequence produces alone.
    for id in [1, 2] {
        let mut alone = sched(4, 4, 64, 8, 8);
        alone.add(seq(id, 6, 0), 12).unwrap();
        let mut out = Vec::new();
        while out.len() < 6 {
            let plan = alone.schedule();
            let sampled: Vec<(SeqId, u32)> = plan
                .chunks
                .iter()
                .filter(|c| c.samples)
                .map(|c| (c.seq, alone.get(c.seq).unwrap().tokens().iter().sum::<u32>() % 97 + id as u32 * 1000))
                .collect();
            alone.commit(&plan, &sampled);
            out = alone.get(id).unwrap().output().to_vec();
        }
        assert_eq!(outputs[&id], out, "sequence {id}");
    }
}

#[test]
fn abort_at_any_stage_returns_every_page() {
    let mut s = sched(16, 4, 8, 8, 8);
    s.add(seq(1, 20, 0), 24).unwrap(); // prefilling in chunks
    s.add(seq(2, 3, 0), 8).unwrap();
    s.add(seq(3, 3, 0), 8).unwrap(); // still queued
    step(&mut s, 0);
    step(&mut s, 1);
    assert!(s.stats().pages_used > 0);
    assert_eq!(s.get(1).unwrap().status(), SeqStatus::Running);
    for id in [1, 2, 3] {
        assert!(s.remove(id).is_some());
    }
    let st = s.stats();
    assert_eq!((st.waiting, st.running, st.pages_used, st.pages_total), (0, 0, 0, 16));
    assert!(s.remove(1).is_none());
}

/// Runs `id` alone to completion of `n` output tokens with a deterministic "model".
fn run_to(s: &mut Scheduler, id: SeqId, n: usize) -> Vec<u32> {
    loop {
        let plan = s.schedule();
        let sampled: Vec<(SeqId, u32)> = plan
            .chunks
            .iter()
            .filter(|c| c.samples)
            .map(|c| (c.seq, s.get(c.seq).unwrap().tokens().iter().sum::<u32>() % 101))
            .collect();
        s.commit(&plan, &sampled);
        let out = s.get(id).unwrap().output().to_vec();
        if out.len() >= n {
            s.remove(id);
            return out;
        }
    }
}

#[test]
fn cached_tokens_are_reported_and_a_sequence_can_refuse_the_cache() {
    let mut s = sched(32, 4, 64, 8, 8);
    let base: Vec<u32> = (100..113).collect();
    s.add(Sequence::new(1, base.clone(), 0), 20).unwrap();
    run_to(&mut s, 1, 3);
    s.add(Sequence::new(2, base.clone(), 0).without_prefix_reuse(), 20).unwrap();
    let plan = s.schedule();
    assert_eq!(plan.chunks[0], ScheduledChunk { seq: 2, start: 0, len: 13, samples: true }, "the whole prompt is computed");
    assert_eq!(s.get(2).unwrap().cached_tokens(), 0);
    s.commit(&plan, &[]);
    s.remove(2);
    s.add(Sequence::new(3, base.clone(), 0), 20).unwrap();
    let plan = s.schedule();
    assert_eq!(plan.chunks[0].start, 12);
    assert_eq!(s.get(3).unwrap().cached_tokens(), 12);
}

#[test]
fn a_shared_prefix_skips_prefill_of_its_full_pages() {
    let mut s = sched(32, 4, 64, 8, 8);
    let base: Vec<u32> = (100..113).collect(); // 13 tokens: 3 full pages
    s.add(Sequence::new(1, base.clone(), 0), 20).unwrap();
    let first = run_to(&mut s, 1, 3);
    // Same 12-token prefix (a hit ending at a page boundary inside the prompt), new tail.
    let mut other = base[..12].to_vec();
    other.extend([7, 8]);
    s.add(Sequence::new(2, other.clone(), 0), 20).unwrap();
    let plan = s.schedule();
    assert_eq!(plan.chunks[0], ScheduledChunk { seq: 2, start: 12, len: 2, samples: true });
    assert_eq!(s.stats().prefix_hit_tokens, 12);
    s.commit(&plan, &[(2, 5)]);
    s.remove(2);
    // The whole prompt cached (12 tokens = 3 full pages): the last page is recomputed so the
    // last token yields logits; output unchanged.
    s.add(Sequence::new(3, base.clone(), 0), 20).unwrap();
    let plan = s.schedule();
    assert_eq!(plan.chunks[0].start, 12, "13 tokens: 3 cached pages, the last token computed");
    s.commit(&plan, &[]);
    s.remove(3);
    let mut again = sched(32, 4, 64, 8, 8);
    again.add(Sequence::new(1, base.clone(), 0), 20).unwrap();
    assert_eq!(run_to(&mut again, 1, 3), first);
    let exact: Vec<u32> = base[..12].to_vec();
    s.add(Sequence::new(4, exact, 0), 20).unwrap();
    let plan = s.schedule();
    assert_eq!(plan.chunks[0], ScheduledChunk { seq: 4, start: 8, len: 4, samples: true }, "entirely cached prompt");
}

#[test]
fn different_salts_never_share_and_outputs_match_without_caching() {
    let mut s = sched(32, 4, 64, 8, 8);
    let prompt: Vec<u32> = (0..17).collect();
    s.add(Sequence::new(1, prompt.clone(), 0).with_salt(1), 24).unwrap();
    let a = run_to(&mut s, 1, 5);
    s.add(Sequence::new(2, prompt.clone(), 0).with_salt(2), 24).unwrap();
    let plan = s.schedule();
    assert_eq!(plan.chunks[0].start, 0, "another salt gets no hit");
    s.commit(&plan, &[]);
    s.remove(2);
    s.add(Sequence::new(3, prompt.clone(), 0).with_salt(1), 24).unwrap();
    let b = run_to(&mut s, 3, 5);
    assert_eq!(a, b);
    assert_eq!(s.stats().prefix_hit_tokens, 16);
    let mut off = Scheduler::new(
        SchedulerConfig { prefix_caching: false, ..SchedulerConfig::default() },
        BlockAllocator::new(32, 4).unwrap(),
    )
    .unwrap();
    off.add(Sequence::new(1, prompt.clone(), 0).with_salt(1), 24).unwrap();
    assert_eq!(run_to(&mut off, 1, 5), a);
    off.add(Sequence::new(2, prompt, 0).with_salt(1), 24).unwrap();
    assert_eq!(off.schedule().chunks[0].start, 0);
    assert_eq!(off.stats().prefix_cached_pages, 0);
}

#[test]
fn cached_pages_are_evicted_under_pressure_and_in_use_pages_never_are() {
    // 6 pages of 4: one sequence caches 4 pages, then others need the space.
    let mut s = sched(6, 4, 64, 8, 8);
    s.add(Sequence::new(1, (0..17).collect(), 0), 20).unwrap();
    run_to(&mut s, 1, 2);
    assert!(s.stats().prefix_cached_pages >= 4);
    s.add(Sequence::new(2, (50..70).collect(), 0), 24).unwrap();
    let out = run_to(&mut s, 2, 3);
    assert_eq!(out.len(), 3);
    assert!(s.stats().prefix_evictions > 0);
    assert_eq!(s.stats().pages_used, 0);
}

#[test]
fn a_light_tenant_is_served_promptly_beside_a_flooding_one() {
    // One running sequence at a time; tenant 1 queues 50 long requests, tenant 2 sends one
    // short request at a time.
    let mut s = sched(4096, 16, 4096, 1, 1024);
    for i in 0..50 {
        s.add(Sequence::new(i, (0..200).collect(), 0).with_tenant(1), 210).unwrap();
    }
    let mut light_waits = Vec::new();
    let mut heavy_done = 0;
    let mut next_light = 1000;
    let mut light_sent_at: Option<usize> = None;
    for step_no in 0..3000 {
        if light_sent_at.is_none() {
            s.add(Sequence::new(next_light, (0..8).collect(), 0).with_tenant(2), 12).unwrap();
            light_sent_at = Some(step_no);
        }
        let plan = s.schedule();
        let sampled: Vec<(SeqId, u32)> = plan.chunks.iter().filter(|c| c.samples).map(|c| (c.seq, 1)).collect();
        s.commit(&plan, &sampled);
        for &(id, _) in &sampled {
            let seq = s.get(id).unwrap();
            let limit = if seq.tenant() == 1 { 4 } else { 2 };
            if seq.output().len() >= limit {
                if id >= 1000 {
                    light_waits.push(step_no - light_sent_at.take().unwrap());
                    next_light += 1;
                } else {
                    heavy_done += 1;
                }
                s.remove(id);
            }
        }
        if heavy_done == 50 {
            break;
        }
    }
    assert_eq!(heavy_done, 50, "the flooding tenant is not starved");
    assert!(light_waits.len() > 10);
    // Each short request waits at most for the one heavy request running when it arrived:
    // 1 prefill step + 4 decode steps, plus its own 2.
    assert!(light_waits.iter().all(|&w| w <= 8), "{light_waits:?}");
    // Without fairness the first short request waits behind all 50 long ones.
    let mut fifo = Scheduler::new(
        SchedulerConfig { max_num_seqs: 1, max_num_batched_tokens: 4096, fair_share: false, ..SchedulerConfig::default() },
        BlockAllocator::new(4096, 16).unwrap(),
    )
    .unwrap();
    for i in 0..50 {
        fifo.add(Sequence::new(i, (0..200).collect(), 0).with_tenant(1), 210).unwrap();
    }
    fifo.add(Sequence::new(1000, (0..8).collect(), 0).with_tenant(2), 12).unwrap();
    let mut steps = 0;
    loop {
        steps += 1;
        let plan = fifo.schedule();
        if plan.chunks.iter().any(|c| c.seq == 1000) {
            break;
        }
        let sampled: Vec<(SeqId, u32)> = plan.chunks.iter().filter(|c| c.samples).map(|c| (c.seq, 1)).collect();
        fifo.commit(&plan, &sampled);
        for &(id, _) in &sampled {
            if fifo.get(id).unwrap().output().len() >= 4 {
                fifo.remove(id);
            }
        }
    }
    assert!(steps > 200, "FIFO makes it wait for all 50 ({steps} steps)");
}

#[test]
fn counters_charge_prompts_once_and_outputs_weighted_and_lift_idle_tenants() {
    let mut s = sched(256, 4, 256, 8, 64);
    s.add(Sequence::new(1, (0..10).collect(), 0).with_tenant(1), 20).unwrap();
    let plan = s.schedule();
    s.commit(&plan, &[(1, 7)]);
    assert_eq!(s.tenant_counter(1), 10.0 + 2.0);
    // Tenant 2 arrives while tenant 1 is active: lifted to tenant 1's counter.
    s.add(Sequence::new(2, (0..3).collect(), 0).with_tenant(2), 8).unwrap();
    assert_eq!(s.tenant_counter(2), 12.0);
    // Priorities come before fairness.
    s.add(Sequence::new(3, (0..3).collect(), 5).with_tenant(1), 8).unwrap();
    let plan = s.schedule();
    let order: Vec<SeqId> = plan.chunks.iter().map(|c| c.seq).collect();
    assert_eq!(order, vec![1, 3, 2]);
}

#[test]
fn a_long_prefill_shares_each_step_with_new_short_prompts() {
    let cfg = SchedulerConfig { max_num_batched_tokens: 64, long_prefill_token_threshold: 16, ..SchedulerConfig::default() };
    let mut s = Scheduler::new(cfg, BlockAllocator::new(512, 4).unwrap()).unwrap();
    s.add(seq(1, 1000, 0), 1004).unwrap();
    // Alone, the long prompt still gets the whole budget (the cap is topped up).
    let p = step(&mut s, 0);
    assert_eq!(p.chunks, vec![ScheduledChunk { seq: 1, start: 0, len: 64, samples: false }]);
    // A short prompt arriving mid-prefill is admitted in the very next step, whole.
    s.add(seq(2, 4, 0), 8).unwrap();
    let p = step(&mut s, 1);
    assert_eq!(p.chunks[0], ScheduledChunk { seq: 1, start: 64, len: 60, samples: false });
    assert_eq!(p.chunks[1], ScheduledChunk { seq: 2, start: 0, len: 4, samples: true });
    assert_eq!(p.num_tokens(), 64);
    // Its decodes keep their place beside the prefill.
    let p = step(&mut s, 2);
    assert!(p.chunks.iter().any(|c| c.seq == 2 && c.len == 1));
    assert_eq!(p.num_tokens(), 64);
    // Without the cap, the long prompt takes every step and the short one waits.
    let cfg = SchedulerConfig { max_num_batched_tokens: 64, ..SchedulerConfig::default() };
    let mut s = Scheduler::new(cfg, BlockAllocator::new(512, 4).unwrap()).unwrap();
    s.add(seq(1, 1000, 0), 1004).unwrap();
    step(&mut s, 0);
    s.add(seq(2, 4, 0), 8).unwrap();
    assert_eq!(step(&mut s, 1).chunks.len(), 1);
}

#[test]
fn admission_computed_hashes_match_what_the_scheduler_computes_and_foreign_ones_are_ignored() {
    let base: Vec<u32> = (100..113).collect(); // 13 tokens: 3 reusable full pages of 4
    let hashes = crate::PromptHashes::of(&base, 4, 7);
    assert_eq!(hashes.hashes.len(), 3);
    // a sequence given the hashes finds the pages one registered without them, and vice versa
    for (first, second) in [(None, Some(hashes.clone())), (Some(hashes.clone()), None)] {
        let mut s = sched(32, 4, 64, 8, 8);
        let with = |id, h: &Option<crate::PromptHashes>| {
            let seq = Sequence::new(id, base.clone(), 0).with_salt(7);
            match h {
                Some(h) => seq.with_prompt_hashes(h.clone()),
                None => seq,
            }
        };
        s.add(with(1, &first), 20).unwrap();
        run_to(&mut s, 1, 3);
        s.add(with(2, &second), 20).unwrap();
        assert_eq!(s.schedule().chunks[0].start, 12);
        assert_eq!(s.get(2).unwrap().cached_tokens(), 12);
    }
    // hashes made for another salt or page size are not used: the scheduler hashes itself
    for foreign in [crate::PromptHashes::of(&base, 4, 8), crate::PromptHashes::of(&base, 2, 7)] {
        let mut s = sched(32, 4, 64, 8, 8);
        s.add(Sequence::new(1, base.clone(), 0).with_salt(7), 20).unwrap();
        run_to(&mut s, 1, 3);
        s.add(Sequence::new(2, base.clone(), 0).with_salt(7).with_prompt_hashes(foreign), 20).unwrap();
        assert_eq!(s.schedule().chunks[0].start, 12);
    }
}

fn pooled(pages: usize, pools: usize, page_size: usize, budget: usize) -> Scheduler {
    let cfg = SchedulerConfig { max_num_batched_tokens: budget, max_num_seqs: 16, max_queued_requests: 16, ..SchedulerConfig::default() };
    Scheduler::with_pools(cfg, BlockAllocator::split(pages, page_size, pools).unwrap()).unwrap()
}

/// Every sequence's pages lie in its pool's id range (pool `i` holds `i * per ..`).
fn assert_pages_in_pools(s: &Scheduler, ids: &[SeqId], per: u32) {
    for &id in ids {
        let Some(seq) = s.get(id) else { continue };
        for &p in seq.block_table() {
            assert_eq!(p / per, seq.pool() as u32, "sequence {id} has page {p} outside pool {}", seq.pool());
        }
    }
}

#[test]
fn pools_spread_sequences_and_keep_each_in_its_own_pages() {
    // 2 pools of 4 pages of 4 tokens.
    let mut s = pooled(8, 2, 4, 64);
    for id in 1..=4 {
        s.add(seq(id, 6, 0), 12).unwrap();
    }
    step(&mut s, 0);
    let pools: Vec<usize> = (1..=4).map(|id| s.get(id).unwrap().pool()).collect();
    assert_eq!(pools, [0, 1, 0, 1], "each admission takes the pool with the most free pages");
    assert_pages_in_pools(&s, &[1, 2, 3, 4], 4);
    assert_eq!(s.pools().iter().map(|p| p.num_used()).collect::<Vec<_>>(), [4, 4]);
    assert_eq!(s.stats().pages_total, 8);
    // Both pools are full; growing past 8 tokens preempts inside the pool that ran out only.
    for n in 1..3 {
        let plan = step(&mut s, n);
        assert!(plan.preempted.is_empty());
    }
    let plan = step(&mut s, 3);
    assert!(!plan.preempted.is_empty(), "9 tokens need a third page");
    for victim in &plan.preempted {
        let pool = s.get(*victim).unwrap().pool();
        assert!(plan.chunks.iter().all(|c| c.seq != *victim), "a preempted sequence does not run");
        assert!(plan.chunks.iter().any(|c| s.get(c.seq).unwrap().pool() == pool), "its pool's other sequence keeps running");
    }
    assert_pages_in_pools(&s, &[1, 2, 3, 4], 4);
}

#[test]
fn a_cached_prefix_draws_its_sequence_to_that_pool() {
    // 2 pools of 8 pages of 4 tokens.
    let mut s = pooled(16, 2, 4, 64);
    let prompt: Vec<u32> = (100..110).collect(); // 2 full pages and a partial one
    s.add(Sequence::new(2, prompt.clone(), 0), 12).unwrap(); // pool 0 (tie)
    s.add(seq(7, 17, 0), 20).unwrap(); // 5 pages: pool 1
    s.add(seq(8, 13, 0), 16).unwrap(); // 4 pages: pool 0 (5 free against 3)
    step(&mut s, 0);
    assert_eq!([2, 7, 8].map(|id| s.get(id).unwrap().pool()), [0, 1, 0]);
    s.remove(2);
    s.remove(7);
    // pool 1 is all free, pool 0 has 4 free pages of which 2 cache the prompt's prefix
    s.add(Sequence::new(3, prompt, 0), 12).unwrap();
    let plan = s.schedule();
    assert_eq!(s.get(3).unwrap().pool(), 0);
    assert_eq!(plan.chunks.iter().find(|c| c.seq == 3).unwrap().start, 8, "two cached pages reused");
    assert_pages_in_pools(&s, &[3, 8], 8);
    // without the prefix, a sequence goes where pages are free
    s.add(seq(9, 3, 0), 4).unwrap();
    s.schedule();
    assert_eq!(s.get(9).unwrap().pool(), 1);
}

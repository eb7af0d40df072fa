//! GPU sampling (kernels/cuda/sampling.cu) against the CPU reference, `mlahost_engine::sampling`:
//! greedy picks and ties, logprobs and top logprobs of the raw rows, penalties, the allowed sets
//! of temperature/top-k/top-p/min-p, grammar allow-sets, and the sampled distribution over a
//! grid of uniforms.
//! Fresh random logits every run (the seed is printed; MLAHOST_TEST_SEED replays one). Passes
//! without doing anything on machines without a CUDA device.

use mlahost_cuda::kernels::sampling::{sample_rows, Masks, SampleBatch, SampleIn, SampleOut, MAX_TOP_LOGPROBS};
use mlahost_cuda::kernels::View;
use mlahost_cuda::{CudaError, DeviceBuffer, Gpu, Kernels};
use mlahost_engine::sampling::{apply_penalties, argmax, log_softmax, sample, top_logprobs, Rng, SamplingParams};
use std::collections::HashSet;
use std::sync::Arc;

/// xorshift64*: the test's own source of random logits.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> Self {
        Self(seed ^ 0x9e37_79b9_7f4a_7c15 | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in [lo, hi).
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

struct Outputs {
    tokens: Vec<i32>,
    logprobs: Vec<f32>,
    top_ids: Vec<i32>,
    top_lps: Vec<f32>,
}

fn run(gpu: &Arc<Gpu>, k: &Kernels, logits: &[f32], vocab: usize, batch: &SampleBatch) -> Outputs {
    let rows = batch.rows();
    assert_eq!(logits.len(), rows * vocab);
    let d_logits = DeviceBuffer::from_slice(gpu, logits).unwrap();
    let work = DeviceBuffer::alloc(gpu, rows * vocab * 4).unwrap();
    let params = DeviceBuffer::from_slice(gpu, &batch.params).unwrap();
    let penalties = DeviceBuffer::from_slice(gpu, &batch.penalties).unwrap();
    let mask_bits = DeviceBuffer::from_slice(gpu, if batch.masks.is_empty() { &[0u32][..] } else { &batch.masks }).unwrap();
    let masked_rows = batch.params.iter().filter(|p| p.mask_row >= 0).count();
    let masks = Masks { bits: View::of(&mask_bits), masked_rows, words: batch.mask_words };
    let tokens = DeviceBuffer::alloc(gpu, rows * 4).unwrap();
    let logprobs = DeviceBuffer::alloc(gpu, rows * 4).unwrap();
    let top_ids = DeviceBuffer::alloc(gpu, rows * MAX_TOP_LOGPROBS * 4).unwrap();
    let top_lps = DeviceBuffer::alloc(gpu, rows * MAX_TOP_LOGPROBS * 4).unwrap();
    for b in [&work, &tokens, &logprobs, &top_ids, &top_lps] {
        b.fill_bytes(0xff).unwrap();
    }
    let out = SampleOut {
        tokens: View::of(&tokens),
        token_logprobs: View::of(&logprobs),
        top_ids: View::of(&top_ids),
        top_logprobs: View::of(&top_lps),
    };
    let input = SampleIn {
        logits: View::of(&d_logits),
        work: View::of(&work),
        rows,
        vocab,
        params: View::of(&params),
        penalties: View::of(&penalties),
        n_penalties: batch.penalties.len(),
    };
    sample_rows(k, &input, &masks, &out).unwrap();
    gpu.synchronize().unwrap();
    let back: Vec<f32> = d_logits.to_vec(rows * vocab).unwrap();
    assert!(back.iter().zip(logits).all(|(a, b)| a.to_bits() == b.to_bits()), "the logits were modified");
    Outputs {
        tokens: tokens.to_vec(rows).unwrap(),
        logprobs: logprobs.to_vec(rows).unwrap(),
        top_ids: top_ids.to_vec(rows * MAX_TOP_LOGPROBS).unwrap(),
        top_lps: top_lps.to_vec(rows * MAX_TOP_LOGPROBS).unwrap(),
    }
}

/// The tokens the engine's `sample` may return with their probabilities: its algorithm, with a
/// full sort in place of selection.
fn allowed(logits: &[f32], p: &SamplingParams) -> Vec<(u32, f64)> {
    if p.temperature == 0.0 || p.top_k == 1 {
        return vec![(argmax(logits), 1.0)];
    }
    let inv_t = 1.0 / p.temperature;
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut cand: Vec<(u32, f32)> = logits.iter().enumerate().map(|(i, &l)| (i as u32, ((l - max) * inv_t).exp())).collect();
    cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if p.top_k > 0 && p.top_k < cand.len() {
        cand.truncate(p.top_k);
    }
    if p.min_p > 0.0 {
        let best = cand.iter().map(|c| c.1).fold(0.0, f32::max);
        cand.retain(|c| c.1 >= p.min_p * best);
    }
    if p.top_p < 1.0 {
        let total: f64 = cand.iter().map(|c| c.1 as f64).sum();
        let target = p.top_p as f64 * total;
        let mut acc = 0.0;
        if let Some(i) = cand.iter().position(|c| {
            acc += c.1 as f64;
            acc >= target
        }) {
            cand.truncate(i + 1);
        }
    }
    let total: f64 = cand.iter().map(|c| c.1 as f64).sum();
    cand.iter().map(|c| (c.0, c.1 as f64 / total)).collect()
}

fn penalized(row: &[f32], prompt: &[u32], output: &[u32], p: &SamplingParams) -> Vec<f32> {
    let mut row = row.to_vec();
    apply_penalties(&mut row, prompt, output, p);
    row
}

fn check_logprobs(what: &str, row: &[f32], i: usize, n: usize, o: &Outputs) {
    let lp = log_softmax(row);
    let t = o.tokens[i] as usize;
    assert!(o.logprobs[i] == lp[t] || (o.logprobs[i] - lp[t]).abs() <= 1e-4, "{what} row {i}: logprob {} vs CPU {}", o.logprobs[i], lp[t]);
    let cpu = top_logprobs(&lp, n);
    let ids = &o.top_ids[i * MAX_TOP_LOGPROBS..][..MAX_TOP_LOGPROBS];
    let lps = &o.top_lps[i * MAX_TOP_LOGPROBS..][..MAX_TOP_LOGPROBS];
    for (j, &(id, l)) in cpu.iter().enumerate() {
        assert_eq!(ids[j], id as i32, "{what} row {i}: top id {j} (GPU {:?}, CPU {cpu:?})", &ids[..n]);
        assert!(lps[j] == l || (lps[j] - l).abs() <= 1e-4, "{what} row {i}: top logprob {j}: {} vs CPU {l}", lps[j]);
    }
    for (j, &id) in ids.iter().enumerate().skip(cpu.len()) {
        assert_eq!(id, -1, "{what} row {i}: slot {j} past the {} asked was written", cpu.len());
    }
}

/// Greedy equals argmax exactly on a large vocabulary; logprobs and the top 0..=20.
fn greedy_and_logprobs(gpu: &Arc<Gpu>, k: &Kernels, rng: &mut XorShift) {
    let (rows, vocab) = (64, 102_400);
    let mut logits: Vec<f32> = (0..rows * vocab).map(|_| rng.range(-6.0, 6.0) + rng.range(-6.0, 6.0)).collect();
    for r in (0..rows).step_by(4) {
        // A tie for the best, before or after it.
        let row = &mut logits[r * vocab..][..vocab];
        let best = argmax(row) as usize;
        row[rng.below(vocab)] = row[best];
    }
    let mut batch = SampleBatch::new();
    let greedy = SamplingParams { temperature: 0.0, ..Default::default() };
    let mut host_rng = Rng::seeded(1);
    for r in 0..rows {
        batch.push_row(&greedy, &[], &[], r % (MAX_TOP_LOGPROBS + 1), &mut host_rng, None).unwrap();
    }
    let o = run(gpu, k, &logits, vocab, &batch);
    for r in 0..rows {
        let row = &logits[r * vocab..][..vocab];
        assert_eq!(o.tokens[r], argmax(row) as i32, "greedy row {r}");
        check_logprobs("greedy", row, r, r % (MAX_TOP_LOGPROBS + 1), &o);
    }
}

/// Ties, a NaN, all -inf, a tiny vocabulary; greedy and sampled.
fn ties_and_non_finite(gpu: &Arc<Gpu>, k: &Kernels) {
    let (ninf, nan) = (f32::NEG_INFINITY, f32::NAN);
    let rows: [[f32; 7]; 4] = [[1.0; 7], [0.0, 5.0, 2.0, 5.0, 5.0, 1.0, 0.0], [ninf; 7], [0.0, 1.0, nan, 2.0, 3.0, ninf, 3.0]];
    let logits: Vec<f32> = rows.iter().flatten().copied().collect();
    let mut host_rng = Rng::seeded(2);
    for p in [
        SamplingParams { temperature: 0.0, ..Default::default() },
        SamplingParams { temperature: 1.0, top_k: 3, top_p: 0.9, ..Default::default() },
        SamplingParams { temperature: 0.7, min_p: 0.5, ..Default::default() },
    ] {
        let mut batch = SampleBatch::new();
        for _ in 0..rows.len() {
            batch.push_row(&p, &[], &[], 7, &mut host_rng, None).unwrap();
        }
        let o = run(gpu, k, &logits, 7, &batch);
        for i in [0, 1, 3] {
            // The GPU reads a NaN logit as -inf.
            let row: Vec<f32> = rows[i].iter().map(|&l| if l.is_nan() { ninf } else { l }).collect();
            let ok: Vec<u32> = allowed(&row, &p).iter().map(|a| a.0).collect();
            assert!(ok.contains(&(o.tokens[i] as u32)), "{p:?} row {i}: {} not in {ok:?}", o.tokens[i]);
            check_logprobs("ties", &row, i, 7, &o);
        }
        if p.temperature == 0.0 {
            assert_eq!(&o.tokens[..2], &[0, 1]);
            assert_eq!(o.tokens[3], 4, "NaN counts as -inf, ties go to the lower index");
        }
        // All -inf: token 0, logprobs -inf, top ids in order, and no hang.
        assert_eq!(o.tokens[2], 0);
        assert_eq!(o.logprobs[2], ninf);
        assert_eq!(&o.top_ids[2 * MAX_TOP_LOGPROBS..][..7], &[0, 1, 2, 3, 4, 5, 6]);
        assert!(o.top_lps[2 * MAX_TOP_LOGPROBS..][..7].iter().all(|&l| l == ninf));
    }
}

/// Thousands of equal logits: ties cut by index in top-k and top-p, and more top-logprob
/// candidates than the kernel's shortlist holds.
fn flat_rows(gpu: &Arc<Gpu>, k: &Kernels) {
    let vocab = 5000;
    let mut logits = vec![0.0f32; 2 * vocab];
    logits[vocab..vocab + 2500].fill(1.0);
    let mut host_rng = Rng::seeded(7);
    for p in [
        SamplingParams { temperature: 0.0, ..Default::default() },
        SamplingParams { temperature: 1.0, top_p: 0.5, ..Default::default() },
        SamplingParams { temperature: 1.0, top_k: 3000, top_p: 0.5, ..Default::default() },
        SamplingParams { temperature: 2.0, top_k: 10, ..Default::default() },
    ] {
        let mut batch = SampleBatch::new();
        for r in 0..2 {
            batch.push_row(&p, &[], &[], MAX_TOP_LOGPROBS, &mut host_rng, None).unwrap();
            // Near the top of the CDF (in index order): a cut one tie too late is caught.
            batch.params[r].u = 0.99999;
        }
        let o = run(gpu, k, &logits, vocab, &batch);
        for r in 0..2 {
            let row = &logits[r * vocab..][..vocab];
            let ok: HashSet<u32> = allowed(row, &p).iter().map(|a| a.0).collect();
            assert!(ok.contains(&(o.tokens[r] as u32)), "flat row {r} ({p:?}): {} not among {} allowed", o.tokens[r], ok.len());
            check_logprobs("flat", row, r, MAX_TOP_LOGPROBS, &o);
        }
    }
}

/// Penalties change greedy picks exactly as apply_penalties + argmax; logprobs stay the raw
/// row's; sampled rows stay inside the penalized row's allowed set.
fn penalties(gpu: &Arc<Gpu>, k: &Kernels, rng: &mut XorShift) {
    let (rows, vocab) = (48, 3000);
    let logits: Vec<f32> = (0..rows * vocab).map(|_| rng.range(-1.0, 1.0)).collect();
    let settings = [(0.5, 0.0, 1.0), (0.0, 0.3, 1.0), (0.0, 0.0, 1.5), (0.4, 0.2, 1.3), (-0.5, 0.0, 1.0), (0.0, 0.0, 0.7)];
    let mut seqs = Vec::new();
    for r in 0..rows {
        let row = &logits[r * vocab..][..vocab];
        let top: Vec<u32> = top_logprobs(row, 30).iter().map(|t| t.0).collect();
        let mut prompt: Vec<u32> = (0..40).map(|_| rng.below(vocab) as u32).collect();
        prompt.extend(&top[..3]);
        let output: Vec<u32> = (0..20).map(|_| top[rng.below(top.len())]).collect();
        let (presence, frequency, rep) = settings[r % settings.len()];
        let p = SamplingParams { temperature: 0.0, presence_penalty: presence, frequency_penalty: frequency, repetition_penalty: rep, ..Default::default() };
        seqs.push((prompt, output, p));
    }
    let mut host_rng = Rng::seeded(3);
    let mut batch = SampleBatch::new();
    for (prompt, output, p) in &seqs {
        batch.push_row(p, prompt, output, 5, &mut host_rng, None).unwrap();
    }
    let o = run(gpu, k, &logits, vocab, &batch);
    let mut changed = 0;
    for (r, (prompt, output, p)) in seqs.iter().enumerate() {
        let row = &logits[r * vocab..][..vocab];
        let want = argmax(&penalized(row, prompt, output, p));
        assert_eq!(o.tokens[r], want as i32, "penalized greedy row {r} ({p:?})");
        changed += (want != argmax(row)) as usize;
        check_logprobs("penalties (raw logprobs)", row, r, 5, &o);
    }
    assert!(changed >= rows / 4, "only {changed} of {rows} picks changed: the test is too weak");

    let mut batch = SampleBatch::new();
    let sampled: Vec<SamplingParams> = seqs.iter().map(|s| SamplingParams { temperature: 1.0, top_k: 20, ..s.2.clone() }).collect();
    for ((prompt, output, _), p) in seqs.iter().zip(&sampled) {
        batch.push_row(p, prompt, output, 0, &mut host_rng, None).unwrap();
    }
    let o = run(gpu, k, &logits, vocab, &batch);
    for (r, ((prompt, output, _), p)) in seqs.iter().zip(&sampled).enumerate() {
        let ok: HashSet<u32> = allowed(&penalized(&logits[r * vocab..][..vocab], prompt, output, p), p).iter().map(|a| a.0).collect();
        assert!(ok.contains(&(o.tokens[r] as u32)), "penalized sampled row {r}: {} not allowed", o.tokens[r]);
    }
}

/// Temperature, top-k, top-p and min-p: the sampled token is always inside the CPU's set.
fn allowed_sets(gpu: &Arc<Gpu>, k: &Kernels, rng: &mut XorShift) {
    let (rows, vocab) = (300, 5000);
    let logits: Vec<f32> = (0..rows * vocab).map(|_| rng.range(0.0, 8.0) * rng.unit()).collect();
    let mut params = Vec::new();
    for _ in 0..rows {
        params.push(SamplingParams {
            temperature: [0.3, 0.7, 1.0, 1.6][rng.below(4)],
            top_k: [0, 0, 1, 5, 50, 4999, 5000, 9000][rng.below(8)],
            top_p: [1.0, 1.0, 0.95, 0.8, 0.5, 0.1][rng.below(6)],
            min_p: [0.0, 0.0, 0.01, 0.1, 0.5][rng.below(5)],
            ..Default::default()
        });
    }
    // The reference is the engine's: whatever `sample` draws is inside it.
    let mut cpu_rng = Rng::seeded(4);
    for (r, p) in params.iter().enumerate().take(12) {
        let row = &logits[r * vocab..][..vocab];
        let ok: HashSet<u32> = allowed(row, p).iter().map(|a| a.0).collect();
        assert!((0..300).all(|_| ok.contains(&sample(row, p, &mut cpu_rng))), "the test's reference disagrees with sample() ({p:?})");
    }
    let mut host_rng = Rng::seeded(5);
    let mut batch = SampleBatch::new();
    for p in &params {
        batch.push_row(p, &[], &[], 0, &mut host_rng, None).unwrap();
    }
    let o = run(gpu, k, &logits, vocab, &batch);
    for (r, p) in params.iter().enumerate() {
        let set = allowed(&logits[r * vocab..][..vocab], p);
        assert!(set.iter().any(|a| a.0 as i32 == o.tokens[r]), "row {r} ({p:?}): {} outside {} allowed", o.tokens[r], set.len());
    }
}

/// Grammar allow-sets at DeepSeek-V3's vocabulary: greedy picks the best allowed token of the
/// penalized row, sampling stays inside the CPU's allowed set of the masked row, logprobs stay
/// those of the raw row, and an unmasked row of the same batch is unaffected.
fn masks(gpu: &Arc<Gpu>, k: &Kernels, rng: &mut XorShift) {
    let (rows, vocab) = (40usize, 129_280usize);
    let words = vocab.div_ceil(64);
    let logits: Vec<f32> = (0..rows * vocab).map(|_| rng.range(-6.0, 6.0)).collect();
    let mut cases = Vec::new();
    for r in 0..rows {
        let mut bits = vec![0u64; words];
        let density = [16, 1000, vocab][r % 3];
        for id in 0..vocab {
            if rng.below(density) == 0 {
                bits[id / 64] |= 1 << (id % 64);
            }
        }
        let only = rng.below(vocab);
        bits[only / 64] |= 1 << (only % 64); // never empty
        let mask = (r % 5 != 4).then_some(bits);
        let p = SamplingParams {
            temperature: if r % 2 == 0 { 0.0 } else { 1.0 },
            top_p: 0.9,
            repetition_penalty: if r % 4 == 1 { 1.3 } else { 1.0 },
            ..Default::default()
        };
        let prompt: Vec<u32> = (0..30).map(|_| rng.below(vocab) as u32).collect();
        cases.push((mask, p, prompt));
    }
    let mut host_rng = Rng::seeded(7);
    let mut batch = SampleBatch::new();
    for (mask, p, prompt) in &cases {
        batch.push_row(p, prompt, &[], 3, &mut host_rng, mask.as_deref()).unwrap();
    }
    let o = run(gpu, k, &logits, vocab, &batch);
    for (r, (mask, p, prompt)) in cases.iter().enumerate() {
        let raw = &logits[r * vocab..][..vocab];
        let mut row = raw.to_vec();
        if let Some(bits) = mask {
            for (i, l) in row.iter_mut().enumerate() {
                if bits[i / 64] >> (i % 64) & 1 == 0 {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
        let row = penalized(&row, prompt, &[], p);
        let ok: HashSet<u32> = allowed(&row, p).iter().map(|a| a.0).collect();
        assert!(ok.contains(&(o.tokens[r] as u32)), "masked row {r} ({p:?}): {} outside the CPU's {} allowed", o.tokens[r], ok.len());
        if p.temperature == 0.0 {
            assert_eq!(o.tokens[r], argmax(&row) as i32, "masked greedy row {r}");
        }
        check_logprobs("masked (raw logprobs)", raw, r, 3, &o);
    }
}

/// With u = (i + 0.5) / n over n rows of one 16-token row, the token frequencies are the CPU's
/// probabilities.
fn distribution(gpu: &Arc<Gpu>, k: &Kernels, rng: &mut XorShift) {
    let (n, vocab) = (20_000, 16);
    let row: Vec<f32> = (0..vocab).map(|_| rng.range(-2.0, 2.0)).collect();
    let cases: [(SamplingParams, &[u32], &[u32]); 5] = [
        (SamplingParams { temperature: 1.5, ..Default::default() }, &[], &[]),
        (SamplingParams { temperature: 0.8, top_k: 10, top_p: 0.9, min_p: 0.02, ..Default::default() }, &[], &[]),
        (SamplingParams { temperature: 1.0, top_p: 0.6, ..Default::default() }, &[], &[]),
        (SamplingParams { temperature: 0.5, top_k: 4, ..Default::default() }, &[], &[]),
        (
            SamplingParams { temperature: 1.0, min_p: 0.1, presence_penalty: 0.5, repetition_penalty: 1.3, ..Default::default() },
            &[1, 2, 3],
            &[3, 3, 5],
        ),
    ];
    let mut host_rng = Rng::seeded(6);
    for (p, prompt, output) in &cases {
        let mut batch = SampleBatch::new();
        for i in 0..n {
            batch.push_row(p, prompt, output, 0, &mut host_rng, None).unwrap();
            batch.params[i].u = (i as f32 + 0.5) / n as f32;
        }
        let logits: Vec<f32> = (0..n).flat_map(|_| row.iter().copied()).collect();
        let o = run(gpu, k, &logits, vocab, &batch);
        let want = allowed(&penalized(&row, prompt, output, p), p);
        let mut counts = vec![0usize; vocab];
        for &t in &o.tokens {
            assert!((0..vocab as i32).contains(&t), "{p:?}: token {t}");
            counts[t as usize] += 1;
        }
        for (t, &c) in counts.iter().enumerate() {
            let expected = want.iter().find(|a| a.0 as usize == t).map_or(0.0, |a| a.1);
            let got = c as f64 / n as f64;
            assert!((got - expected).abs() <= 0.01, "{p:?}: token {t} drawn {got}, CPU probability {expected}");
            assert!(c == 0 || expected > 0.0, "{p:?}: token {t} is outside the allowed set");
        }
    }
}

#[test]
fn gpu_sampling_matches_the_cpu() {
    let gpu = match Gpu::open(0) {
        Ok(g) => g,
        Err(CudaError::Unavailable(why)) => {
            println!("skipped: no CUDA device ({why})");
            return;
        }
        Err(e) => panic!("opening the GPU: {e}"),
    };
    let k = Kernels::load(&gpu).expect("compiling the kernels");
    let seed = mlahost_tests::fresh_seed();
    println!("seed {seed}");
    let mut rng = XorShift::new(seed);
    greedy_and_logprobs(&gpu, &k, &mut rng);
    ties_and_non_finite(&gpu, &k);
    flat_rows(&gpu, &k);
    penalties(&gpu, &k, &mut rng);
    allowed_sets(&gpu, &k, &mut rng);
    masks(&gpu, &k, &mut rng);
    distribution(&gpu, &k, &mut rng);
}

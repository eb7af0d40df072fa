//! Each kernel against a naive CPU reference (f64 accumulation over the same bf16-rounded
//! inputs) on fresh random data: ragged lengths including 1 and page boundaries, page sizes 16
//! and 64, shuffled physical pages.

use super::{bf16s, failed, v, from_bf16, max_abs, rel_err, round_bf16, Check, Rng};
use mlahost_cuda::blas::{Blas, Dtype, Linear, Operand};
use mlahost_cuda::gpu::DeviceBuffer;
use mlahost_cuda::kernels::decode::{self, plan_splits, DecodeIo, DecodeKernel, DecodeShape, DecodeTarget, GenericIo, GenericShape, SplitPlan};
use mlahost_cuda::kernels::layers::{self, cache_entry_bytes, CacheWrite, RmsNorm, RopeArgs, RopeQuery};
use mlahost_cuda::module::Kernels;
use mlahost_cuda::Result;
use mlahost_engine::kv_cache_dtype::{decode_latent, encode_latent};
use mlahost_engine::KvCacheDtype;


/// All kernel checks; `seed` makes the run reproducible.
pub fn run_all(k: &Kernels, blas: &Blas, seed: u64) -> Result<Vec<Check>> {
    let mut rng = Rng::new(seed);
    let mut out = heuristic_rows(k, &mut rng, false);
    out.extend(fp8_cache_decode(k, &mut rng));
    let ragged = RAGGED;
    let mut one = |name: &str, r: Result<Check>| out.push(r.unwrap_or_else(|e| failed(name, e)));
    // kernels the heuristic does not pick on this GPU, over forced chunks (1-token last splits)
    let mut forced = vec![(DecodeKernel::MmaR16, 16usize, 64usize, 128usize), (DecodeKernel::MmaR16, 128, 16, 256), (DecodeKernel::MmaR16S2, 16, 16, 1024)];
    if k.gpu().is_hopper() {
        // the mma kernel that Hopper's heuristic replaced, at page 64; the wgmma one with one tile
        // per CTA (warpgroup 1 idle), odd tile counts, and 128 heads over 8 row tiles at page 16;
        // the 64-row one with one tile per CTA and with 3 (its second copy staggered)
        forced.extend([
            (DecodeKernel::MmaR16S2, 16, 64, 128),
            (DecodeKernel::WgmmaT16, 16, 64, 64),
            (DecodeKernel::WgmmaT16, 16, 64, 192),
            (DecodeKernel::WgmmaT16, 128, 16, 1024),
            (DecodeKernel::WgmmaR64, 128, 64, 64),
            (DecodeKernel::WgmmaR64, 128, 16, 192),
            // the ping-pong kernel: one tile per CTA (warpgroup 1 only follows), 2 and 3 (odd:
            // warpgroup 0 owns the last), and whole sequences (up to 65 tiles, both stages refilled)
            (DecodeKernel::WgmmaPingPong, 128, 64, 64),
            (DecodeKernel::WgmmaPingPong, 128, 16, 128),
            (DecodeKernel::WgmmaPingPong, 128, 64, 192),
            (DecodeKernel::WgmmaPingPong, 128, 16, 4160),
        ]);
    }
    for (kernel, heads, page, chunk) in forced {
        one("mla_decode forced", fast_attention(k, &mut rng, heads, 1, page, &ragged, Plan::Fixed { kernel, chunk }, false));
    }

    if k.gpu().is_hopper() {
        // the combine on split arrivals: one long sequence, ragged ones with a single-split one,
        // and two queries per sequence (r64: four 16-row groups per CTA)
        // (kernel, heads, q_len, page, chunk, lengths)
        type Case = (DecodeKernel, usize, usize, usize, usize, &'static [usize]);
        let arrivals: [Case; 7] = [
            (DecodeKernel::WgmmaT16, 16, 1, 64, 64, &[4096]),
            (DecodeKernel::WgmmaT16, 16, 1, 16, 256, &[1, 700, 2000]),
            (DecodeKernel::WgmmaT16, 16, 2, 64, 128, &[2, 1000, 1500]),
            (DecodeKernel::WgmmaR64, 128, 1, 64, 64, &[4096]),
            (DecodeKernel::WgmmaR64, 128, 2, 16, 128, &[300, 1000]),
            (DecodeKernel::WgmmaPingPong, 128, 1, 64, 256, &[4096]),
            (DecodeKernel::WgmmaPingPong, 128, 2, 16, 320, &[300, 1000]),
        ];
        for (kernel, heads, q_len, page, chunk, lens) in arrivals {
            one("mla_decode arrivals", fast_attention(k, &mut rng, heads, q_len, page, lens, Plan::Fixed { kernel, chunk }, false));
        }
    }
    one("mla_decode prefill", fast_attention(k, &mut rng, 16, 37, 64, &[37, 100, 1000], Plan::Single, false));
    one("mla_decode prefill", fast_attention(k, &mut rng, 128, 19, 16, &[19, 64, 300], Plan::Single, false));
    one("mla_decode prefill fp8", fast_attention(k, &mut rng, 16, 37, 64, &[37, 100, 1000], Plan::Single, true));
    for &(kv_lora, rope) in &[(64usize, 16usize), (128, 32), (512, 64)] {
        for &fp8 in &[false, true] {
            for &page in &[16usize, 64] {
                one("mla_attention_generic", generic_attention(k, &mut rng, kv_lora, rope, page, fp8));
            }
            one("latent_cache_write", cache_write(k, &mut rng, kv_lora, rope, fp8));
        }
    }
    match norm_rope_act(k, &mut rng) {
        Ok(v) => out.extend(v),
        Err(e) => out.push(failed("norm/rope/act", e)),
    }
    out.extend(crate::kernels_moe::run_all(k, &mut rng));
    out.extend(crate::kernels_stream::run_all(k, &mut rng));
    out.extend(crate::kernels_absorb::run_all(k, &mut rng));
    out.extend(crate::kernels_router::run_all(k, &mut rng));
    out.push(gemm(blas, k, &mut rng).unwrap_or_else(|e| failed("gemm", e)));
    out.extend(super::fp8::run_all(k, &mut rng));
    Ok(out)
}

/// Ragged context lengths: 1, a page edge on either side, two pages and a bit, long.
const RAGGED: [usize; 7] = [1, 63, 64, 65, 129, 700, 4097];

/// The heuristic's decode kernel at 16 and 128 heads, one and two queries, pages 64 and 16.
fn heuristic_rows(k: &Kernels, rng: &mut Rng, fp8: bool) -> Vec<Check> {
    let name = if fp8 { "mla_decode fp8" } else { "mla_decode" };
    let mut out = Vec::new();
    for &page in &[64usize, 16] {
        for &(heads, q_len) in &[(16usize, 1usize), (128, 1), (16, 2), (128, 2)] {
            let lens: Vec<usize> = RAGGED.iter().map(|&l| l.max(q_len)).collect();
            out.push(fast_attention(k, rng, heads, q_len, page, &lens, Plan::Heuristic, fp8).unwrap_or_else(|e| failed(name, e)));
        }
    }
    out
}

/// The decode kernels over an fp8 cache: the heuristic's choice at 16 and 128 heads, one and two
/// queries, pages 64 and 16; on Hopper the fp8 wgmma kernels with one tile per CTA (only the
/// prologue's expansion), three, and long splits, two queries per sequence (64 rows), and the
/// combine on split arrivals. Also run by `gpu-check --fp8-only`.
pub fn fp8_cache_decode(k: &Kernels, rng: &mut Rng) -> Vec<Check> {
    let mut out = heuristic_rows(k, rng, true);
    let mut one = |name: &str, r: Result<Check>| out.push(r.unwrap_or_else(|e| failed(name, e)));
    let ragged = RAGGED;
    if k.gpu().is_hopper() {
        for (heads, q_len, page, chunk, lens) in [
            (128usize, 1usize, 64usize, 64usize, &ragged[..]),
            (128, 1, 16, 192, &ragged[..]),
            (128, 2, 64, 1024, &ragged[..]),
            (128, 1, 64, 64, &[4096][..]),
            (64, 2, 16, 128, &[300, 1000][..]),
        ] {
            let lens: Vec<usize> = lens.iter().map(|&l| l.max(q_len)).collect();
            for kernel in [
                DecodeKernel::Fp8WgmmaR64,
                DecodeKernel::Fp8WgmmaR64Overlap,
                DecodeKernel::Fp8WgmmaPingPong,
                DecodeKernel::Fp8F8MmaR64,
                DecodeKernel::Fp8F8MmaR64Cp,
                DecodeKernel::Fp8F8MmaR64One,
                DecodeKernel::Fp8F8MmaPingPong,
            ] {
                one("mla_decode fp8 forced", fast_attention(k, rng, heads, q_len, page, &lens, Plan::Fixed { kernel, chunk }, true));
            }
        }
        // the 16-row fp8 wgmma kernel (not chosen yet): one tile per CTA (both warpgroups expand
        // it), three (warpgroup 1's first tile staggered), long splits, one long sequence
        for (page, chunk, lens) in [(64usize, 64usize, &ragged[..]), (16, 192, &ragged[..]), (64, 1024, &ragged[..]), (64, 64, &[4096][..])] {
            let plan = Plan::Fixed { kernel: DecodeKernel::Fp8WgmmaT16, chunk };
            one("mla_decode fp8 forced", fast_attention(k, rng, 16, 1, page, lens, plan, true));
        }
    }
    out
}

/// The FP8-math decode kernel's bound on the output's relative L2 error against the exact
/// attention over the decoded fp8 cache: it rounds Q and P to e4m3 (3 mantissa bits, up to 2^-4
/// relative per element), which random latents turn into 1.3-3.3% of the output (H100); a wrong
/// layout or scale gives errors of order 1. Its lse error (Q's rounding moves every logit, up to
/// 0.082 here, as much as the fp8 cache itself moves it against a bf16 cache: 0.07-0.12) is
/// bounded at twice this.
const F8_MATH_TOLERANCE: f64 = 8e-2;

/// Pages for `lens` (shuffled physical ids) as a `[B, max_pages]` table (-1 past each sequence).
fn page_tables(rng: &mut Rng, lens: &[usize], page: usize) -> (Vec<i32>, usize, usize) {
    let max_pages = lens.iter().map(|l| l.div_ceil(page)).max().unwrap_or(1).max(1);
    let total: usize = lens.iter().map(|l| l.div_ceil(page)).sum::<usize>() + 3;
    let mut ids: Vec<i32> = (0..total as i32).collect();
    rng.shuffle(&mut ids);
    let mut table = vec![-1i32; lens.len() * max_pages];
    let mut next = 0;
    for (b, l) in lens.iter().enumerate() {
        for p in 0..l.div_ceil(page) {
            table[b * max_pages + p] = ids[next];
            next += 1;
        }
    }
    (table, max_pages, total)
}

/// softmax-weighted latent sum over positions 0..=pos of one row; returns (out, lse).
fn attend_ref(q: &[f32], latent: impl Fn(usize) -> Vec<f32>, pos: usize, kv_lora: usize, scale: f32) -> (Vec<f32>, f64) {
    let rows: Vec<Vec<f32>> = (0..=pos).map(latent).collect();
    let s: Vec<f64> = rows.iter().map(|r| r.iter().zip(q).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>() * scale as f64).collect();
    let m = s.iter().copied().fold(f64::MIN, f64::max);
    let sum: f64 = s.iter().map(|x| (x - m).exp()).sum();
    let mut out = vec![0f64; kv_lora];
    for (r, x) in rows.iter().zip(&s) {
        let p = (x - m).exp() / sum;
        for (o, c) in out.iter_mut().zip(r) {
            *o += p * *c as f64;
        }
    }
    (out.into_iter().map(|x| x as f32).collect(), m + sum.ln())
}

/// How a check splits the context: one split per sequence, the heuristic, or a fixed plan.
#[derive(Debug, Clone, Copy)]
enum Plan {
    Single,
    Heuristic,
    Fixed { kernel: DecodeKernel, chunk: usize },
}

#[allow(clippy::too_many_arguments)]
fn fast_attention(k: &Kernels, rng: &mut Rng, heads: usize, q_len: usize, page: usize, lens: &[usize], how: Plan, fp8: bool) -> Result<Check> {
    let gpu = k.gpu();
    let d = 576;
    let b = lens.len();
    let (table, max_pages, pages) = page_tables(rng, lens, page);
    // fp8: `cache` holds the decoded entries (the kernel's exact input), `bf16_cache` what a bf16
    // cache would have stored of the same latents (to state the fp8 cache's accuracy against it)
    let (cache_bytes, cache, bf16_cache) = if fp8 {
        let one_scale = plan_kernel_wants_one_scale(how);
        let (bytes, decoded, original) = random_cache(rng, pages * page, 512, 64, true, one_scale);
        (bytes, decoded, round_bf16(&original))
    } else {
        let c = round_bf16(&rng.vec(pages * page * d, 1.0));
        (bf16s(&c).iter().flat_map(|x| x.to_le_bytes()).collect(), c, Vec::new())
    };
    let q = round_bf16(&rng.vec(b * q_len * heads * d, 2.0));
    let scale = 1.0 / (192f32).sqrt();
    let plan = match how {
        Plan::Single => SplitPlan::single(DecodeKernel::choose(q_len, heads, gpu.is_hopper(), fp8), lens),
        Plan::Heuristic => plan_splits(lens, q_len, heads, &DecodeTarget::of(gpu), fp8),
        Plan::Fixed { kernel, chunk } => {
            let longest = lens.iter().copied().max().unwrap_or(1);
            SplitPlan::with_chunk(kernel, chunk, longest.div_ceil(chunk), lens)
        }
    };
    let rows = q_len * heads;
    let d_q = DeviceBuffer::from_slice(gpu, &bf16s(&q))?;
    let d_cache = DeviceBuffer::from_slice(gpu, &cache_bytes)?;
    let d_table = DeviceBuffer::from_slice(gpu, &table)?;
    let d_lens = DeviceBuffer::from_slice(gpu, &lens.iter().map(|&l| l as i32).collect::<Vec<_>>())?;
    let d_splits = DeviceBuffer::from_slice(gpu, &plan.offsets)?;
    let d_out = DeviceBuffer::alloc(gpu, b * rows * 512 * 2)?;
    let d_lse = DeviceBuffer::alloc(gpu, b * rows * 4)?;
    let slots = plan.total_splits().max(1);
    let d_po = DeviceBuffer::alloc(gpu, slots * rows * 512 * 2)?;
    let d_pl = DeviceBuffer::alloc(gpu, slots * rows * 4)?;
    let words = decode::sync_words(b, rows);
    let d_sync = DeviceBuffer::from_slice(gpu, &vec![0i32; words])?;
    let mut io = DecodeIo {
        q: v(&d_q),
        cache: v(&d_cache),
        block_table: v(&d_table),
        seq_lens: v(&d_lens),
        split_offsets: v(&d_splits),
        out: v(&d_out),
        lse: v(&d_lse),
        part_o: v(&d_po),
        part_lse: v(&d_pl),
        sync: v(&d_sync),
        arrivals: None,
    };
    let shape = DecodeShape { batch: b, q_len, heads, page_size: page, max_pages, cache_pages: pages, scale };
    // with the combine waiting for the decode grid, then twice on split arrivals (the second run
    // checks that the first left its words zero)
    let mut runs = Vec::new();
    for arrivals in [false, true, true] {
        io.arrivals = Some(arrivals);
        d_out.fill_bytes(0xff)?;
        d_lse.fill_bytes(0xff)?;
        decode::mla_decode(k, &io, &shape, &plan)?;
        runs.push((from_bf16(&d_out.to_vec::<u16>(b * rows * 512)?), d_lse.to_vec::<f32>(b * rows)?));
    }
    // words left non-zero would start the next launch's combine early
    let left = d_sync.to_vec::<i32>(words)?.iter().filter(|&&w| w != 0).count();
    let reference = |cache: &[f32]| {
        let (mut want, mut want_lse) = (Vec::new(), Vec::new());
        for (bi, &len) in lens.iter().enumerate() {
            let latent = |j: usize| {
                let slot = table[bi * max_pages + j / page] as usize * page + j % page;
                cache[slot * d..(slot + 1) * d].to_vec()
            };
            for i in 0..q_len {
                for h in 0..heads {
                    let qr = &q[((bi * q_len + i) * heads + h) * d..][..d];
                    let (o, l) = attend_ref(qr, latent, len - q_len + i, 512, scale);
                    want.extend(o);
                    want_lse.push(l as f32);
                }
            }
        }
        (want, want_lse)
    };
    let (want, want_lse) = reference(&cache);
    let against_bf16 = if fp8 {
        let (want16, lse16) = reference(&bf16_cache);
        format!(", against a bf16 cache of the same latents rel {:.2e} lse {:.2e}", rel_err(&runs[0].0, &want16), max_abs(&runs[0].1, &lse16))
    } else {
        String::new()
    };
    let errs: Vec<(f64, f64)> = runs.iter().map(|(out, lse)| (rel_err(out, &want), max_abs(lse, &want_lse))).collect();
    let (err, lse_err) = errs.iter().fold((0f64, 0f64), |m, e| (m.0.max(e.0), m.1.max(e.1)));
    // words left set would hang or corrupt the next launch's barrier
    // the FP8-math kernel's lse carries Q's e4m3 rounding: counted at half weight (F8_MATH_TOLERANCE)
    let f8_math = plan.kernel.fp8_math();
    let lse_weight = if f8_math { 0.5 } else { 1.0 };
    let error = if left == 0 { err.max(lse_err * lse_weight) } else { f64::INFINITY };
    Ok(Check {
        name: format!("mla_decode {} H{heads} q_len {q_len} page {page}", plan.kernel.name().trim_start_matches("mla_decode_")),
        error,
        tolerance: if f8_math { F8_MATH_TOLERANCE } else { 1e-2 },
        detail: format!(
            "rel {err:.2e}, lse {lse_err:.2e} (after the grid rel {:.2e}; {} rel {:.2e}, {:.2e}; {left} words left set), chunk {} splits {}, lens {lens:?}{against_bf16}",
            errs[0].0,
            // only the wgmma kernels count split arrivals; the others run the same launch again
            if plan.kernel.needs_hopper() { "on arrivals" } else { "repeated" },
            errs[1].0,
            errs[2].0,
            plan.chunk,
            plan.max_splits
        ),
        informational: false,
    })
}

/// Whether a check's forced kernel reads one scale per token (`mla_decode_fp8_f8mma_r64_one`).
fn plan_kernel_wants_one_scale(how: Plan) -> bool {
    matches!(how, Plan::Fixed { kernel: DecodeKernel::Fp8F8MmaR64One, .. })
}

/// Encodes random latents into a cache of `dtype`; returns (bytes, the decoded f32 values, the
/// latents before encoding). `one_scale` (fp8): each 128-channel group of a token gets the
/// token's largest magnitude in its first channel, so the encoder's 4 scales are equal.
fn random_cache(rng: &mut Rng, slots: usize, kv_lora: usize, rope: usize, fp8: bool, one_scale: bool) -> (Vec<u8>, Vec<f32>, Vec<f32>) {
    let d = kv_lora + rope;
    let dtype = if fp8 { KvCacheDtype::Fp8 } else { KvCacheDtype::Bf16 };
    let entry = cache_entry_bytes(kv_lora, rope, fp8);
    let mut bytes = vec![0u8; slots * entry];
    let mut values = vec![0f32; slots * d];
    let mut original = rng.vec(slots * d, 1.0);
    if one_scale {
        for x in original.chunks_mut(d) {
            let amax = x[..kv_lora].iter().fold(0f32, |m, v| m.max(v.abs()));
            x[..kv_lora].chunks_mut(128).for_each(|g| g[0] = amax);
        }
    }
    for s in 0..slots {
        let x = &original[s * d..(s + 1) * d];
        encode_latent(dtype, x, kv_lora, &mut bytes[s * entry..(s + 1) * entry]);
        decode_latent(dtype, &bytes[s * entry..(s + 1) * entry], kv_lora, &mut values[s * d..(s + 1) * d]);
    }
    (bytes, values, original)
}

fn generic_attention(k: &Kernels, rng: &mut Rng, kv_lora: usize, rope: usize, page: usize, fp8: bool) -> Result<Check> {
    let gpu = k.gpu();
    let heads = 3;
    let d = kv_lora + rope;
    // (start, new tokens): a fresh prefill, decodes at and around page boundaries, an extend
    let seqs = [(0usize, 5usize), (page - 1, 1), (page, 1), (2 * page + 1, 3), (0, 1)];
    let lens: Vec<usize> = seqs.iter().map(|(s, n)| s + n).collect();
    let (table, max_pages, pages) = page_tables(rng, &lens, page);
    let (bytes, values, _) = random_cache(rng, pages * page, kv_lora, rope, fp8, false);
    let (mut tok_seq, mut tok_pos) = (Vec::new(), Vec::new());
    for (i, (s, n)) in seqs.iter().enumerate() {
        for p in *s..s + n {
            tok_seq.push(i as i32);
            tok_pos.push(p as i32);
        }
    }
    let t = tok_seq.len();
    let q = round_bf16(&rng.vec(t * heads * d, 2.0));
    let scale = 1.0 / ((kv_lora / 4) as f32).sqrt();
    let d_q = DeviceBuffer::from_slice(gpu, &bf16s(&q))?;
    let d_cache = DeviceBuffer::from_slice(gpu, &bytes)?;
    let d_table = DeviceBuffer::from_slice(gpu, &table)?;
    let d_seq = DeviceBuffer::from_slice(gpu, &tok_seq)?;
    let d_pos = DeviceBuffer::from_slice(gpu, &tok_pos)?;
    let d_out = DeviceBuffer::alloc(gpu, t * heads * kv_lora * 2)?;
    let d_lse = DeviceBuffer::alloc(gpu, t * heads * 4)?;
    d_out.fill_bytes(0xff)?;
    let io = GenericIo {
        q: v(&d_q),
        cache: v(&d_cache),
        block_tables: v(&d_table),
        token_seq: v(&d_seq),
        token_pos: v(&d_pos),
        out: v(&d_out),
        lse: v(&d_lse),
    };
    let shape = GenericShape { tokens: t, seqs: seqs.len(), heads, kv_lora, rope, page_size: page, max_pages, cache_pages: pages, scale, fp8 };
    decode::mla_attention_generic(k, &io, &shape)?;
    let out = from_bf16(&d_out.to_vec::<u16>(t * heads * kv_lora)?);
    let lse = d_lse.to_vec::<f32>(t * heads)?;
    let (mut want, mut want_lse) = (Vec::new(), Vec::new());
    for ti in 0..t {
        let bi = tok_seq[ti] as usize;
        let latent = |j: usize| {
            let slot = table[bi * max_pages + j / page] as usize * page + j % page;
            values[slot * d..(slot + 1) * d].to_vec()
        };
        for h in 0..heads {
            let (o, l) = attend_ref(&q[(ti * heads + h) * d..][..d], latent, tok_pos[ti] as usize, kv_lora, scale);
            want.extend(o);
            want_lse.push(l as f32);
        }
    }
    let err = rel_err(&out, &want).max(max_abs(&lse, &want_lse));
    Ok(Check {
        name: format!("mla_attention_generic {kv_lora}+{rope} {} page {page}", if fp8 { "fp8" } else { "bf16" }),
        error: err,
        tolerance: 1e-2,
        detail: format!("{t} tokens over {} sequences", seqs.len()), informational: false })
}

/// Rotates `x` like the engine's Rope (interleaved pairs).
fn rotate(x: &mut [f32], pos: usize, inv_freq: &[f32], af: f32) {
    for (i, &f) in inv_freq.iter().enumerate() {
        let angle = (pos as f32 * f) as f64;
        let (c, s) = ((angle.cos() as f32) * af, (angle.sin() as f32) * af);
        let (x0, x1) = (x[2 * i], x[2 * i + 1]);
        x[2 * i] = x0 * c - x1 * s;
        x[2 * i + 1] = x1 * c + x0 * s;
    }
}

fn inv_freq(rope: usize) -> Vec<f32> {
    (0..rope / 2).map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / rope as f32)).collect()
}

fn cache_write(k: &Kernels, rng: &mut Rng, kv_lora: usize, rope: usize, fp8: bool) -> Result<Check> {
    let gpu = k.gpu();
    let (d, t, slots, eps, af) = (kv_lora + rope, 40, 97, 1e-6f32, 1.3f32);
    let kv = rng.vec(t * d, 3.0);
    let norm_w: Vec<f32> = (0..kv_lora).map(|_| 1.0 + 0.5 * rng.sym()).collect();
    let pos: Vec<i32> = (0..t).map(|_| rng.below(5000) as i32).collect();
    let mut slot_ids: Vec<i64> = (0..slots as i64).collect();
    rng.shuffle(&mut slot_ids);
    let freqs = inv_freq(rope);
    let dtype = if fp8 { KvCacheDtype::Fp8 } else { KvCacheDtype::Bf16 };
    let entry = cache_entry_bytes(kv_lora, rope, fp8);
    let d_kv = DeviceBuffer::from_slice(gpu, &kv)?;
    let d_w = DeviceBuffer::from_slice(gpu, &norm_w)?;
    let d_pos = DeviceBuffer::from_slice(gpu, &pos)?;
    let d_slots = DeviceBuffer::from_slice(gpu, &slot_ids[..t])?;
    let d_freq = DeviceBuffer::from_slice(gpu, &freqs)?;
    let d_cache = DeviceBuffer::alloc(gpu, slots * entry)?;
    d_cache.fill_bytes(0)?;
    let rope_args = RopeArgs { inv_freq: v(&d_freq), attention_factor: af, rope_dim: rope, interleaved: true };
    layers::latent_cache_write(k, CacheWrite {
        kv: v(&d_kv),
        norm_weight: v(&d_w),
        pos: v(&d_pos),
        slots: v(&d_slots),
        rope: rope_args,
        cache: v(&d_cache),
        cache_slots: slots,
        tokens: t,
        kv_lora,
        eps,
        fp8,
    })?;
    let got = d_cache.to_vec::<u8>(slots * entry)?;
    let (mut got_v, mut want_v) = (Vec::new(), Vec::new());
    let mut scale_err = 0f64;
    for ti in 0..t {
        let mut row = kv[ti * d..(ti + 1) * d].to_vec();
        let (c, pe) = row.split_at_mut(kv_lora);
        let inv = 1.0 / (c.iter().map(|x| x * x).sum::<f32>() / kv_lora as f32 + eps).sqrt();
        c.iter_mut().zip(&norm_w).for_each(|(x, w)| *x = *w * (*x * inv));
        rotate(pe, pos[ti] as usize, &freqs, af);
        let mut want = vec![0u8; entry];
        encode_latent(dtype, &row, kv_lora, &mut want);
        let s = slot_ids[ti] as usize;
        let (mut a, mut b) = (vec![0f32; d], vec![0f32; d]);
        decode_latent(dtype, &got[s * entry..(s + 1) * entry], kv_lora, &mut a);
        decode_latent(dtype, &want, kv_lora, &mut b);
        if fp8 {
            for g in 0..kv_lora.div_ceil(128) {
                let at = kv_lora + 4 * g;
                let f = |x: &[u8]| f32::from_le_bytes([x[at], x[at + 1], x[at + 2], x[at + 3]]) as f64;
                let (gs, ws) = (f(&got[s * entry..]), f(&want));
                scale_err = scale_err.max((gs - ws).abs() / ws.abs().max(1e-30));
            }
        }
        got_v.extend(a);
        want_v.extend(b);
    }
    let err = rel_err(&got_v, &want_v).max(scale_err);
    Ok(Check {
        name: format!("latent_cache_write {kv_lora}+{rope} {}", if fp8 { "fp8" } else { "bf16" }),
        error: err,
        tolerance: if fp8 { 1e-2 } else { 2e-3 },
        detail: format!("{t} tokens into {slots} shuffled slots; scale rel err {scale_err:.1e}"), informational: false })
}

fn norm_rope_act(k: &Kernels, rng: &mut Rng) -> Result<Vec<Check>> {
    let gpu = k.gpu();
    let mut out = Vec::new();
    // rmsnorm with residual, then a gathered final norm
    let (rows, dim, eps) = (33, 300, 1e-6f32);
    let x = rng.vec(rows * dim, 2.0);
    let delta = rng.vec(rows * dim, 1.0);
    let w: Vec<f32> = (0..dim).map(|_| 1.0 + 0.3 * rng.sym()).collect();
    let (d_x, d_delta, d_w) = (DeviceBuffer::from_slice(gpu, &x)?, DeviceBuffer::from_slice(gpu, &delta)?, DeviceBuffer::from_slice(gpu, &w)?);
    let d_out = DeviceBuffer::alloc(gpu, rows * dim * 2)?;
    let d_out32 = DeviceBuffer::alloc(gpu, rows * dim * 4)?;
    let norm = RmsNorm::rows(v(&d_x), v(&d_w), v(&d_out), rows, dim, eps);
    layers::rmsnorm_residual(k, RmsNorm { delta: Some(v(&d_delta)), out_f32: Some(v(&d_out32)), ..norm })?;
    let sum: Vec<f32> = x.iter().zip(&delta).map(|(a, b)| a + b).collect();
    let mut want = Vec::new();
    for r in sum.chunks(dim) {
        let inv = 1.0 / (r.iter().map(|x| x * x).sum::<f32>() / dim as f32 + eps).sqrt();
        want.extend(r.iter().zip(&w).map(|(x, w)| w * (x * inv)));
    }
    let got32 = d_out32.to_vec::<f32>(rows * dim)?;
    let got16 = from_bf16(&d_out.to_vec::<u16>(rows * dim)?);
    let gx = d_x.to_vec::<f32>(rows * dim)?;
    let e = rel_err(&got32, &want).max(rel_err(&gx, &sum));
    out.push(Check { name: "rmsnorm_residual (f32 out, residual)".into(), error: e, tolerance: 1e-5, detail: format!("{rows}x{dim}"), informational: false });
    out.push(Check { name: "rmsnorm_residual (bf16 out)".into(), error: rel_err(&got16, &want), tolerance: 8e-3, detail: format!("{rows}x{dim}"), informational: false });
    let pick: Vec<i32> = vec![5, 0, 32, 17];
    let d_rows = DeviceBuffer::from_slice(gpu, &pick)?;
    let norm = RmsNorm::rows(v(&d_x), v(&d_w), v(&d_out), pick.len(), dim, eps);
    layers::rmsnorm_residual(k, RmsNorm { out_f32: Some(v(&d_out32)), rows: Some((v(&d_rows), rows)), ..norm })?;
    let got = d_out32.to_vec::<f32>(pick.len() * dim)?;
    let want_rows: Vec<f32> = pick.iter().flat_map(|&r| want[r as usize * dim..(r as usize + 1) * dim].to_vec()).collect();
    out.push(Check { name: "rmsnorm gathered rows".into(), error: rel_err(&got, &want_rows), tolerance: 1e-5, detail: format!("rows {pick:?}"), informational: false });
    // rope on queries, written into the absorbed query; the rest of the output stays untouched
    let (t, heads, nope, rope, kv_lora) = (9, 5, 32, 16, 64);
    let (qk, dq) = (nope + rope, kv_lora + rope);
    let q = round_bf16(&rng.vec(t * heads * qk, 1.0));
    let pos: Vec<i32> = (0..t).map(|_| rng.below(100_000) as i32).collect();
    let freqs = inv_freq(rope);
    let (d_q, d_pos, d_f) = (DeviceBuffer::from_slice(gpu, &bf16s(&q))?, DeviceBuffer::from_slice(gpu, &pos)?, DeviceBuffer::from_slice(gpu, &freqs)?);
    let d_o = DeviceBuffer::alloc(gpu, t * heads * dq * 2)?;
    d_o.fill_bytes(0x11)?;
    let args = RopeArgs { inv_freq: v(&d_f), attention_factor: 0.9, rope_dim: rope, interleaved: true };
    layers::rope_query(k, RopeQuery {
        q: v(&d_q),
        out: v(&d_o),
        pos: v(&d_pos),
        rope: args,
        tokens: t,
        heads,
        q_stride: qk,
        rope_offset: nope,
        out_stride: dq,
        out_offset: kv_lora,
    })?;
    let got = d_o.to_vec::<u16>(t * heads * dq)?;
    let (mut g, mut wv, mut untouched) = (Vec::new(), Vec::new(), true);
    for ti in 0..t {
        for h in 0..heads {
            let mut x = q[(ti * heads + h) * qk + nope..][..rope].to_vec();
            rotate(&mut x, pos[ti] as usize, &freqs, 0.9);
            wv.extend(x);
            let row = &got[(ti * heads + h) * dq..][..dq];
            g.extend(from_bf16(&row[kv_lora..]));
            untouched &= row[..kv_lora].iter().all(|&b| b == 0x1111);
        }
    }
    let e = if untouched { rel_err(&g, &wv) } else { f64::INFINITY };
    out.push(Check { name: "rope_query".into(), error: e, tolerance: 8e-3, detail: "positions up to 1e5; latent part left untouched".into(), informational: false });
    // SiLU-and-mul and the embedding
    let (rows, inter) = (13, 200);
    let gu = round_bf16(&rng.vec(rows * 2 * inter, 4.0));
    let d_gu = DeviceBuffer::from_slice(gpu, &bf16s(&gu))?;
    let d_act = DeviceBuffer::alloc(gpu, rows * inter * 2)?;
    layers::silu_mul(k, v(&d_gu), v(&d_act), rows, inter)?;
    let got = from_bf16(&d_act.to_vec::<u16>(rows * inter)?);
    let want: Vec<f32> = gu
        .chunks(2 * inter)
        .flat_map(|r| (0..inter).map(move |i| r[i] / (1.0 + (-r[i]).exp()) * r[inter + i]).collect::<Vec<_>>())
        .collect();
    out.push(Check { name: "silu_mul".into(), error: rel_err(&got, &want), tolerance: 8e-3, detail: format!("{rows}x{inter}"), informational: false });
    let (vocab, dim) = (50, 96);
    let table = round_bf16(&rng.vec(vocab * dim, 1.0));
    let ids: Vec<i32> = (0..20).map(|_| rng.below(vocab) as i32).collect();
    let (d_t, d_ids) = (DeviceBuffer::from_slice(gpu, &bf16s(&table))?, DeviceBuffer::from_slice(gpu, &ids)?);
    let d_x = DeviceBuffer::alloc(gpu, ids.len() * dim * 4)?;
    layers::embedding(k, v(&d_ids), v(&d_t), vocab, v(&d_x), ids.len(), dim)?;
    let got = d_x.to_vec::<f32>(ids.len() * dim)?;
    let want: Vec<f32> = ids.iter().flat_map(|&i| table[i as usize * dim..(i as usize + 1) * dim].to_vec()).collect();
    out.push(Check { name: "embedding".into(), error: max_abs(&got, &want), tolerance: 0.0, detail: format!("{} tokens", ids.len()), informational: false });
    Ok(out)
}

fn gemm(blas: &Blas, k: &Kernels, rng: &mut Rng) -> Result<Check> {
    let gpu = k.gpu();
    let (m, n, kk) = (37, 300, 192);
    let a = round_bf16(&rng.vec(m * kk, 1.0));
    let w = round_bf16(&rng.vec(n * kk, 1.0));
    let c0 = rng.vec(m * n, 1.0);
    let (d_a, d_w, d_c) = (DeviceBuffer::from_slice(gpu, &bf16s(&a))?, DeviceBuffer::from_slice(gpu, &bf16s(&w))?, DeviceBuffer::from_slice(gpu, &c0)?);
    let op = |b: &DeviceBuffer, dtype, ld| Operand { ptr: b.ptr(), dtype, ld };
    blas.linear(Linear { m, n, k: kk, a: op(&d_a, Dtype::Bf16, kk), w: op(&d_w, Dtype::Bf16, kk), c: op(&d_c, Dtype::F32, n), beta: 1.0 })?;
    let got = d_c.to_vec::<f32>(m * n)?;
    let want: Vec<f32> = (0..m * n)
        .map(|i| {
            let (r, c) = (i / n, i % n);
            c0[i] + a[r * kk..][..kk].iter().zip(&w[c * kk..][..kk]).map(|(x, y)| *x as f64 * *y as f64).sum::<f64>() as f32
        })
        .collect();
    Ok(Check { name: "cuBLAS bf16 linear (+= into f32)".into(), error: rel_err(&got, &want), tolerance: 1e-4, detail: format!("{m}x{n}x{kk}"), informational: false })
}

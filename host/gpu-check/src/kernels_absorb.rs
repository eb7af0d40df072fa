//! The absorbed attention's per-head projections (absorb.cu) against f64 references on fresh
//! random data: `absorb_query` (q_nope · W_UK per head, and the rope part rotated as the CPU
//! engine does) and `absorb_value` (o · W_UV^T per head), at 1, 7 and 16 tokens, V2-Lite's and
//! V3's widths, a latent narrower than W_UV's two loads a lane, value widths off the kernel's
//! 16-column tiles, a nope width off the k groups, a part-filled second pass of 8 tokens; both
//! rope layouts, the rope part bit for bit as `rope_query` writes it, and the latent cache write
//! in the same launch byte for byte as `latent_cache_write` writes it (bf16 and fp8 caches). Outputs start as NaN, so every element must be
//! written.

use super::{bf16s, from_bf16, round_bf16, v, Check, Rng};
use mlahost_cuda::gpu::DeviceBuffer;
use mlahost_cuda::kernels::absorb::{self, Heads};
use mlahost_cuda::kernels::layers::{self, CacheWrite, RopeArgs, RopeQuery};
use mlahost_cuda::module::Kernels;
use mlahost_cuda::Result;

/// bf16 outputs: their rounding (2^-8 relative) over the row's largest |value|, with room for
/// the f32 summation order.
const TOL: f64 = 8e-3;

pub(crate) fn run_all(k: &Kernels, rng: &mut Rng) -> Vec<Check> {
    // (tokens, heads, nope, vd, kv_lora, rope, interleaved)
    let cases = [
        (1, 16, 128, 128, 512, 64, true),
        (7, 16, 128, 128, 512, 64, false),
        (16, 16, 128, 128, 512, 64, true),
        (3, 128, 128, 128, 512, 64, true),
        (5, 3, 96, 100, 256, 32, false),
        (16, 2, 128, 40, 64, 16, true),
        (12, 4, 100, 128, 512, 64, false),
        (9, 16, 128, 128, 512, 64, true),
        (16, 2, 128, 40, 64, 32, true),
    ];
    cases
        .into_iter()
        .map(|(t, h, nope, vd, kv_lora, rope, il)| {
            let s = Heads { tokens: t, heads: h, nope, vd, kv_lora };
            one(k, rng, s, rope, il).unwrap_or_else(|e| crate::failed(&format!("absorb {t} tokens x {h} heads"), e))
        })
        .collect()
}

fn one(kern: &Kernels, rng: &mut Rng, s: Heads, rope: usize, interleaved: bool) -> Result<Check> {
    let gpu = kern.gpu();
    let Heads { tokens: t, heads, nope, vd, kv_lora } = s;
    let (qk, d) = (nope + rope, kv_lora + rope);
    let q = round_bf16(&rng.vec(t * heads * qk, 1.0));
    let kv_b = round_bf16(&rng.vec(heads * (nope + vd) * kv_lora, 0.05));
    let o = round_bf16(&rng.vec(t * heads * kv_lora, 1.0));
    let pos: Vec<i32> = (0..t).map(|_| rng.below(40_000) as i32).collect();
    let freqs: Vec<f32> = (0..rope / 2).map(|i| 1.0 / 10000f32.powf(2.0 * i as f32 / rope as f32)).collect();
    let factor = 1.3f32;
    let up = |x: &[f32]| DeviceBuffer::from_slice(gpu, &bf16s(x));
    let (d_q, d_kv_b, d_o) = (up(&q)?, up(&kv_b)?, up(&o)?);
    let (d_pos, d_freq) = (DeviceBuffer::from_slice(gpu, &pos)?, DeviceBuffer::from_slice(gpu, &freqs)?);
    let q_out = DeviceBuffer::alloc(gpu, t * heads * d * 2)?;
    let v_out = DeviceBuffer::alloc(gpu, t * heads * vd * 2)?;
    q_out.fill_bytes(0xff)?;
    v_out.fill_bytes(0xff)?;
    let rope_args = RopeArgs { inv_freq: v(&d_freq), attention_factor: factor, rope_dim: rope, interleaved };
    // the latent cache write in the same launch, against latent_cache_write's bytes (bf16 or fp8
    // cache by the case's token count)
    let (fp8, slots_total, eps) = (t % 2 == 1, 97usize, 1e-6f32);
    let kv = rng.vec(t * d, 1.0);
    let norm_w: Vec<f32> = (0..kv_lora).map(|_| 0.5 + rng.sym().abs()).collect();
    let mut slot_ids: Vec<i64> = (0..slots_total as i64).collect();
    rng.shuffle(&mut slot_ids);
    slot_ids.truncate(t);
    let (d_kv, d_norm, d_slots) = (DeviceBuffer::from_slice(gpu, &kv)?, DeviceBuffer::from_slice(gpu, &norm_w)?, DeviceBuffer::from_slice(gpu, &slot_ids)?);
    let entry = layers::cache_entry_bytes(kv_lora, rope, fp8);
    let (cache_fused, cache_alone) = (DeviceBuffer::alloc(gpu, slots_total * entry)?, DeviceBuffer::alloc(gpu, slots_total * entry)?);
    cache_fused.fill_bytes(0)?;
    cache_alone.fill_bytes(0)?;
    let write = |cache: &DeviceBuffer| CacheWrite {
        kv: v(&d_kv),
        norm_weight: v(&d_norm),
        pos: v(&d_pos),
        slots: v(&d_slots),
        rope: rope_args,
        cache: v(cache),
        cache_slots: slots_total,
        tokens: t,
        kv_lora,
        eps,
        fp8,
    };
    absorb::query(kern, s, v(&d_q), v(&d_kv_b), v(&q_out), v(&d_pos), rope_args, Some(write(&cache_fused)))?;
    layers::latent_cache_write(kern, write(&cache_alone))?;
    let cache_bytes_differ = cache_fused.to_vec::<u8>(slots_total * entry)?.iter().zip(cache_alone.to_vec::<u8>(slots_total * entry)?).filter(|(a, b)| **a != *b).count();
    absorb::value(kern, s, v(&d_o), v(&d_kv_b), v(&v_out))?;
    // the rope part must be rope_query's, bit for bit (the unfused path's kernel)
    let roped = DeviceBuffer::alloc(gpu, t * heads * d * 2)?;
    roped.fill_bytes(0xff)?;
    let rq = RopeQuery { q: v(&d_q), out: v(&roped), pos: v(&d_pos), rope: rope_args, tokens: t, heads, q_stride: qk, rope_offset: nope, out_stride: d, out_offset: kv_lora };
    layers::rope_query(kern, rq)?;
    let (bits_q, bits_rope) = (q_out.to_vec::<u16>(t * heads * d)?, roped.to_vec::<u16>(t * heads * d)?);
    let rope_bits_differ = (0..t * heads).filter(|r| bits_q[r * d + kv_lora..(r + 1) * d] != bits_rope[r * d + kv_lora..(r + 1) * d]).count();
    let got_q = from_bf16(&bits_q);
    let got_v = from_bf16(&v_out.to_vec::<u16>(t * heads * vd)?);
    let (mut worst_q, mut worst_rope, mut worst_v) = (0f64, 0f64, 0f64);
    for tok in 0..t {
        for h in 0..heads {
            let w_row = |r: usize| &kv_b[(h * (nope + vd) + r) * kv_lora..][..kv_lora];
            let qh = &q[(tok * heads + h) * qk..][..qk];
            // latent part: sum over nope of q[k] * W_UK[k][n]
            let lat: Vec<f64> = (0..kv_lora).map(|n| (0..nope).map(|kk| qh[kk] as f64 * w_row(kk)[n] as f64).sum()).collect();
            let got = &got_q[(tok * heads + h) * d..][..d];
            worst_q = worst_q.max(row_error(&lat, &got[..kv_lora]));
            // rope part, as rope.cu: angle in f32, cos/sin in f64 rounded to f32, times the factor
            let half = rope / 2;
            let mut rot = vec![0f64; rope];
            for i in 0..half {
                let angle = pos[tok] as f32 * freqs[i];
                let (c, sn) = ((angle as f64).cos() as f32 * factor, (angle as f64).sin() as f32 * factor);
                let (a, b) = if interleaved { (2 * i, 2 * i + 1) } else { (i, i + half) };
                let (x0, x1) = (qh[nope + a], qh[nope + b]);
                rot[a] = (x0 * c - x1 * sn) as f64;
                rot[b] = (x1 * c + x0 * sn) as f64;
            }
            worst_rope = worst_rope.max(row_error(&rot, &got[kv_lora..]));
            // value: o · W_UV[c] for each output column c
            let oh = &o[(tok * heads + h) * kv_lora..][..kv_lora];
            let val: Vec<f64> = (0..vd).map(|c| oh.iter().zip(w_row(nope + c)).map(|(&x, &w)| x as f64 * w as f64).sum()).collect();
            worst_v = worst_v.max(row_error(&val, &got_v[(tok * heads + h) * vd..][..vd]));
        }
    }
    let worst = if rope_bits_differ + cache_bytes_differ > 0 { f64::INFINITY } else { worst_q.max(worst_rope).max(worst_v) };
    Ok(Check {
        name: format!("absorb_query/value {t} tokens x {heads} heads, nope {nope}, v {vd}, latent {kv_lora}+{rope}{}", if interleaved { "" } else { " (rope halves)" }),
        error: worst,
        tolerance: TOL,
        detail: format!("max error over the head's largest |value|: W_UK {worst_q:.1e}, rope {worst_rope:.1e}, W_UV {worst_v:.1e}; {rope_bits_differ} rope rows differ from rope_query's bits; {cache_bytes_differ} {} cache bytes differ from latent_cache_write's", if fp8 { "fp8" } else { "bf16" }),
        informational: false,
    })
}

/// The largest |got - want| over the row's largest |want| (NaN, an unwritten element, is infinite).
fn row_error(want: &[f64], got: &[f32]) -> f64 {
    let scale = want.iter().fold(1e-30f64, |m, x| m.max(x.abs()));
    want.iter().zip(got).fold(0f64, |w, (&x, &g)| if g.is_finite() { w.max((g as f64 - x).abs() / scale) } else { f64::INFINITY })
}

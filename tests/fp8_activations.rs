//! The CPU reference of a GPU running FP8 weights rounds each FP8 linear's input as the GPU's
//! `fp8_quant_act` does: bf16, then per token per 128 channels an amax/448 scale and e4m3.

use mlahost_engine::checkpoint::{bf16_to_f32, f32_to_bf16, f8e4m3_to_f32};
use mlahost_engine::cpu::fp8_round_rows;
use mlahost_engine::cpu::AttentionMode;
use mlahost_engine::kv_cache_dtype::f32_to_f8e4m3;
use mlahost_engine::sampling::Rng;
use mlahost_tests::{all_logits, backend, fresh_seed, load, max_abs_diff, pages_for, random_tokens, FIXTURES};

#[test]
fn each_block_keeps_its_amax_and_lands_on_its_own_e4m3_grid() {
    let mut rng = Rng::seeded(fresh_seed());
    let cols = 300; // two whole blocks and a 44-channel tail
    let mut x: Vec<f32> = (0..3 * cols).map(|_| ((rng.next_f64() * 2.0 - 1.0) * 4.0) as f32).collect();
    x[cols..2 * cols].fill(0.0); // a zero row stays zero
    x[2 * cols + 5] = 3.0e4; // a huge value moves its own block's scale only
    let q = fp8_round_rows(&x, cols);
    assert!(q[cols..2 * cols].iter().all(|&v| v == 0.0));
    for (row, (xr, qr)) in x.chunks(cols).zip(q.chunks(cols)).enumerate() {
        for (b, (xb, qb)) in xr.chunks(128).zip(qr.chunks(128)).enumerate() {
            let xb: Vec<f32> = xb.iter().map(|&v| bf16_to_f32(f32_to_bf16(v))).collect();
            let amax = xb.iter().fold(0f32, |m, v| m.max(v.abs()));
            if amax == 0.0 {
                continue;
            }
            let scale = amax / 448.0;
            let qmax = qb.iter().fold(0f32, |m, v| m.max(v.abs()));
            assert!((qmax - amax).abs() <= amax * 1e-6, "row {row} block {b}: amax {amax} became {qmax}");
            for (&v, &g) in xb.iter().zip(qb) {
                let code = f32_to_f8e4m3(v / scale);
                assert_eq!(g, f8e4m3_to_f32(code) * scale, "row {row} block {b}: {v}");
                // e4m3 keeps 3 mantissa bits: half an ulp is 1/16 of the value (normal range)
                if (v / scale).abs() >= 0.015625 {
                    assert!((g - v).abs() <= v.abs() / 16.0 + 1e-12, "row {row} block {b}: {v} -> {g}");
                }
            }
        }
    }
    // the huge value's block lost its small values to the scale; the next block did not
    let small_kept = x[2 * cols + 128..2 * cols + 256].iter().zip(&q[2 * cols + 128..2 * cols + 256]).filter(|(a, b)| (*a - *b).abs() <= a.abs() / 16.0 + 1e-6).count();
    assert_eq!(small_kept, 128);
}

#[test]
fn emulating_the_gpu_rounding_changes_the_logits_only_when_asked() {
    let mut rng = Rng::seeded(fresh_seed());
    for fixture in FIXTURES {
        let model = load(fixture);
        let tokens = random_tokens(&mut rng, 24, model.config.vocab_size);
        let run = |emulate: bool| {
            let mut b = backend(&model, 4, 16, AttentionMode::Auto);
            if emulate {
                b.emulate_fp8_activations();
            }
            let pages = pages_for(&b, tokens.len());
            all_logits(&mut b, &tokens, 0, 8, &pages)
        };
        let (plain, again, fp8) = (run(false), run(false), run(true));
        assert_eq!(max_abs_diff(&plain, &again), 0.0);
        let d = max_abs_diff(&plain, &fp8);
        let mean = plain.iter().zip(&fp8).map(|(a, b)| (a - b).abs() as f64).sum::<f64>() / plain.len() as f64;
        let spread = (plain.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / plain.len() as f64).sqrt();
        eprintln!("{fixture}: |delta logit| with FP8-rounded linear inputs: max {d:.3e}, mean {mean:.3e}, rms logit {spread:.3e}");
        // e4m3 keeps 3 mantissa bits (up to 6% per input); on these random models that moves
        // the logits by 5-20% of their rms on average (routing flips where margins are small).
        // The check that matters is the GPU's against this reference (gpu-check's FP8 rows).
        assert!(mean > 1e-3 * spread && mean < 0.5 * spread, "{fixture}: mean |delta logit| {mean} for an rms of {spread}");
    }
}

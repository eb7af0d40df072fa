//! `--load-format dummy`: a model from its config.json and tokenizer alone, with the shapes and
//! memory of the real weights, the same values on every load, and a forward pass that runs.

use mlahost_engine::tensor::Matrix;
use mlahost_engine::weights::{FeedForward, ModelWeights, QueryProj};
use mlahost_engine::{LoadFormat, LoadedModel};
use mlahost_tests::{all_logits, backend, load, pages_for, ScratchCheckpoint, FIXTURES};
use mlahost_engine::cpu::AttentionMode;

/// Every matrix's (rows, cols), in load order.
fn shapes(w: &ModelWeights) -> Vec<(usize, usize)> {
    let mut out = vec![(w.embed.rows, w.embed.cols), (w.lm_head.rows, w.lm_head.cols)];
    let mut push = |m: &Matrix| out.push((m.rows, m.cols));
    for l in &w.layers {
        match &l.attn.q {
            QueryProj::Direct(m) => push(m),
            QueryProj::LowRank { a, b, .. } => {
                push(a);
                push(b);
            }
        }
        for m in [&l.attn.kv_a, &l.attn.kv_b, &l.attn.o] {
            push(m);
        }
        match &l.ffn {
            FeedForward::Dense(m) => {
                push(&m.gate_up);
                push(&m.down);
            }
            FeedForward::Moe(m) => {
                push(&m.router);
                for e in m.experts.iter().chain(&m.shared) {
                    push(&e.gate_up);
                    push(&e.down);
                }
            }
        }
    }
    out
}

#[test]
fn dummy_weights_take_the_real_shapes_from_the_config_alone() {
    for fixture in FIXTURES {
        let real = load(fixture);
        let scratch = ScratchCheckpoint::copy_of(fixture, "dummy");
        for entry in std::fs::read_dir(&scratch.dir).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.contains(".safetensors")) {
                std::fs::remove_file(path).unwrap();
            }
        }
        let refused = scratch.load_error();
        assert!(refused.contains("no model.safetensors"), "without files the default format refuses: {refused}");
        let a = LoadedModel::load_as(&scratch.dir, LoadFormat::Dummy, None).expect("dummy load");
        let b = LoadedModel::load_as(&scratch.dir, LoadFormat::Dummy, None).expect("dummy load");
        assert_eq!(shapes(&a.weights().expect("weights")), shapes(&real.weights().expect("weights")), "{fixture}");
        let kv_b = a.weights().expect("weights").layers[0].attn.kv_b.to_f32_vec();
        assert_eq!(kv_b, b.weights().expect("weights").layers[0].attn.kv_b.to_f32_vec(), "{fixture}: the same values on every load");
        assert_ne!(kv_b, real.weights().expect("weights").layers[0].attn.kv_b.to_f32_vec());
        let std = (kv_b.iter().map(|x| (x * x) as f64).sum::<f64>() / kv_b.len() as f64).sqrt();
        assert!((0.018..0.022).contains(&std), "{fixture}: standard deviation {std}, transformers initialises 0.02");
        assert!(a.weights().expect("weights").layers.iter().all(|l| l.input_norm.iter().all(|&x| x == 1.0)), "norms start at 1");
        // The model runs: finite logits over the whole vocabulary.
        let mut cpu = backend(&a, 4, 16, AttentionMode::Auto);
        let pages = pages_for(&cpu, 20);
        let tokens: Vec<u32> = (0..20).map(|i| (i * 37 % a.config.vocab_size) as u32).collect();
        let logits = all_logits(&mut cpu, &tokens, 0, 20, &pages);
        assert_eq!(logits.len(), 20 * a.config.vocab_size);
        assert!(logits.iter().all(|x| x.is_finite()));
    }
    assert!(LoadFormat::parse("pt").unwrap_err().to_string().contains("expected auto, safetensors or dummy"));
}

/// A config with FP8 blocks gets FP8 dummy linears, as its checkpoint would: kept as e4m3 codes
/// and block scales for a GPU that stores them, the same values dequantized for the CPU.
#[test]
fn an_fp8_config_gets_fp8_dummy_linears_with_the_same_values_kept_or_not() {
    let scratch = ScratchCheckpoint::copy_of("tiny-v3-fp8", "dummy-fp8");
    let model = LoadedModel::open(&scratch.dir, LoadFormat::Dummy, None).expect("open");
    let cfg = &model.config;
    assert!(cfg.fp8.is_some(), "the fixture declares FP8 blocks");
    let (kept, widened) = (model.source(true).expect("source"), model.source(false).expect("source"));
    let (k, w) = (ModelWeights::load_layer(kept.as_ref(), cfg, 1).expect("layer"), ModelWeights::load_layer(widened.as_ref(), cfg, 1).expect("layer"));
    assert!(matches!(k.attn.o.data, mlahost_engine::tensor::Storage::Fp8(_)), "kept as codes");
    assert!(matches!(w.attn.o.data, mlahost_engine::tensor::Storage::F32(_)), "dequantized for the CPU");
    assert_eq!(k.attn.o.to_f32_vec(), w.attn.o.to_f32_vec());
    let o = w.attn.o.to_f32_vec();
    let std = (o.iter().map(|x| (x * x) as f64).sum::<f64>() / o.len() as f64).sqrt();
    assert!((0.018..0.022).contains(&std), "standard deviation {std}");
    // the embeddings stay bf16, as in the hub's FP8 checkpoints
    assert!(matches!(ModelWeights::load(kept.as_ref(), cfg).expect("weights").embed.data, mlahost_engine::tensor::Storage::Bf16(_)));
}

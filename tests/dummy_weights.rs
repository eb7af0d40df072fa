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

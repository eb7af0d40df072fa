//! A GPU loader asks the checkpoint for FP8 weights as stored (the file's e4m3 codes and
//! `weight_scale_inv` blocks) rather than dequantized: the values are the same, the host copy
//! is half the size of bf16, and the layer-by-layer loading a GPU streams from gives the model
//! the whole-model load gives.

use mlahost_engine::checkpoint::Checkpoint;
use mlahost_engine::cpu::{AttentionMode, CpuBackend, CpuOptions};
use mlahost_engine::shard::RankShard;
use mlahost_engine::parallel::ParallelLayout;
use mlahost_engine::tensor::Storage;
use mlahost_engine::weights::{ModelEnds, ModelWeights};
use mlahost_engine::{CacheGeometry, KvCacheDtype};
use mlahost_tests::{all_logits, fixture_dir, fresh_seed, load, pages_for, random_tokens};
use std::sync::Arc;

#[test]
fn fp8_weights_kept_as_stored_give_the_dequantized_model_bit_for_bit() {
    let model = load("tiny-v3-fp8");
    let cfg = &model.config;
    let ckpt = Checkpoint::open(&fixture_dir("tiny-v3-fp8")).expect("checkpoint").keep_fp8(true);
    // loaded a layer at a time, as the GPU's streaming loader does
    let layers = (0..cfg.num_hidden_layers).map(|i| ModelWeights::load_layer(&ckpt, cfg, i).expect("layer")).collect::<Vec<_>>();
    let ModelEnds { embed, norm, lm_head } = ModelEnds::load(&ckpt, cfg).expect("ends");
    let kept = ModelWeights { embed, layers, norm, lm_head };
    let dequantized = model.weights().expect("weights");

    let q_b = |w: &ModelWeights| match &w.layers[1].attn.q {
        mlahost_engine::weights::QueryProj::LowRank { b, .. } => b.clone(),
        _ => panic!("tiny-v3-fp8 has a low-rank query"),
    };
    assert!(matches!(q_b(&kept).data, Storage::Fp8(_)), "the file's FP8 blocks are kept");
    assert_eq!(q_b(&kept).to_f32_vec(), q_b(&dequantized).to_f32_vec(), "the same values");
    assert!(kept.bytes() < dequantized.bytes() / 2, "{} bytes kept vs {} dequantized", kept.bytes(), dequantized.bytes());

    let mut rng = mlahost_engine::sampling::Rng::seeded(fresh_seed());
    let tokens = random_tokens(&mut rng, 20, cfg.vocab_size);
    let run = |w: Arc<ModelWeights>| {
        let opts = CpuOptions { geometry: CacheGeometry { num_pages: 4, page_size: 16 }, attention: AttentionMode::Auto, kv_dtype: KvCacheDtype::F32 };
        let mut b = CpuBackend::new(cfg.clone(), w, opts).expect("backend");
        let pages = pages_for(&b, tokens.len());
        all_logits(&mut b, &tokens, 0, 7, &pages)
    };
    assert_eq!(run(Arc::new(kept)), run(dequantized), "kept-FP8 weights must compute exactly the dequantized model");
}

/// Each rank's share cut layer by layer from the kept FP8 weights has the values of the same
/// share cut from the dequantized model (block-aligned cuts stay FP8, others are widened).
#[test]
fn rank_shares_of_kept_fp8_layers_match_the_dequantized_shares() {
    let model = load("tiny-v3-fp8");
    let cfg = &model.config;
    let ckpt = Checkpoint::open(&fixture_dir("tiny-v3-fp8")).expect("checkpoint").keep_fp8(true);
    let whole = model.weights().expect("weights");
    let layout = ParallelLayout { tensor_parallel: 2, data_parallel: 1, expert_parallel: true };
    for rank in 0..2 {
        let plan = RankShard::plan(cfg, layout, rank).expect("plan");
        let (_, reference) = mlahost_engine::shard::shard(cfg, &whole, layout, rank).expect("shard");
        for i in 0..cfg.num_hidden_layers {
            let kept = plan.layer(&ModelWeights::load_layer(&ckpt, cfg, i).expect("layer"));
            let r = &reference.layers[i];
            assert_eq!(kept.attn.o.to_f32_vec(), r.attn.o.to_f32_vec(), "rank {rank} layer {i} o_proj");
            assert_eq!(kept.attn.kv_b.to_f32_vec(), r.attn.kv_b.to_f32_vec(), "rank {rank} layer {i} kv_b");
            if let (mlahost_engine::weights::FeedForward::Moe(a), mlahost_engine::weights::FeedForward::Moe(b)) = (&kept.ffn, &r.ffn) {
                assert_eq!(a.first_expert, b.first_expert);
                for (x, y) in a.experts.iter().zip(&b.experts) {
                    assert_eq!(x.gate_up.to_f32_vec(), y.gate_up.to_f32_vec(), "rank {rank} layer {i} expert gate_up");
                    assert_eq!(x.down.to_f32_vec(), y.down.to_f32_vec(), "rank {rank} layer {i} expert down");
                }
            }
        }
    }
}

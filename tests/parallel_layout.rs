//! The arithmetic of one model over several GPUs: the parameter breakdown the layouts split is
//! complete, each layout's per-GPU weights add up, bad layouts are refused with their reason,
//! and the collective volume per token follows the sharding.

use mlahost_engine::capacity::{self, WeightCount, WeightSource};
use mlahost_engine::checkpoint::Checkpoint;
use mlahost_engine::parallel::ParallelLayout;
use mlahost_engine::{shapes, ModelConfig};
use mlahost_tests::{fixture_dir, FIXTURES};

fn config(name: &str) -> ModelConfig {
    let path = fixture_dir("configs").join(format!("{name}.json"));
    let v = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    ModelConfig::from_json(&v).unwrap()
}

fn layout(tp: usize, dp: usize, ep: bool) -> ParallelLayout {
    ParallelLayout { tensor_parallel: tp, data_parallel: dp, expert_parallel: ep }
}

#[test]
fn the_shape_breakdown_counts_every_parameter_of_each_fixture() {
    for name in FIXTURES {
        let dir = fixture_dir(name);
        let cfg = ModelConfig::from_file(&dir.join("config.json")).unwrap();
        let from_headers = Checkpoint::open(&dir).unwrap().parameter_count();
        assert_eq!(capacity::parameters_from_config(&cfg), from_headers, "{name}");
    }
}

#[test]
fn one_gpu_holds_what_the_single_gpu_count_says() {
    for name in ["deepseek-v3", "deepseek-v2-lite"] {
        let cfg = config(name);
        let count = WeightCount { parameters: capacity::parameters_from_config(&cfg), source: WeightSource::ConfigShapes };
        for fp8 in [false, true] {
            assert_eq!(ParallelLayout::SINGLE.weight_bytes_per_gpu(&cfg, fp8), count.gpu_bytes(&cfg, fp8), "{name} fp8={fp8}");
        }
    }
}

#[test]
fn tensor_parallel_shards_all_but_the_replicated_down_projections() {
    let cfg = config("deepseek-v3");
    let one = ParallelLayout::SINGLE.weight_bytes_per_gpu(&cfg, true);
    let tp8 = layout(8, 1, false).weight_bytes_per_gpu(&cfg, true);
    // what every rank keeps whole: q_a, kv_a (FP8), norms and routers (bf16)
    let replicated: u64 = shapes::linears(&cfg)
        .iter()
        .filter(|l| l.split == shapes::Split::Replicated)
        .map(|l| l.count * shapes::linear_bytes(l.rows, l.cols, l.fp8))
        .sum::<u64>()
        + 2 * shapes::small_parameters(&cfg);
    let sharded = one - replicated;
    // FP8 block scales round up per shard, so a shard is a little over 1/8 of the rest
    let expected = replicated + sharded / 8;
    assert!(tp8 >= expected && (tp8 as f64) < expected as f64 * 1.002, "{tp8} vs {expected}");
    // V3 in FP8 over 8 GPUs: about 84 GB each (671 B parameters, mostly one byte)
    assert!((80e9..90e9).contains(&(tp8 as f64)), "{tp8}");
}

#[test]
fn data_parallel_attention_keeps_attention_whole_and_spreads_whole_experts() {
    let cfg = config("deepseek-v3");
    let one = ParallelLayout::SINGLE.weight_bytes_per_gpu(&cfg, true);
    let dp8 = layout(1, 8, true).weight_bytes_per_gpu(&cfg, true);
    let experts: u64 = shapes::linears(&cfg)
        .iter()
        .filter(|l| matches!(l.split, shapes::Split::Experts { .. }))
        .map(|l| l.count * shapes::linear_bytes(l.rows, l.cols, l.fp8))
        .sum();
    assert_eq!(dp8, one - experts + experts / 8);
    // DP attention holds more weights per GPU than TP, and serves 8 groups' sequences
    assert!(dp8 > layout(8, 1, false).weight_bytes_per_gpu(&cfg, true));
    assert_eq!(layout(1, 8, true).sequences(3), 24);
    assert_eq!(layout(8, 1, false).sequences(3), 3);
}

#[test]
fn layouts_the_model_cannot_take_are_refused_with_the_reason() {
    let v3 = config("deepseek-v3");
    let err = |l: ParallelLayout, gpus: usize| l.validate(&v3, gpus).unwrap_err().to_string();
    assert!(err(layout(3, 1, false), 8).contains("128 attention heads"), "{}", err(layout(3, 1, false), 8));
    assert!(err(layout(8, 2, false), 8).contains("needs 16 GPUs"));
    assert!(err(layout(2, 3, true), 8).contains("256 routed experts"));
    assert!(err(layout(0, 1, false), 8).contains("at least 1"));
    for ok in [layout(8, 1, false), layout(8, 1, true), layout(1, 8, true), layout(2, 4, true), layout(4, 2, false)] {
        ok.validate(&v3, 8).unwrap();
    }
    let mut dense = config("deepseek-v2-lite");
    dense.moe = None;
    assert!(layout(2, 1, true).validate(&dense, 2).unwrap_err().to_string().contains("mixture-of-experts"));
}

#[test]
fn collective_volume_follows_the_sharding() {
    let cfg = config("deepseek-v3");
    let (h, layers) = (7168u64 * 2, 61u64);
    assert_eq!(ParallelLayout::SINGLE.collective_bytes_per_token(&cfg).total(), 0);
    let tp = layout(8, 1, false).collective_bytes_per_token(&cfg);
    assert_eq!(tp.all_reduce, 2 * h * layers);
    assert_eq!(tp.all_gather, 129_280 * 4);
    // DP 8 + EP, one rank per group: every token's f32 row gathered in and its output
    // reduce-scattered back in equal slots, per MoE layer
    let dp = layout(1, 8, true).collective_bytes_per_token(&cfg);
    assert_eq!((dp.all_reduce, dp.all_gather, dp.reduce_scatter), (0, 7168 * 4 * 58, 7168 * 4 * 58));
    // DP 4 x TP 2 + EP: the packed rows all-reduced each way beside the groups' own all-reduces
    let mixed = layout(2, 4, true).collective_bytes_per_token(&cfg);
    assert_eq!((mixed.all_reduce, mixed.reduce_scatter), (2 * h * layers + 2 * 7168 * 4 * 58, 0));
    // without expert parallelism every group runs its own tokens through its own experts
    let groups = layout(2, 4, false).collective_bytes_per_token(&cfg);
    assert_eq!((groups.all_reduce, groups.all_gather), (2 * h * layers, 129_280 * 4));
}

#[test]
fn kimi_k2_in_fp8_needs_two_h200_nodes_as_its_deployment_guide_says() {
    let cfg = config("kimi-k2");
    // 1.03 T parameters without the MTP layer; about 1.03 TB in FP8
    let params = capacity::parameters_from_config(&cfg) as f64;
    assert!((1.02e12..1.04e12).contains(&params), "{params}");
    let usable_h200 = (141e9 * 0.92) as u64;
    let per_gpu = |tp, dp, ep| layout(tp, dp, ep).weight_bytes_per_gpu(&cfg, true);
    assert!(per_gpu(8, 1, false) > usable_h200, "{}", per_gpu(8, 1, false));
    assert!(per_gpu(1, 8, true) > usable_h200);
    // 16 GPUs (TP=16, or DP+EP over 16) leave over 40 GB per GPU for the latent cache
    assert!(per_gpu(16, 1, false) + 40_000_000_000 < usable_h200, "{}", per_gpu(16, 1, false));
    assert!(per_gpu(1, 16, true) + 40_000_000_000 < usable_h200, "{}", per_gpu(1, 16, true));
    layout(16, 1, false).validate(&cfg, 16).unwrap();
}

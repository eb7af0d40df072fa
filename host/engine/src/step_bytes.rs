//! What one GPU of a layout reads from its memory and sends to the other GPUs in one decode
//! step: the numerator of the step's roofline (`plan --decode-batch`). A decode step of B
//! sequences reads every weight it touches once (the routed experts only where some token went)
//! and every cached latent of the sequences its GPU attends to, and moves the hidden rows through
//! the layout's collectives. Over the GPU's memory bandwidth and its link bandwidth that is the
//! shortest time the step can take.

use crate::config::ModelConfig;
use crate::kv_cache_dtype::KvCacheDtype;
use crate::parallel::ParallelLayout;
use crate::shapes::{self, Split};

/// One GPU's bytes in one decode step (the GPUs of a layout are alike but for rounding).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DecodeStepBytes {
    /// Sequences the step decodes across the instance.
    pub batch: usize,
    /// Tokens cached per sequence.
    pub context: usize,
    /// Weight bytes read: every linear this GPU holds, its routed experts by the expected share
    /// touched, the lm_head shard, the small parameters.
    pub weights: f64,
    /// Latent-cache bytes read: every cached token of the sequences this GPU attends to.
    pub kv: f64,
    /// Bytes this GPU sends through the collectives (ring algorithms).
    pub wire: f64,
    /// Expected routed experts touched per MoE layer on this GPU, and how many it holds.
    pub experts_touched: f64,
    pub experts_held: usize,
}

impl DecodeStepBytes {
    /// The roofline: memory bytes over `hbm` plus wire bytes over `link` (bytes/s), in seconds.
    /// Overlap of the two is not assumed.
    pub fn seconds(&self, hbm: f64, link: f64) -> f64 {
        (self.weights + self.kv) / hbm.max(1.0) + if self.wire > 0.0 { self.wire / link.max(1.0) } else { 0.0 }
    }
}

/// Expected distinct experts of `held` (out of `total`) chosen at least once when each of
/// `tokens` tokens picks `k` of `total` at random (routing is data dependent; uniform is the
/// neutral assumption).
fn expected_touched(held: usize, total: usize, k: usize, tokens: usize) -> f64 {
    if total == 0 || tokens == 0 {
        return 0.0;
    }
    let miss = (1.0 - k as f64 / total as f64).max(0.0).powi(tokens as i32);
    held as f64 * (1.0 - miss)
}

impl ParallelLayout {
    /// One GPU's bytes in a decode step of `batch` sequences with `context` tokens cached each
    /// (the sequences spread evenly over the data-parallel groups).
    pub fn decode_step_bytes(&self, cfg: &ModelConfig, fp8_weights: bool, kv_dtype: KvCacheDtype, batch: usize, context: usize) -> DecodeStepBytes {
        let (tp, dp, world) = (self.tensor_parallel.max(1), self.data_parallel.max(1), self.world().max(1));
        let group_tokens = batch.div_ceil(dp);
        let moe_layers = shapes::moe_layer_count(cfg);
        // routed experts: under expert parallelism each GPU holds E / world whole experts and runs
        // them over every token of the instance (the slot exchange gathers them); otherwise its
        // group's tokens over a 1 / tp slice of every expert
        let (experts_held, expert_tokens, expert_slice) = match &cfg.moe {
            Some(m) if self.expert_parallel => (m.n_routed_experts / world, batch, 1.0),
            Some(m) => (m.n_routed_experts, group_tokens, 1.0 / tp as f64),
            None => (0, 0, 0.0),
        };
        let experts_touched = cfg.moe.as_ref().map_or(0.0, |m| expected_touched(experts_held, m.n_routed_experts, m.num_experts_per_tok, expert_tokens));
        let mut weights = 0.0;
        for l in shapes::linears(cfg) {
            let fp8 = fp8_weights && l.fp8;
            weights += match l.split {
                Split::Replicated => (l.count * shapes::linear_bytes(l.rows, l.cols, fp8)) as f64,
                Split::OutputTp => (l.count * shapes::linear_bytes(l.rows / tp as u64, l.cols, fp8)) as f64,
                Split::InputTp => (l.count * shapes::linear_bytes(l.rows, l.cols / tp as u64, fp8)) as f64,
                // one expert of one layer, whole, times the touched ones of every MoE layer
                Split::Experts { .. } => {
                    let per_expert_layer = shapes::linear_bytes(l.rows, l.cols, fp8) as f64;
                    per_expert_layer * expert_slice * experts_touched * moe_layers as f64
                }
            };
        }
        let lm_head = (cfg.vocab_size as u64).div_ceil(tp as u64) * cfg.hidden_size as u64 * 2;
        weights += (lm_head + 2 * shapes::small_parameters(cfg)) as f64;
        let kv = (group_tokens * context * cfg.num_hidden_layers * kv_dtype.bytes_per_token_per_layer(cfg)) as f64;
        let wire = self.decode_wire_bytes(cfg, batch, group_tokens, moe_layers);
        DecodeStepBytes { batch, context, weights, kv, wire, experts_touched, experts_held }
    }

    /// Ring algorithms: an all-reduce of n ranks sends 2 (n-1)/n of its buffer, an all-gather
    /// or reduce-scatter (n-1)/n of the whole gathered buffer.
    fn decode_wire_bytes(&self, cfg: &ModelConfig, batch: usize, group_tokens: usize, moe_layers: u64) -> f64 {
        let (tp, world) = (self.tensor_parallel.max(1) as f64, self.world().max(1) as f64);
        let hidden_bf16 = cfg.hidden_size as f64 * 2.0;
        let mut wire = 0.0;
        if tp > 1.0 {
            // o_proj and the MLP: two all-reduces of the group's hidden rows per layer; the
            // vocab-parallel logits gathered in f32
            wire += 2.0 * (tp - 1.0) / tp * 2.0 * hidden_bf16 * cfg.num_hidden_layers as f64 * group_tokens as f64;
            wire += (tp - 1.0) / tp * cfg.vocab_size as f64 * 4.0 * group_tokens as f64;
        }
        if self.data_parallel > 1 && self.expert_parallel && moe_layers > 0 {
            // every MoE layer: the instance's rows (f32) in to every rank and the sums back out
            let rows = cfg.hidden_size as f64 * 4.0 * moe_layers as f64 * batch as f64;
            wire += if self.tensor_parallel == 1 {
                2.0 * (world - 1.0) / world * rows // all-gather + reduce-scatter
            } else {
                2.0 * 2.0 * (world - 1.0) / world * rows // two all-reduces of the packed rows
            };
        }
        wire
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v3() -> ModelConfig {
        ModelConfig::from_json(&serde_json::from_str(include_str!("../../../tests/fixtures/configs/deepseek-v3.json")).unwrap()).unwrap()
    }

    #[test]
    fn touched_experts_follow_the_uniform_expectation() {
        assert_eq!(expected_touched(256, 256, 8, 0), 0.0);
        assert!((expected_touched(256, 256, 8, 1) - 8.0).abs() < 1e-9, "one token touches its k experts");
        // 16 tokens x 8 of 256: 256 (1 - (31/32)^16)
        let want = 256.0 * (1.0 - (31.0f64 / 32.0).powi(16));
        assert!((expected_touched(256, 256, 8, 16) - want).abs() < 1e-9);
        assert!(expected_touched(32, 256, 8, 4096) > 31.99, "a large batch touches every expert");
    }

    #[test]
    fn data_parallel_attention_reads_an_eighth_of_the_latents_and_every_expert_once() {
        let cfg = v3();
        let tp8 = ParallelLayout { tensor_parallel: 8, data_parallel: 1, expert_parallel: false };
        let dp8 = ParallelLayout { tensor_parallel: 1, data_parallel: 8, expert_parallel: true };
        let (batch, ctx) = (64, 32768);
        let a = tp8.decode_step_bytes(&cfg, true, KvCacheDtype::Fp8, batch, ctx);
        let b = dp8.decode_step_bytes(&cfg, true, KvCacheDtype::Fp8, batch, ctx);
        // every TP rank reads all 64 sequences' latents (656 B per token per layer); a DP rank 8
        let per_seq = (ctx * 61 * 656) as f64;
        assert_eq!(a.kv, 64.0 * per_seq);
        assert_eq!(b.kv, 8.0 * per_seq);
        // the experts: TP slices all 256 over 8 GPUs, EP puts 32 whole ones on each
        assert_eq!((a.experts_held, b.experts_held), (256, 32));
        let touched = expected_touched(256, 256, 8, 64);
        assert!((a.experts_touched - touched).abs() < 1e-9 && (b.experts_touched - touched / 8.0).abs() < 1e-9);
        // the same expert bytes per GPU either way; DP holds the attention whole, TP an eighth
        let expert = (3 * 7168 * 2048 + 3 * 16 * 56 * 4) as f64; // gate_up + down: codes and 128x128 block scales
        let experts_tp = a.experts_touched * 58.0 * expert / 8.0;
        let experts_dp = b.experts_touched * 58.0 * expert;
        assert!((experts_tp - experts_dp).abs() / experts_dp < 1e-9);
        assert!(b.weights > a.weights);
        // TP: 4 all-reduces' worth of hidden rows per layer and the logits; DP: the MoE rows
        let tp_wire = 2.0 * 7.0 / 8.0 * 2.0 * 7168.0 * 2.0 * 61.0 * 64.0 + 7.0 / 8.0 * 129280.0 * 4.0 * 64.0;
        assert!((a.wire - tp_wire).abs() < 1.0, "{} vs {tp_wire}", a.wire);
        let dp_wire = 2.0 * 7.0 / 8.0 * 7168.0 * 4.0 * 58.0 * 64.0;
        assert!((b.wire - dp_wire).abs() < 1.0, "{} vs {dp_wire}", b.wire);
        // the roofline adds both, each over its own bandwidth
        let s = a.seconds(4.8e12, 450e9);
        assert!((s - ((a.weights + a.kv) / 4.8e12 + a.wire / 450e9)).abs() < 1e-15);
    }

    #[test]
    fn one_gpu_reads_the_whole_model_once_the_batch_touches_every_expert() {
        let cfg = v3();
        let one = ParallelLayout::SINGLE.decode_step_bytes(&cfg, true, KvCacheDtype::Bf16, 4096, 1);
        let stored = ParallelLayout::SINGLE.weight_bytes_per_gpu(&cfg, true) as f64;
        // stored also counts the embedding table, which a step reads only a few rows of
        let embedding = (129280 * 7168 * 2) as f64;
        assert!((one.weights - (stored - embedding)).abs() / stored < 1e-6, "{} vs {}", one.weights, stored - embedding);
        assert_eq!(one.wire, 0.0);
        assert_eq!(one.kv, (4096 * 61 * 1152) as f64);
    }
}

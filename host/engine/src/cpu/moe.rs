//! Mixture-of-experts feed-forward: routing (V2 softmax greedy / group-limited, V3 sigmoid
//! noaux_tc), expert MLPs over the tokens routed to them, and the shared experts.

use super::ops::{linear, silu_mul};
use crate::config::{MoeConfig, TopkMethod};
use crate::weights::{Mlp, Moe};
use rayon::prelude::*;

pub fn mlp(m: &Mlp, x: &[f32], t: usize) -> Vec<f32> {
    let gate_up = linear(x, t, &m.gate_up);
    linear(&silu_mul(&gate_up, m.gate_up.rows / 2), t, &m.down)
}

/// Experts and weights chosen for each token, as `(expert, weight)` pairs.
pub fn route(m: &Moe, cfg: &MoeConfig, x: &[f32], t: usize) -> Vec<Vec<(usize, f32)>> {
    let logits = linear(x, t, &m.router);
    logits.chunks(cfg.n_routed_experts).map(|l| route_token(l, m.score_bias.as_deref(), cfg)).collect()
}

/// The routing decision for one token's router logits (public so device kernels can be checked
/// against it).
pub fn route_logits(logits: &[f32], bias: Option<&[f32]>, cfg: &MoeConfig) -> Vec<(usize, f32)> {
    route_token(logits, bias, cfg)
}

fn route_token(logits: &[f32], bias: Option<&[f32]>, cfg: &MoeConfig) -> Vec<(usize, f32)> {
    let n = logits.len();
    let per_group = n / cfg.n_group;
    let k = cfg.num_experts_per_tok;
    match cfg.topk_method {
        TopkMethod::Greedy | TopkMethod::GroupLimitedGreedy => {
            let mut scores = logits.to_vec();
            super::ops::softmax(&mut scores);
            let mut choice = scores.clone();
            if cfg.topk_method == TopkMethod::GroupLimitedGreedy {
                let group_best = |g: usize| scores[g * per_group..(g + 1) * per_group].iter().copied().fold(f32::MIN, f32::max);
                mask_groups(&mut choice, per_group, cfg.topk_group, group_best, 0.0);
            }
            let chosen = top_k(&choice, k);
            let mut weights: Vec<f32> = chosen.iter().map(|&e| choice[e]).collect();
            // The checkpoints' reference code: normalize when asked, otherwise scale.
            if k > 1 && cfg.norm_topk_prob {
                let sum = weights.iter().sum::<f32>() + 1e-20;
                weights.iter_mut().for_each(|w| *w /= sum);
            } else {
                weights.iter_mut().for_each(|w| *w *= cfg.routed_scaling_factor);
            }
            chosen.into_iter().zip(weights).collect()
        }
        TopkMethod::NoauxTc => {
            let scores: Vec<f32> = logits.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect();
            let mut choice: Vec<f32> = match bias {
                Some(b) => scores.iter().zip(b).map(|(s, b)| s + b).collect(),
                None => scores.clone(),
            };
            let snapshot = choice.clone();
            let group_top2 = |g: usize| {
                let top = top_k(&snapshot[g * per_group..(g + 1) * per_group], 2);
                top.iter().map(|&i| snapshot[g * per_group + i]).sum::<f32>()
            };
            mask_groups(&mut choice, per_group, cfg.topk_group, group_top2, f32::NEG_INFINITY);
            let chosen = top_k(&choice, k);
            let mut weights: Vec<f32> = chosen.iter().map(|&e| scores[e]).collect();
            if cfg.norm_topk_prob {
                let sum = weights.iter().sum::<f32>() + 1e-20;
                weights.iter_mut().for_each(|w| *w /= sum);
            }
            weights.iter_mut().for_each(|w| *w *= cfg.routed_scaling_factor);
            chosen.into_iter().zip(weights).collect()
        }
    }
}

/// Keeps the `keep` best groups by `group_score`; sets every expert of the others to `fill`.
fn mask_groups(choice: &mut [f32], per_group: usize, keep: usize, group_score: impl Fn(usize) -> f32, fill: f32) {
    let groups: Vec<f32> = (0..choice.len() / per_group).map(group_score).collect();
    let kept = top_k(&groups, keep);
    for g in 0..groups.len() {
        if !kept.contains(&g) {
            choice[g * per_group..(g + 1) * per_group].fill(fill);
        }
    }
}

/// Indices of the `k` largest values, best first; ties go to the lower index.
fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..values.len()).collect();
    idx.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
    idx.truncate(k);
    idx
}

/// Routed experts (each over the tokens routed to it, in parallel) plus the shared experts.
pub fn moe(m: &Moe, cfg: &MoeConfig, x: &[f32], t: usize, hidden: usize) -> Vec<f32> {
    let routes = route(m, cfg, x, t);
    let mut per_expert: Vec<Vec<(usize, f32)>> = vec![Vec::new(); cfg.n_routed_experts];
    for (tok, choices) in routes.iter().enumerate() {
        for &(e, w) in choices {
            per_expert[e].push((tok, w));
        }
    }
    let outputs: Vec<(usize, Vec<f32>)> = per_expert
        .par_iter()
        .enumerate()
        .filter(|(_, toks)| !toks.is_empty())
        .map(|(e, toks)| {
            let mut xs = Vec::with_capacity(toks.len() * hidden);
            for &(tok, _) in toks {
                xs.extend_from_slice(&x[tok * hidden..(tok + 1) * hidden]);
            }
            (e, mlp(&m.experts[e], &xs, toks.len()))
        })
        .collect();
    let mut out = vec![0f32; t * hidden];
    for (e, y) in outputs {
        for (i, &(tok, w)) in per_expert[e].iter().enumerate() {
            let dst = &mut out[tok * hidden..(tok + 1) * hidden];
            for (d, s) in dst.iter_mut().zip(&y[i * hidden..(i + 1) * hidden]) {
                *d += w * s;
            }
        }
    }
    if let Some(shared) = &m.shared {
        for (o, s) in out.iter_mut().zip(mlp(shared, x, t)) {
            *o += s;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ScoringFunc;

    fn cfg(method: TopkMethod, n_group: usize, topk_group: usize, k: usize) -> MoeConfig {
        MoeConfig {
            n_routed_experts: 8,
            n_shared_experts: 0,
            num_experts_per_tok: k,
            moe_intermediate_size: 4,
            first_k_dense_replace: 0,
            moe_layer_freq: 1,
            topk_method: method,
            scoring_func: if method == TopkMethod::NoauxTc { ScoringFunc::Sigmoid } else { ScoringFunc::Softmax },
            norm_topk_prob: method == TopkMethod::NoauxTc,
            routed_scaling_factor: 2.5,
            n_group,
            topk_group,
        }
    }

    #[test]
    fn group_limited_greedy_skips_weak_groups() {
        // Groups of 2: best singles are g0: 3.0, g1: 2.9, g2: 2.8, g3: 0.
        let logits = [3.0, -5.0, 2.9, 2.85, 2.8, 2.79, 0.0, 0.0];
        let r = route_token(&logits, None, &cfg(TopkMethod::GroupLimitedGreedy, 4, 2, 3));
        let experts: Vec<usize> = r.iter().map(|p| p.0).collect();
        assert_eq!(experts, vec![0, 2, 3], "group 2's expert 4 is better than -5 but its group is dropped");
        let g = route_token(&logits, None, &cfg(TopkMethod::Greedy, 1, 1, 3));
        assert_eq!(g.iter().map(|p| p.0).collect::<Vec<_>>(), vec![0, 2, 3]);
    }

    #[test]
    fn noaux_tc_chooses_with_bias_but_weights_without() {
        let logits = [0.0f32; 8];
        let bias = [0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.4, 0.0];
        let r = route_token(&logits, Some(&bias), &cfg(TopkMethod::NoauxTc, 4, 2, 2));
        let experts: Vec<usize> = r.iter().map(|p| p.0).collect();
        assert_eq!(experts, vec![5, 6]);
        // Unbiased sigmoid(0) = 0.5 each, normalized to 0.5, times 2.5.
        assert!(r.iter().all(|p| (p.1 - 1.25).abs() < 1e-6));
    }
}

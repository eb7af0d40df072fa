//! Mixture-of-experts feed-forward: routing (V2 softmax greedy / group-limited, V3 sigmoid
//! noaux_tc), expert MLPs over the tokens routed to them, and the shared experts.

use super::ops::{fp8_input, linear, linear_many, silu_mul, Fp8Inputs, Lin};
use crate::config::{MoeConfig, TopkMethod};
use crate::weights::{Mlp, Moe};
use crate::TokenRoute;

/// `fp8`: round the inputs as the GPU does for FP8 weights (`ops::fp8_input`).
pub fn mlp(m: &Mlp, x: &[f32], t: usize, fp8: Fp8Inputs) -> Vec<f32> {
    let gate_up = linear(&fp8_input(fp8, x, &m.gate_up), t, &m.gate_up);
    let act = silu_mul(&gate_up, m.gate_up.rows / 2);
    linear(&fp8_input(fp8, &act, &m.down), t, &m.down)
}

/// How `route` records and steers: off for serving; the end-to-end checks record each token's
/// own routing and may have it follow another backend's (`follow`: that backend's routing of
/// these tokens and a margin; where this one's margin is below it, the other's experts are taken
/// instead, weighted by this one's scores, as a reference follows a decision it nearly made).
#[derive(Clone, Copy, Default)]
pub struct RouteTracking<'a> {
    pub record: bool,
    pub follow: Option<(&'a [TokenRoute], f32)>,
}

/// Experts and weights chosen for each token, as `(expert, weight)` pairs, and (when `tracking`
/// records) each token's own routing: its choice and `route_margin`.
pub fn route(m: &Moe, cfg: &MoeConfig, x: &[f32], t: usize, tracking: RouteTracking<'_>) -> (Vec<Vec<(usize, f32)>>, Vec<TokenRoute>) {
    let logits = linear(x, t, &m.router);
    let bias = m.score_bias.as_deref();
    if !tracking.record {
        return (logits.chunks(cfg.n_routed_experts).map(|l| route_token(l, bias, cfg, None)).collect(), Vec::new());
    }
    let follow = tracking.follow;
    logits
        .chunks(cfg.n_routed_experts)
        .enumerate()
        .map(|(tok, l)| {
            let own = route_token(l, bias, cfg, None);
            let mut experts: Vec<u32> = own.iter().map(|&(e, _)| e as u32).collect();
            experts.sort_unstable();
            let margin = route_margin(l, bias, cfg);
            let other = follow.and_then(|(r, within)| r.get(tok).filter(|o| margin < within && o.experts != experts && o.experts.len() == experts.len()));
            let chosen = match other {
                Some(o) => route_token(l, bias, cfg, Some(&o.experts)),
                None => own,
            };
            (chosen, TokenRoute { experts, margin })
        })
        .unzip()
}

/// How far one token's routing is from a different choice, in router-logit units: the smallest
/// change of one logit that would swap a chosen expert (or a kept group) for another. Softmax
/// scoring preserves logit order, so this is the gap between the last chosen and the best
/// unchosen logit (groups: the log-ratio of their scores). Sigmoid scoring (noaux_tc) compares
/// score + bias; a logit must move at least 4x a score gap (the sigmoid's slope is at most 1/4).
/// The end-to-end checks use it: a routing decision this close is a near-tie, like a logprob one.
pub fn route_margin(logits: &[f32], bias: Option<&[f32]>, cfg: &MoeConfig) -> f32 {
    let n = logits.len();
    let per_group = n / cfg.n_group.max(1);
    let k = cfg.num_experts_per_tok.min(n);
    // gap between the k-th and (k+1)-th of `values` restricted to `allowed` entries
    let gap = |values: &[f32], allowed: &dyn Fn(usize) -> bool, k: usize| -> f32 {
        let mut v: Vec<f32> = (0..values.len()).filter(|&i| allowed(i)).map(|i| values[i]).collect();
        if k == 0 || v.len() <= k {
            return f32::INFINITY;
        }
        v.sort_by(|a, b| b.total_cmp(a));
        v[k - 1] - v[k]
    };
    match cfg.topk_method {
        TopkMethod::Greedy => gap(logits, &|_| true, k),
        TopkMethod::GroupLimitedGreedy => {
            let group_best: Vec<f32> = logits.chunks(per_group).map(|g| g.iter().copied().fold(f32::MIN, f32::max)).collect();
            let kept = top_k(&group_best, cfg.topk_group);
            let inside = gap(logits, &|i| kept.contains(&(i / per_group)), k);
            // softmax scores of the groups' best experts: their log-ratio is a logit difference
            inside.min(gap(&group_best, &|_| true, cfg.topk_group))
        }
        TopkMethod::NoauxTc => {
            let choice: Vec<f32> = logits.iter().enumerate().map(|(i, &l)| 1.0 / (1.0 + (-l).exp()) + bias.map_or(0.0, |b| b[i])).collect();
            let group_top2: Vec<f32> = choice
                .chunks(per_group)
                .map(|g| top_k(g, 2).iter().map(|&i| g[i]).sum::<f32>())
                .collect();
            let kept = top_k(&group_top2, cfg.topk_group);
            let inside = gap(&choice, &|i| kept.contains(&(i / per_group)), k);
            4.0 * inside.min(gap(&group_top2, &|_| true, cfg.topk_group))
        }
    }
}

/// The routing decision for one token's router logits (public so device kernels can be checked
/// against it).
pub fn route_logits(logits: &[f32], bias: Option<&[f32]>, cfg: &MoeConfig) -> Vec<(usize, f32)> {
    route_token(logits, bias, cfg, None)
}

/// One token's experts and weights; `forced` replaces the choice (the weights still come from
/// this token's scores and the checkpoint's normalisation).
fn route_token(logits: &[f32], bias: Option<&[f32]>, cfg: &MoeConfig, forced: Option<&[u32]>) -> Vec<(usize, f32)> {
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
            let chosen = forced.map_or_else(|| top_k(&choice, k), |f| f.iter().map(|&e| e as usize).collect());
            // (a chosen expert's masked score is its score; a forced one may lie in a masked group)
            let mut weights: Vec<f32> = chosen.iter().map(|&e| scores[e]).collect();
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
            let chosen = forced.map_or_else(|| top_k(&choice, k), |f| f.iter().map(|&e| e as usize).collect());
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

/// Routed experts (each over the tokens routed to it) plus the shared experts, every expert's
/// gate/up in one parallel op and every down projection in a second; also each token's own
/// routing where `tracking` records it (`route`).
pub fn moe(m: &Moe, cfg: &MoeConfig, x: &[f32], t: usize, hidden: usize, tracking: RouteTracking<'_>, fp8: Fp8Inputs) -> (Vec<f32>, Vec<TokenRoute>) {
    experts(m, cfg, x, t, hidden, tracking, fp8, true)
}

/// The routed experts alone (data-parallel attention runs them over every group's tokens and
/// the shared experts over its own).
pub fn routed(m: &Moe, cfg: &MoeConfig, x: &[f32], t: usize, hidden: usize, fp8: Fp8Inputs) -> Vec<f32> {
    experts(m, cfg, x, t, hidden, RouteTracking::default(), fp8, false).0
}

#[allow(clippy::too_many_arguments)]
fn experts(m: &Moe, cfg: &MoeConfig, x: &[f32], t: usize, hidden: usize, tracking: RouteTracking<'_>, fp8: Fp8Inputs, with_shared: bool) -> (Vec<f32>, Vec<TokenRoute>) {
    let (routes, routing) = route(m, cfg, x, t, tracking);
    let mut per_expert: Vec<Vec<(usize, f32)>> = vec![Vec::new(); cfg.n_routed_experts];
    for (tok, choices) in routes.iter().enumerate() {
        for &(e, w) in choices {
            per_expert[e].push((tok, w));
        }
    }
    // Under expert parallelism this rank runs only its own experts; the ranks' outputs are summed.
    let local = m.first_expert..m.first_expert + m.experts.len();
    let active: Vec<usize> = local.filter(|&e| !per_expert[e].is_empty()).collect();
    let gathered: Vec<Vec<f32>> = active
        .iter()
        .map(|&e| per_expert[e].iter().flat_map(|&(tok, _)| &x[tok * hidden..(tok + 1) * hidden]).copied().collect())
        .collect();
    let mut mlps: Vec<(&Mlp, &[f32], usize)> = active.iter().zip(&gathered).map(|(&e, xs)| (&m.experts[e - m.first_expert], &xs[..], per_expert[e].len())).collect();
    let shared = m.shared.as_ref().filter(|_| with_shared);
    if let Some(shared) = shared {
        mlps.push((shared, x, t));
    }
    let ys = mlp_many(&mlps, fp8);
    let mut out = vec![0f32; t * hidden];
    for (&e, y) in active.iter().zip(&ys) {
        for (i, &(tok, w)) in per_expert[e].iter().enumerate() {
            let dst = &mut out[tok * hidden..(tok + 1) * hidden];
            for (d, s) in dst.iter_mut().zip(&y[i * hidden..(i + 1) * hidden]) {
                *d += w * s;
            }
        }
    }
    if shared.is_some() {
        if let Some(y) = ys.last() {
            out.iter_mut().zip(y).for_each(|(o, s)| *o += s);
        }
    }
    (out, routing)
}

/// Several SiLU-gated MLPs, each over its own rows: gate/up of all in one op, down in another.
fn mlp_many(mlps: &[(&Mlp, &[f32], usize)], fp8: Fp8Inputs) -> Vec<Vec<f32>> {
    let inputs: Vec<_> = mlps.iter().map(|&(m, x, _)| fp8_input(fp8, x, &m.gate_up)).collect();
    let gate_up = linear_many(&mlps.iter().zip(&inputs).map(|(&(m, _, t), x)| Lin::new(&m.gate_up, x, t)).collect::<Vec<_>>());
    let acts: Vec<Vec<f32>> = mlps
        .iter()
        .zip(&gate_up)
        .map(|(&(m, _, _), gu)| {
            let act = silu_mul(gu, m.gate_up.rows / 2);
            match fp8_input(fp8, &act, &m.down) {
                std::borrow::Cow::Owned(rounded) => rounded,
                std::borrow::Cow::Borrowed(_) => act,
            }
        })
        .collect();
    linear_many(&mlps.iter().zip(&acts).map(|(&(m, _, t), a)| Lin::new(&m.down, a, t)).collect::<Vec<_>>())
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
        let r = route_token(&logits, None, &cfg(TopkMethod::GroupLimitedGreedy, 4, 2, 3), None);
        let experts: Vec<usize> = r.iter().map(|p| p.0).collect();
        assert_eq!(experts, vec![0, 2, 3], "group 2's expert 4 is better than -5 but its group is dropped");
        let g = route_token(&logits, None, &cfg(TopkMethod::Greedy, 1, 1, 3), None);
        assert_eq!(g.iter().map(|p| p.0).collect::<Vec<_>>(), vec![0, 2, 3]);
    }

    #[test]
    fn noaux_tc_chooses_with_bias_but_weights_without() {
        let logits = [0.0f32; 8];
        let bias = [0.0, 0.0, 0.0, 0.0, 0.0, 0.5, 0.4, 0.0];
        let r = route_token(&logits, Some(&bias), &cfg(TopkMethod::NoauxTc, 4, 2, 2), None);
        let experts: Vec<usize> = r.iter().map(|p| p.0).collect();
        assert_eq!(experts, vec![5, 6]);
        // Unbiased sigmoid(0) = 0.5 each, normalized to 0.5, times 2.5.
        assert!(r.iter().all(|p| (p.1 - 1.25).abs() < 1e-6));
    }

    #[test]
    fn margins_measure_the_closest_decision_and_forced_choices_keep_the_weights() {
        let logits = [3.0, -5.0, 2.9, 2.85, 2.8, 2.79, 0.0, 0.0];
        // greedy top 3: 3.0, 2.9, 2.85 against 2.8
        let greedy = cfg(TopkMethod::Greedy, 1, 1, 3);
        assert!((route_margin(&logits, None, &greedy) - 0.05).abs() < 1e-5);
        // group-limited: inside groups 0 and 1 the 4th is -5 (gap 7.85), but groups 1 and 2 are
        // 0.1 apart (2.9 vs 2.8)
        assert!((route_margin(&logits, None, &cfg(TopkMethod::GroupLimitedGreedy, 4, 2, 3)) - 0.1).abs() < 1e-5);
        // a forced choice is weighted by the token's own (softmax) scores, as its own choice is
        let own = route_token(&logits, None, &greedy, None);
        let forced = route_token(&logits, None, &greedy, Some(&[0, 2, 4]));
        assert_eq!(forced.iter().map(|p| p.0).collect::<Vec<_>>(), vec![0, 2, 4]);
        assert_eq!(forced[..2], own[..2]);
        assert!(forced[2].1 < own[2].1, "expert 4 scores below expert 3");
    }
}

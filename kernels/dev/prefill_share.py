#!/usr/bin/env python3
"""Issue 28's prefill figure: a prompt's active FLOPs over its prefill time, against the card's dense
bf16 tensor peak. Active FLOPs: 2 x the parameters each token multiplies (attention projections,
the dense MLPs, the routed experts it is sent to and the shared ones, the router), plus causal
attention in the unabsorbed form (QK^T over 192 dims, PV over 128, per head).

    prefill_share.py CONFIG GPU_NAME TOKENS PREFILL_S   prints TFLOP/s and the share of the peak
"""
import json
import sys

# dense bf16 tensor peak (no sparsity), TFLOP/s
PEAKS = {"H100 80GB HBM3": 989.4, "H100 SXM": 989.4, "H200": 989.4, "H100 PCIe": 756.0, "H100 NVL": 835.0}


def active_flops(cfg: dict, n: int) -> float:
    h, L, heads = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"]
    nope, rope, vd, lat = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"], cfg["kv_lora_rank"]
    qk = nope + rope
    q_lora = cfg.get("q_lora_rank")
    q = h * q_lora + q_lora * heads * qk if q_lora else h * heads * qk
    attn = q + h * (lat + rope) + lat * heads * (nope + vd) + heads * vd * h
    dense_layers = cfg.get("first_k_dense_replace", 0) if cfg.get("n_routed_experts") else L
    moe_layers = L - dense_layers
    mlp_dense = 3 * h * cfg["intermediate_size"]
    mlp_moe = 0
    if moe_layers:
        mlp_moe = 3 * h * cfg["moe_intermediate_size"] * (cfg["num_experts_per_tok"] + cfg.get("n_shared_experts", 0)) + h * cfg["n_routed_experts"]
    params = L * attn + dense_layers * mlp_dense + moe_layers * mlp_moe
    scores = L * heads * (n * (n + 1) / 2) * 2 * (qk + vd)
    return 2 * params * n + scores


def main() -> None:
    cfg, gpu, n, secs = json.load(open(sys.argv[1])), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    tflops = active_flops(cfg, n) / secs / 1e12
    peak = next((p for name, p in PEAKS.items() if name in gpu), None)
    share = f"{100 * tflops / peak:.0f}% of {peak:.0f}" if peak else "peak unknown"
    print(f"{n} tokens: {secs * 1e3:.1f} ms, {active_flops(cfg, n) / 1e12:.2f} TFLOP active, {tflops:.0f} TFLOP/s ({share})")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""The decode step's memory roofline that issue 28's shares are measured against: the weights a
step touches (attention, the dense layer, the routed experts `c` tokens can touch, shared experts,
routers, embedding row and lm_head) plus the KV cache read, over the device's copy bandwidth.

    step_roofline.py CONFIG COPY_GBPS AB_DIR [VARIANTS]   prints dev/step_ab.sh's variants' roofline
    shares (VARIANTS: its |-separated list, to name the rows)
"""
import json
import sys


def step_bytes(cfg: dict, c: int, context: int = 1024 + 128) -> float:
    """Bytes one decode step of `c` sequences of `context` cached tokens reads (bf16 weights)."""
    h, L, E = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["n_routed_experts"]
    inter, mi, k, heads = cfg["intermediate_size"], cfg["moe_intermediate_size"], cfg["num_experts_per_tok"], cfg["num_attention_heads"]
    attn = h * heads * 192 + h * 576 + 512 * heads * 256 + heads * 128 * h
    dense = 3 * h * inter
    expert = 3 * h * mi
    shared = expert * cfg["n_shared_experts"]
    touched = min(E, c * k)  # routed experts read per MoE layer per step (upper bound E)
    w = L * attn + dense + (L - 1) * (touched * expert + shared + h * E) + 2 * cfg["vocab_size"] * h
    kv = c * context * 1152 * L
    return 2 * w + kv


def run(item):
    try:
        r = json.load(open(item))
        return r[0] if isinstance(r, list) else r.get("runs", [r])[0]
    except (OSError, ValueError, IndexError):
        return None


def main() -> None:
    cfg, copy, ab = json.load(open(sys.argv[1])), float(sys.argv[2]) * 1e9, sys.argv[3]
    names = sys.argv[4].split("|") if len(sys.argv) > 4 else []
    print(f"copy bandwidth {copy / 1e9:.0f} GB/s; roofline shares (weights + KV per step over copy, as kernels/gpu_e2e.sh)")
    print("| variant | batch 1 (generate) | GPU busy at batch 1 (device time of the decode steps / their wall time) | c=16 | c=64 |")
    print("|---|---|---|---|---|")
    i = 0
    while True:
        try:
            gen = json.load(open(f"{ab}/ab_gen_{i}.json"))["stats"]
        except (OSError, ValueError, KeyError):
            if i > 0 and not any(run(f"{ab}/ab_c{c}_{i}.json") for c in (16, 64)):
                break
            gen = None
        shares = []
        if gen and gen.get("decode_tokens_per_s"):
            shares.append(f"{100 * step_bytes(cfg, 1) / copy * gen['decode_tokens_per_s']:.0f}%")
        else:
            shares.append("-")
        busy = gen.get("device_busy_share") if gen else None
        shares.append(f"{100 * busy:.0f}%" if busy else "-")
        for c in (16, 64):
            r = run(f"{ab}/ab_c{c}_{i}.json")
            tpot = r.get("tpot_ms", {}).get("median") if r else None
            shares.append(f"{100 * (step_bytes(cfg, c) / copy) / (tpot * 1e-3):.0f}%" if tpot else "-")
        print(f"| {names[i] if i < len(names) else i} | " + " | ".join(shares) + " |")
        i += 1
        if i > 16:
            break


if __name__ == "__main__":
    main()

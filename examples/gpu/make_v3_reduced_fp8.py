#!/usr/bin/env python3
"""Write a random-weight DeepSeek-V3-shaped FP8 checkpoint, reduced so the CPU engine can run it
as the reference: V3's exact widths (hidden 7168, 128 heads, q_lora 1536, kv_lora 512, rope 64,
experts of 2048, 8 active, noaux_tc over 8 groups / top 4, vocab 129280) with 2 layers
(first_k_dense_replace 1: one dense layer, one MoE layer) and 32 routed experts + 1 shared.

Linear weights are stored as the hub's V3 files store them: F8_E4M3 with a float32
`<name>_scale_inv` per 128x128 block (ceil-div at the edges, e.g. kv_a_proj_with_mqa's 576 rows),
scale = block amax / 448; embeddings, lm_head, norms and the router stay bf16, the router's
correction bias float32. About 6 GB; drawn on the GPU when one is present.

    python3 examples/gpu/make_v3_reduced_fp8.py --out /tmp/v3-reduced --tokenizer-dir DIR
"""

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

V3_REDUCED = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "vocab_size": 129280,
    "hidden_size": 7168,
    "intermediate_size": 18432,
    "moe_intermediate_size": 2048,
    "num_hidden_layers": 2,
    "num_attention_heads": 128,
    "num_key_value_heads": 128,
    "n_shared_experts": 1,
    "n_routed_experts": 32,
    "routed_scaling_factor": 2.5,
    "kv_lora_rank": 512,
    "q_lora_rank": 1536,
    "qk_rope_head_dim": 64,
    "v_head_dim": 128,
    "qk_nope_head_dim": 128,
    "topk_method": "noaux_tc",
    "n_group": 8,
    "topk_group": 4,
    "num_experts_per_tok": 8,
    "moe_layer_freq": 1,
    "first_k_dense_replace": 1,
    "norm_topk_prob": True,
    "scoring_func": "sigmoid",
    "hidden_act": "silu",
    "max_position_embeddings": 163840,
    "rms_norm_eps": 1e-06,
    "bos_token_id": 0,
    "eos_token_id": 1,
    "tie_word_embeddings": False,
    "rope_theta": 10000,
    "rope_scaling": {
        "beta_fast": 32,
        "beta_slow": 1,
        "factor": 40,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
        "original_max_position_embeddings": 4096,
        "type": "yarn",
    },
    "attention_bias": False,
    "torch_dtype": "bfloat16",
    "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": [128, 128]},
}

# (name, shape, kind): kind "fp8" linear, "bf16" matrix, "norm", "bias"
def tensors(c):
    h, heads = c["hidden_size"], c["num_attention_heads"]
    qk = c["qk_nope_head_dim"] + c["qk_rope_head_dim"]
    yield "model.embed_tokens.weight", (c["vocab_size"], h), "bf16"
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}"
        yield f"{p}.input_layernorm.weight", (h,), "norm"
        yield f"{p}.post_attention_layernorm.weight", (h,), "norm"
        a = f"{p}.self_attn"
        yield f"{a}.q_a_proj.weight", (c["q_lora_rank"], h), "fp8"
        yield f"{a}.q_a_layernorm.weight", (c["q_lora_rank"],), "norm"
        yield f"{a}.q_b_proj.weight", (heads * qk, c["q_lora_rank"]), "fp8"
        yield f"{a}.kv_a_proj_with_mqa.weight", (c["kv_lora_rank"] + c["qk_rope_head_dim"], h), "fp8"
        yield f"{a}.kv_a_layernorm.weight", (c["kv_lora_rank"],), "norm"
        yield f"{a}.kv_b_proj.weight", (heads * (c["qk_nope_head_dim"] + c["v_head_dim"]), c["kv_lora_rank"]), "fp8"
        yield f"{a}.o_proj.weight", (h, heads * c["v_head_dim"]), "fp8"
        m = f"{p}.mlp"
        if i < c["first_k_dense_replace"]:
            inter = c["intermediate_size"]
            yield f"{m}.gate_proj.weight", (inter, h), "fp8"
            yield f"{m}.up_proj.weight", (inter, h), "fp8"
            yield f"{m}.down_proj.weight", (h, inter), "fp8"
        else:
            inter = c["moe_intermediate_size"]
            yield f"{m}.gate.weight", (c["n_routed_experts"], h), "bf16"
            yield f"{m}.gate.e_score_correction_bias", (c["n_routed_experts"],), "bias"
            for e in range(c["n_routed_experts"]):
                yield f"{m}.experts.{e}.gate_proj.weight", (inter, h), "fp8"
                yield f"{m}.experts.{e}.up_proj.weight", (inter, h), "fp8"
                yield f"{m}.experts.{e}.down_proj.weight", (h, inter), "fp8"
            s = inter * c["n_shared_experts"]
            yield f"{m}.shared_experts.gate_proj.weight", (s, h), "fp8"
            yield f"{m}.shared_experts.up_proj.weight", (s, h), "fp8"
            yield f"{m}.shared_experts.down_proj.weight", (h, s), "fp8"
    yield "model.norm.weight", (h,), "norm"
    yield "lm_head.weight", (c["vocab_size"], h), "bf16"


def quantize(w):
    """[r, c] float -> (e4m3 [r, c], float32 [ceil(r/128), ceil(c/128)]) with scale = amax / 448."""
    r, c = w.shape
    br, bc = -(-r // 128), -(-c // 128)
    padded = torch.zeros(br * 128, bc * 128, dtype=torch.float32, device=w.device)
    padded[:r, :c] = w
    blocks = padded.view(br, 128, bc, 128)
    scale = blocks.abs().amax(dim=(1, 3)) / 448.0
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = (blocks / safe[:, None, :, None]).clamp(-448, 448).view(br * 128, bc * 128)[:r, :c]
    return q.to(torch.float8_e4m3fn).contiguous(), scale.float().contiguous()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokenizer-dir", required=True)
    ap.add_argument("--experts", type=int, default=32)
    ap.add_argument("--layers", type=int, default=2, help="layers (the first dense, the rest MoE)")
    ap.add_argument("--shard-gb", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = dict(V3_REDUCED, n_routed_experts=args.experts, num_hidden_layers=args.layers)
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(Path(args.tokenizer_dir) / f, out / f)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    shard, shard_bytes, files, index = {}, 0, [], {}
    params, stored = 0, 0

    def put(name, t):
        nonlocal shard_bytes, stored
        t = t.cpu().contiguous()
        shard[name] = t
        b = t.numel() * t.element_size()
        shard_bytes += b
        stored += b

    def flush():
        nonlocal shard, shard_bytes
        if shard:
            name = f"model-{len(files) + 1:05d}.safetensors"
            save_file(shard, str(out / name), metadata={"format": "pt"})
            files.append(name)
            for k in shard:
                index[k] = name
            shard, shard_bytes = {}, 0

    for name, shape, kind in tensors(cfg):
        params += torch.Size(shape).numel()
        if kind == "norm":
            put(name, (1.0 + 0.1 * torch.randn(shape, generator=gen, device=dev)).to(torch.bfloat16))
        elif kind == "bias":
            put(name, 0.1 * torch.randn(shape, generator=gen, device=dev))
        else:
            # unit-variance outputs; lognormal spread of row magnitudes so block scales differ
            w = torch.randn(shape, generator=gen, device=dev) / shape[1] ** 0.5
            if kind == "fp8":
                w = w * torch.exp(0.5 * torch.randn((shape[0], 1), generator=gen, device=dev))
                q, s = quantize(w)
                put(name, q)
                put(name + "_scale_inv", s)
            else:
                put(name, w.to(torch.bfloat16))
        if shard_bytes >= args.shard_gb * 1e9:
            flush()
    flush()
    n = len(files)
    final = {}
    for i, f in enumerate(files):
        new = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        (out / f).rename(out / new)
        final[f] = new
    weight_map = {k: final[v] for k, v in index.items()}
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": stored}, "weight_map": weight_map}, indent=1))
    print(f"wrote {out}: {params:,} parameters ({params / 1e9:.2f} B), {stored / 1e9:.2f} GB in {n} shards")


if __name__ == "__main__":
    main()

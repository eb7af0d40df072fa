"""DeepSeek-V2 (MLA + DeepSeekMoE) in plain PyTorch, for training.

The math is transformers' DeepseekV2ForCausalLM (the reference: check.py compares logits), and the
parameter names are transformers' in-memory names (fused experts `gate_up_proj` [E, 2*I, H] and
`down_proj` [E, H, I]), so a state dict loads into either. `hub_tensors` renames them to the
hub's per-expert layout that mlahost and `from_pretrained` read. Only torch is needed: the GPU
machine may have nothing else.

Training differs from the reference only in how routed experts are evaluated: every expert runs
on every token and the outputs are mixed with the router weights, which are zero outside each
token's top-k. That is the same function (0 * x adds exactly nothing) computed with three
large matmuls instead of a Python loop over experts with gathers.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn


# --------------------------------------------------------------------------------------
# Rotary embedding (YaRN) and the softmax scale, as transformers computes them
# --------------------------------------------------------------------------------------


def _yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def rope_parameters(cfg: dict) -> tuple[torch.Tensor, float]:
    """(inv_freq [rope_dim / 2], attention_factor) for the config's rope_scaling (yarn or none)."""
    dim = cfg["qk_rope_head_dim"]
    base = float(cfg.get("rope_theta", 10000.0))
    pos_freqs = base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim)
    rs = cfg.get("rope_scaling") or {}
    if rs.get("type", rs.get("rope_type", "default")) != "yarn":
        return 1.0 / pos_freqs, 1.0
    factor = rs["factor"]
    mscale, mscale_all = rs.get("mscale"), rs.get("mscale_all_dim")
    if mscale and mscale_all:
        attention_factor = float(_yarn_mscale(factor, mscale) / _yarn_mscale(factor, mscale_all))
    else:
        attention_factor = _yarn_mscale(factor)
    beta_fast, beta_slow = rs.get("beta_fast") or 32, rs.get("beta_slow") or 1
    orig = rs["original_max_position_embeddings"]

    def correction_dim(rotations: float) -> float:
        return (dim * math.log(orig / (rotations * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if rs.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low), 0, 1)
    extrapolation = 1 - ramp
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    return inv_freq, attention_factor


def softmax_scale(cfg: dict) -> float:
    scale = (cfg["qk_nope_head_dim"] + cfg["qk_rope_head_dim"]) ** -0.5
    rs = cfg.get("rope_scaling") or {}
    if rs.get("type", rs.get("rope_type", "default")) == "yarn" and rs.get("mscale_all_dim"):
        m = _yarn_mscale(rs["factor"], rs["mscale_all_dim"])
        scale = scale * m * m
    return scale


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotates consecutive pairs (x[2i], x[2i+1]) in f32, as transformers' complex multiply does."""
    xf = x.float().reshape(*x.shape[:-1], -1, 2)
    a, b = xf[..., 0], xf[..., 1]
    out = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1)
    return out.flatten(-2).type_as(x)


# --------------------------------------------------------------------------------------
# Modules (names as in transformers)
# --------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class Attention(nn.Module):
    """MLA: queries from q_proj; keys/values from the normalized latent (kv_lora_rank) through
    kv_b_proj, plus one rotary key head (qk_rope_head_dim) shared by all heads."""

    def __init__(self, cfg: dict):
        super().__init__()
        h, nh = cfg["hidden_size"], cfg["num_attention_heads"]
        self.nh, self.nope, self.rope = nh, cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"]
        self.vdim, self.rank = cfg["v_head_dim"], cfg["kv_lora_rank"]
        assert cfg.get("q_lora_rank") is None, "this trainer builds the V2-Lite form (no q-LoRA)"
        self.q_proj = nn.Linear(h, nh * (self.nope + self.rope), bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(h, self.rank + self.rope, bias=False)
        self.kv_a_layernorm = RMSNorm(self.rank, 1e-6)  # transformers uses its default eps here
        self.kv_b_proj = nn.Linear(self.rank, nh * (self.nope + self.vdim), bias=False)
        self.o_proj = nn.Linear(nh * self.vdim, h, bias=False)
        self.scale = softmax_scale(cfg)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.nh, self.nope + self.rope).transpose(1, 2)
        q_nope, q_pe = q.split([self.nope, self.rope], dim=-1)
        latent, k_pe = self.kv_a_proj_with_mqa(x).split([self.rank, self.rope], dim=-1)
        kv = self.kv_b_proj(self.kv_a_layernorm(latent)).view(b, t, self.nh, self.nope + self.vdim).transpose(1, 2)
        k_nope, v = kv.split([self.nope, self.vdim], dim=-1)
        q_pe = apply_rope(q_pe, cos, sin)
        k_pe = apply_rope(k_pe.view(b, 1, t, self.rope), cos, sin).expand(b, self.nh, t, self.rope)
        q = torch.cat((q_nope, q_pe), dim=-1)
        k = torch.cat((k_nope, k_pe), dim=-1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.nh * self.vdim))


class MLP(nn.Module):
    def __init__(self, h: int, inter: int):
        super().__init__()
        self.gate_proj = nn.Linear(h, inter, bias=False)
        self.up_proj = nn.Linear(h, inter, bias=False)
        self.down_proj = nn.Linear(inter, h, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Router(nn.Module):
    """Softmax scores in f32, greedy top-k, weights times routed_scaling_factor (DeepSeek-V2:
    no renormalization, whatever norm_topk_prob says, as in transformers' V2 router)."""

    def __init__(self, cfg: dict):
        super().__init__()
        assert cfg["topk_method"] == "greedy" and cfg["scoring_func"] == "softmax"
        self.weight = nn.Parameter(torch.zeros(cfg["n_routed_experts"], cfg["hidden_size"]))
        self.k = cfg["num_experts_per_tok"]
        self.scaling = cfg["routed_scaling_factor"]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        with torch.autocast(x.device.type, enabled=False):
            scores = F.linear(x.float(), self.weight.float()).softmax(dim=-1)
        w, idx = torch.topk(scores, self.k, dim=-1)
        return scores, w * self.scaling, idx


class Experts(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        e, h, i = cfg["n_routed_experts"], cfg["hidden_size"], cfg["moe_intermediate_size"]
        self.gate_up_proj = nn.Parameter(torch.empty(e, 2 * i, h))
        self.down_proj = nn.Parameter(torch.empty(e, h, i))
        self.e, self.h, self.i = e, h, i

    def forward(self, x: torch.Tensor, mix: torch.Tensor) -> torch.Tensor:
        """x [N, H]; mix [N, E] router weights, zero outside each token's top-k."""
        n = x.shape[0]
        gu = F.linear(x, self.gate_up_proj.reshape(self.e * 2 * self.i, self.h)).view(n, self.e, 2 * self.i)
        gate, up = gu.split(self.i, dim=-1)
        act = F.silu(gate) * up * mix.unsqueeze(-1).to(gu.dtype)
        down = self.down_proj.permute(1, 0, 2).reshape(self.h, self.e * self.i)
        return F.linear(act.reshape(n, self.e * self.i), down)


class Moe(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.experts = Experts(cfg)
        self.gate = Router(cfg)
        self.shared_experts = MLP(cfg["hidden_size"], cfg["moe_intermediate_size"] * cfg["n_shared_experts"])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Output and DeepSeek's sequence-wise balance loss (1 when the load is even)."""
        b, t, h = x.shape
        scores, w, idx = self.gate(x.reshape(-1, h))
        mix = torch.zeros_like(scores).scatter(1, idx, w)
        out = self.experts(x.reshape(-1, h), mix).view(b, t, h) + self.shared_experts(x)
        e, k = scores.shape[-1], idx.shape[-1]
        picked = torch.zeros_like(scores).scatter(1, idx, 1.0)  # one-hot of the top-k, no device sync
        load = picked.view(b, t, e).mean(1) * (e / k)  # [B, E]: share of routed slots * E
        aux = (load * scores.view(b, t, e).mean(1)).sum(-1).mean()
        return out, aux


class DecoderLayer(nn.Module):
    def __init__(self, cfg: dict, layer: int):
        super().__init__()
        self.self_attn = Attention(cfg)
        dense = layer < cfg["first_k_dense_replace"]
        self.mlp = MLP(cfg["hidden_size"], cfg["intermediate_size"]) if dense else Moe(cfg)
        self.input_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])
        self.post_attention_layernorm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])

    def forward(self, x, cos, sin) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        y = self.mlp(self.post_attention_layernorm(x))
        y, aux = y if isinstance(y, tuple) else (y, None)
        return x + y, aux


class Backbone(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.layers = nn.ModuleList(DecoderLayer(cfg, i) for i in range(cfg["num_hidden_layers"]))
        self.norm = RMSNorm(cfg["hidden_size"], cfg["rms_norm_eps"])


class DeepseekV2(nn.Module):
    def __init__(self, cfg: dict):
        super().__init__()
        assert not cfg.get("tie_word_embeddings", False)
        self.cfg = cfg
        self.model = Backbone(cfg)
        self.lm_head = nn.Linear(cfg["hidden_size"], cfg["vocab_size"], bias=False)
        inv_freq, self.attention_factor = rope_parameters(cfg)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def init_weights(self, generator: torch.Generator, std: float = 0.02) -> None:
        """N(0, std) everywhere, residual-branch outputs (o_proj, down projections) scaled by
        1/sqrt(2 * layers); norms 1."""
        out_std = std / math.sqrt(2 * self.cfg["num_hidden_layers"])
        for name, p in self.named_parameters():
            if name.endswith("layernorm.weight") or name == "model.norm.weight":
                nn.init.ones_(p)
            else:
                s = out_std if name.endswith(("o_proj.weight", "down_proj.weight", "down_proj")) else std
                with torch.no_grad():
                    p.copy_(torch.randn(p.shape, generator=generator) * s)

    def forward(self, ids: torch.Tensor, with_aux: bool = False):
        """Logits [B, T, V]; with_aux: (logits, mean balance loss of the MoE layers)."""
        t = ids.shape[1]
        freqs = torch.arange(t, device=ids.device, dtype=torch.float32)[:, None] * self.inv_freq[None, :]
        cos, sin = freqs.cos() * self.attention_factor, freqs.sin() * self.attention_factor
        x = self.model.embed_tokens(ids)
        aux = []
        for layer in self.model.layers:
            x, a = layer(x, cos, sin)
            if a is not None:
                aux.append(a)
        logits = self.lm_head(self.model.norm(x))
        if not with_aux:
            return logits
        return logits, (torch.stack(aux).mean() if aux else logits.new_zeros((), dtype=torch.float32))


# --------------------------------------------------------------------------------------
# Hub layout
# --------------------------------------------------------------------------------------


def hub_tensors(state: dict[str, torch.Tensor], cfg: dict) -> "OrderedDict[str, torch.Tensor]":
    """transformers' in-memory names -> the hub's names, in the hub's order (experts split into
    experts.{e}.{gate,up,down}_proj.weight)."""
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    out["model.embed_tokens.weight"] = state["model.embed_tokens.weight"]
    inter = cfg["moe_intermediate_size"]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        for name in ("input_layernorm.weight", "self_attn.q_proj.weight", "self_attn.kv_a_proj_with_mqa.weight",
                     "self_attn.kv_a_layernorm.weight", "self_attn.kv_b_proj.weight", "self_attn.o_proj.weight",
                     "post_attention_layernorm.weight"):
            out[p + name] = state[p + name]
        if i < cfg["first_k_dense_replace"]:
            for proj in ("gate_proj", "up_proj", "down_proj"):
                out[p + f"mlp.{proj}.weight"] = state[p + f"mlp.{proj}.weight"]
            continue
        out[p + "mlp.gate.weight"] = state[p + "mlp.gate.weight"]
        gate_up, down = state[p + "mlp.experts.gate_up_proj"], state[p + "mlp.experts.down_proj"]
        for e in range(cfg["n_routed_experts"]):
            out[p + f"mlp.experts.{e}.gate_proj.weight"] = gate_up[e, :inter]
            out[p + f"mlp.experts.{e}.up_proj.weight"] = gate_up[e, inter:]
            out[p + f"mlp.experts.{e}.down_proj.weight"] = down[e]
        for proj in ("gate_proj", "up_proj", "down_proj"):
            out[p + f"mlp.shared_experts.{proj}.weight"] = state[p + f"mlp.shared_experts.{proj}.weight"]
    out["model.norm.weight"] = state["model.norm.weight"]
    out["lm_head.weight"] = state["lm_head.weight"]
    return out


def from_hub_tensors(hub: dict[str, torch.Tensor], cfg: dict) -> dict[str, torch.Tensor]:
    """The inverse of hub_tensors."""
    state = {k: v for k, v in hub.items() if ".mlp.experts." not in k}
    inter = cfg["moe_intermediate_size"]
    for i in range(cfg["first_k_dense_replace"], cfg["num_hidden_layers"]):
        p = f"model.layers.{i}.mlp.experts."
        n = cfg["n_routed_experts"]
        state[p + "gate_up_proj"] = torch.stack(
            [torch.cat([hub[p + f"{e}.gate_proj.weight"], hub[p + f"{e}.up_proj.weight"]]) for e in range(n)])
        state[p + "down_proj"] = torch.stack([hub[p + f"{e}.down_proj.weight"] for e in range(n)])
        assert state[p + "gate_up_proj"].shape[1] == 2 * inter
    return state

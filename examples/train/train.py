#!/usr/bin/env python3
"""Train the built-in English model (DeepSeek-V2 architecture) and export a hub checkpoint.

    python3 examples/train/train.py --data .train/data --out OUT [--return-dir DIR]
        [--max-seconds 480] [--steps auto|N] [--compile]

Needs only torch (CUDA if present). Reads what tokenize_corpus.py wrote (token ids, tokenizer
files, sample prompts) and writes:
  OUT/model/     config.json, generation_config.json, model.safetensors (bf16, hub names),
                 tokenizer.json, tokenizer_config.json
  OUT/loss.csv   step, tokens, lr, train loss (mean since the last row), held-out loss, seconds
  OUT/result.json  parameters, steps, held-out perplexity of the model and of the unigram
                 baseline on the same tokens, greedy sample completions, timings, the config
                 and the SHA-256 of model.safetensors
With --return-dir DIR, loss.csv, result.json and model.safetensors cut into pieces of at most
15 MiB (model.safetensors.partN) are also copied to DIR: a GPU machine's $OUT takes few files of
at most 16 MiB. assemble.py puts the checkpoint back together.

Deterministic for a given --steps (fixed seeds, deterministic algorithms; the data order comes
from a seeded generator). --steps auto times the first steps and picks the number that fits
--max-seconds, then prints it: pass that number back to repeat the run exactly. --max-seconds is
also a hard stop for training (the run still evaluates and exports), counted from the start of
the process, so the whole command stays within it.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

T0 = time.monotonic()
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import safetensors_io  # noqa: E402
from model import DeepseekV2, hub_tensors  # noqa: E402

# Time kept back from --max-seconds for the final evaluation, the samples and the export.
RESERVE_S = 40.0
PART_BYTES = 15 << 20


def model_config(preset: str, vocab: int, seq: int) -> dict:
    """The hub config.json. YaRN: the model is trained on seq-token windows with rope_scaling
    already in place (original_max_position_embeddings = seq, factor 4), as DeepSeek-V2's
    configs carry it; max_position_embeddings is seq * factor."""
    dims = {
        "default": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, kv_lora_rank=128,
                        qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64, intermediate_size=1024,
                        moe_intermediate_size=128, n_routed_experts=8, n_shared_experts=2, num_experts_per_tok=2),
        "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, kv_lora_rank=32,
                     qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=16, intermediate_size=128,
                     moe_intermediate_size=32, n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2),
    }[preset]
    factor = 4
    return {
        "architectures": ["DeepseekV2ForCausalLM"],
        "model_type": "deepseek_v2",
        "vocab_size": vocab,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": None,
        "hidden_act": "silu",
        "max_position_embeddings": seq * factor,
        "rms_norm_eps": 1e-6,
        "rope_theta": 10000,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "initializer_range": 0.02,
        "use_cache": True,
        "pretraining_tp": 1,
        "ep_size": 1,
        "moe_layer_freq": 1,
        "aux_loss_alpha": 0.01,
        "seq_aux": True,
        **dims,
        "first_k_dense_replace": 1,
        "num_key_value_heads": dims["num_attention_heads"],
        "q_lora_rank": None,
        "topk_method": "greedy",
        "scoring_func": "softmax",
        "norm_topk_prob": False,
        "routed_scaling_factor": 1.0,
        "n_group": 1,
        "topk_group": 1,
        "rope_scaling": {"type": "yarn", "factor": factor, "original_max_position_embeddings": seq,
                         "beta_fast": 32, "beta_slow": 1, "mscale": 0.707, "mscale_all_dim": 0.707},
        "torch_dtype": "bfloat16",
    }


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


def load_ids(path: Path) -> torch.Tensor:
    raw = bytearray(path.read_bytes())
    return (torch.frombuffer(raw, dtype=torch.int16).to(torch.int64) & 0xFFFF)


class Batches:
    """Non-overlapping (seq + 1)-token windows of the train stream, reshuffled each epoch with a
    seeded generator and a random phase, so every epoch sees new window boundaries."""

    def __init__(self, ids: torch.Tensor, seq: int, batch: int, seed: int, device: torch.device):
        self.ids, self.seq, self.batch = ids.to(device), seq, batch
        self.gen = torch.Generator().manual_seed(seed)
        self.order = torch.empty(0, dtype=torch.int64)
        self.epoch = -1
        self.arange = torch.arange(seq + 1, device=device)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.order.numel() < self.batch:
            self.epoch += 1
            phase = int(torch.randint(0, self.seq, (1,), generator=self.gen))
            n = (self.ids.numel() - phase - 1) // self.seq
            self.order = phase + self.seq * torch.randperm(n, generator=self.gen)
        starts, self.order = self.order[:self.batch], self.order[self.batch:]
        w = self.ids[starts.to(self.ids.device)[:, None] + self.arange]
        return w[:, :-1], w[:, 1:]


@torch.no_grad()
def heldout_nll(model, ids: torch.Tensor, seq: int, batch: int, device, autocast, limit: int | None = None):
    """Sum of -log p and count over the held-out stream cut into consecutive windows (each token
    after a window's first is predicted from the window before it)."""
    n = (ids.numel() - 1) // seq
    if limit:
        n = min(n, limit)
    x_all = ids[:n * seq].view(n, seq)
    y_all = ids[1:n * seq + 1].view(n, seq)
    total, count = 0.0, 0
    model.eval()
    for i in range(0, n, batch):
        x, y = x_all[i:i + batch].to(device), y_all[i:i + batch].to(device)
        with autocast():
            logits = model(x)
        total += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    model.train()
    return total, count, y_all.flatten()


@torch.no_grad()
def expert_load(model, x: torch.Tensor, autocast) -> dict[str, list[float]]:
    """Share of routed slots each expert gets, per MoE layer, on a batch (1/E each is even)."""
    picks, hooks = {}, []
    for i, layer in enumerate(model.model.layers):
        if hasattr(layer.mlp, "gate"):
            def hook(mod, inp, out, i=i):
                picks[i] = out[2].flatten()
            hooks.append(layer.mlp.gate.register_forward_hook(hook))
    model.eval()
    with autocast():
        model(x)
    model.train()
    for h in hooks:
        h.remove()
    e = model.cfg["n_routed_experts"]
    return {f"layer{i}": [round(float(c), 4) for c in torch.bincount(p, minlength=e).float() / p.numel()]
            for i, p in sorted(picks.items())}


def unigram_nll(train_ids: torch.Tensor, targets: torch.Tensor, vocab: int) -> float:
    """Mean -log p of the targets under add-one-smoothed unigram frequencies of the train split."""
    counts = torch.bincount(train_ids, minlength=vocab).double() + 1.0
    logp = (counts / counts.sum()).log()
    return float(-logp[targets].mean())


# --------------------------------------------------------------------------------------
# Samples (byte-level BPE decoding without the tokenizers library)
# --------------------------------------------------------------------------------------


def byte_decoder() -> dict[str, int]:
    """GPT-2's byte <-> printable-character table, inverted."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, n = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return {c: b for b, c in chars.items()}


def decoder(tokenizer_json: Path):
    tok = json.loads(tokenizer_json.read_text())
    vocab = {i: s for s, i in tok["model"]["vocab"].items()}
    special = {t["id"]: t["content"] for t in tok["added_tokens"]}
    bd = byte_decoder()

    def decode(ids: list[int]) -> str:
        out = bytearray()
        for i in ids:
            if i in special:
                out += special[i].encode()
            elif i in vocab:
                out += bytes(bd[c] for c in vocab[i])
        return out.decode("utf-8", errors="replace")

    return decode


@torch.no_grad()
def greedy(model, prompt: list[int], n: int, device, autocast, eos: int) -> list[int]:
    """Greedy continuation by full recomputation (no cache: short and simple)."""
    model.eval()
    ids = list(prompt)
    for _ in range(n):
        with autocast():
            logits = model(torch.tensor([ids], device=device))
        nxt = int(logits[0, -1].float().argmax())
        ids.append(nxt)
        if nxt == eos:
            break
    model.train()
    return ids[len(prompt):]


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def lr_at(step: int, steps: int, lr: float, warmup: int, final_frac: float) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    p = min(1.0, (step - warmup) / max(1, steps - warmup))
    return lr * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def export(model: DeepseekV2, cfg: dict, data: Path, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu() for k, v in model.state_dict().items()}
    tensors = {k: v.to(torch.bfloat16).contiguous() for k, v in hub_tensors(state, cfg).items()}
    safetensors_io.save(tensors, out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (out / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 0, "eos_token_id": 1, "do_sample": False}, indent=2) + "\n")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (out / name).write_bytes((data / name).read_bytes())
    return sum(t.numel() for t in tensors.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path(".train/data"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--preset", choices=["default", "tiny"], default="default")
    ap.add_argument("--steps", default="auto", help="optimizer steps, or auto (fit --max-seconds)")
    ap.add_argument("--return-dir", type=Path, help="also copy the results here in small pieces")
    ap.add_argument("--max-seconds", type=float, default=480.0, help="wall budget of the whole command")
    ap.add_argument("--compile", action="store_true", help="torch.compile the training step's forward")
    ap.add_argument("--max-epochs", type=float, default=10.0, help="cap for --steps auto")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--log-every", type=int, default=50)
    ap.add_argument("--sample-tokens", type=int, default=40)
    ap.add_argument("--heldout-windows", type=int, help="limit the final evaluation (quick CPU trials)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    assert args.warmup >= 40, "--steps auto times steps 10..39, which must not depend on the step count"

    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

        def autocast():
            return torch.autocast("cuda", dtype=torch.bfloat16)
    else:
        import contextlib

        def autocast():
            return contextlib.nullcontext()

    meta = json.loads((args.data / "data.json").read_text())
    train_ids = load_ids(args.data / "train.bin")
    held_ids = load_ids(args.data / "heldout.bin")
    vocab = meta["vocab_size"]
    cfg = model_config(args.preset, vocab, args.seq)
    model = DeepseekV2(cfg)
    model.init_weights(torch.Generator().manual_seed(args.seed))
    model.to(device)
    n_params = sum(p.numel() for p in model.parameters())
    tokens_per_step = args.batch * args.seq
    print(f"{n_params / 1e6:.2f}M parameters, {train_ids.numel():,} train tokens, device {device}"
          f" ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), torch {torch.__version__}",
          flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, **({"fused": True} if device.type == "cuda" else {}))
    fwd = torch.compile(model) if args.compile else model  # evaluation and samples stay eager
    batches = Batches(train_ids, args.seq, args.batch, args.seed, device)
    alpha = cfg["aux_loss_alpha"]
    deadline = T0 + args.max_seconds - RESERVE_S
    max_steps = int(args.max_epochs * train_ids.numel() / tokens_per_step)
    steps = None if args.steps == "auto" else int(args.steps)
    timing_from, timing_steps = None, 0  # the auto step count is measured over steps 10..39

    args.out.mkdir(parents=True, exist_ok=True)
    log = open(args.out / "loss.csv", "w", newline="")
    writer = csv.writer(log)
    writer.writerow(["step", "tokens", "lr", "train_loss", "heldout_loss", "seconds"])
    run_loss, run_n, step, stopped_early = 0.0, 0, 0, False
    t_train = time.monotonic()
    while steps is None or step < steps:
        if time.monotonic() > deadline:
            stopped_early = True
            break
        if steps is None and step == 10:
            if device.type == "cuda":
                torch.cuda.synchronize()
            timing_from = time.monotonic()
        if steps is None and step == 40:
            if device.type == "cuda":
                torch.cuda.synchronize()
            per_step = (time.monotonic() - timing_from) / 30
            # 3% margin for the periodic evaluations.
            steps = min(max_steps, 40 + int((deadline - time.monotonic()) / per_step * 0.97))
            print(f"--steps auto: {per_step * 1000:.1f} ms/step -> {steps} steps "
                  f"({steps * tokens_per_step / train_ids.numel():.1f} epochs); repeat with --steps {steps}", flush=True)
        sched_steps = steps if steps is not None else 10**9  # during timing: still in warmup
        lr = lr_at(step, sched_steps, args.lr, args.warmup, 0.1)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = batches.next()
        with autocast():
            logits, aux = fwd(x, with_aux=True)
        loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
        total = loss + alpha * aux
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        run_loss += loss.detach()
        run_n += 1
        last = steps is not None and step == steps
        held = ""
        if step % args.eval_every == 0 or last:
            tot, cnt, _ = heldout_nll(model, held_ids, args.seq, args.batch, device, autocast, limit=args.batch)
            held = f"{tot / cnt:.4f}"
        if step % args.log_every == 0 or held or last:
            tl = float(run_loss) / run_n
            writer.writerow([step, step * tokens_per_step, f"{lr:.3e}", f"{tl:.4f}", held,
                             f"{time.monotonic() - T0:.1f}"])
            log.flush()
            print(f"step {step} lr {lr:.2e} loss {tl:.4f}" + (f" heldout {held}" if held else "")
                  + f" t {time.monotonic() - T0:.0f}s", flush=True)
            run_loss, run_n = 0.0, 0
    train_seconds = time.monotonic() - t_train
    if run_n:  # the steps since the last row (a run stopped by --max-seconds)
        writer.writerow([step, step * tokens_per_step, f"{lr:.3e}", f"{float(run_loss) / run_n:.4f}", "",
                         f"{time.monotonic() - T0:.1f}"])
    log.close()

    # Final evaluation on the whole held-out split, against the unigram baseline on the same tokens.
    tot, cnt, targets = heldout_nll(model, held_ids, args.seq, args.batch, device, autocast, args.heldout_windows)
    nll = tot / cnt
    uni = unigram_nll(train_ids, targets, vocab)
    tokens_per_byte = meta["heldout"]["tokens"] / meta["heldout"]["bytes"]

    n_eval = min(args.batch, (held_ids.numel() - 1) // args.seq)
    load = expert_load(model, held_ids[:n_eval * args.seq].view(n_eval, args.seq).to(device), autocast)
    decode = decoder(args.data / "tokenizer.json")
    samples = []
    for p in json.loads((args.data / "prompts.json").read_text()):
        out_ids = greedy(model, p["ids"], args.sample_tokens, device, autocast, meta["eos_token_id"])
        samples.append({"prompt": p["text"], "completion": decode(out_ids), "ids": out_ids})
        print(f"--- {p['text']!r}\n{samples[-1]['completion']}", flush=True)

    n_export = export(model, cfg, args.data, args.out / "model")
    weights = (args.out / "model" / "model.safetensors").read_bytes()
    result = {
        "parameters": n_params,
        "exported_parameters": n_export,
        "preset": args.preset,
        "steps": step,
        "planned_steps": steps,
        "stopped_early_by_max_seconds": stopped_early,
        "tokens_seen": step * tokens_per_step,
        "epochs": step * tokens_per_step / train_ids.numel(),
        "train_seconds": round(train_seconds, 1),
        "heldout_tokens": cnt,
        "heldout_loss": nll,
        "heldout_perplexity": math.exp(nll),
        "unigram_perplexity": math.exp(uni),
        "heldout_bits_per_byte": nll / math.log(2) * tokens_per_byte,
        "expert_load_heldout": load,
        "args": {k: str(v) for k, v in vars(args).items()},
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "samples": samples,
        "config": cfg,
        "model_safetensors_sha256": hashlib.sha256(weights).hexdigest(),
        "model_safetensors_bytes": len(weights),
        "total_seconds": round(time.monotonic() - T0, 1),
    }
    (args.out / "result.json").write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    if args.return_dir:
        args.return_dir.mkdir(parents=True, exist_ok=True)
        for name in ("loss.csv", "result.json"):
            (args.return_dir / name).write_bytes((args.out / name).read_bytes())
        for i in range(0, len(weights), PART_BYTES):
            (args.return_dir / f"model.safetensors.part{i // PART_BYTES}").write_bytes(weights[i:i + PART_BYTES])
    print(f"held-out perplexity {math.exp(nll):.2f} (unigram baseline {math.exp(uni):.2f}) over {cnt:,} tokens; "
          f"{step} steps in {train_seconds:.0f}s; total {time.monotonic() - T0:.0f}s", flush=True)


if __name__ == "__main__":
    main()

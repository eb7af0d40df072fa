#!/usr/bin/env python3
"""Check an exported checkpoint against Hugging Face transformers and mlahost's CPU engine.

    python3 examples/train/check.py MODEL_DIR [--mlahost PATH] [--tokens 24]
    python3 examples/train/check.py --random default --data .train/data [--mlahost PATH]

1. transformers loads MODEL_DIR as DeepseekV2ForCausalLM (no missing or unexpected weights) and
   every loaded parameter equals the file's tensor.
2. The training module (model.py) given the same weights gives the same logits as transformers
   (f32, CPU; the only difference allowed is summation order).
3. Greedy decoding: transformers (KV cache, never stopping at EOS) and `mlahost generate` give
   the same tokens for text prompts, a chat prompt and raw ids; prompt tokenization is compared
   too (mlahost's tokenizer vs AutoTokenizer).

--random PRESET exports a randomly initialized model of that preset (weights drawn wider than
at training start, so logits and routing are far from uniform) and checks that instead: this
tests the export and the math without a trained model.
"""

from __future__ import annotations

import argparse
import inspect
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

torch.set_num_threads(2)
sys.path.insert(0, str(Path(__file__).resolve().parent))
import safetensors_io  # noqa: E402
from model import DeepseekV2, from_hub_tensors  # noqa: E402

PROMPTS = ["The quick brown fox", "A computer is", "Once upon a time, in a small village by the sea,"]
CHAT = [{"role": "user", "content": 'What does "ocean" mean?'}]


def load_reference(model_dir: Path):
    from transformers import AutoModelForCausalLM

    model, info = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32,
                                                       attn_implementation="eager", output_loading_info=True)
    for key in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"):
        assert not info.get(key), f"from_pretrained reported {key}: {info.get(key)}"
    assert type(model).__name__ == "DeepseekV2ForCausalLM", type(model).__name__
    return model.eval()


def check_weights(ref, state: dict[str, torch.Tensor]) -> int:
    sd = ref.state_dict()
    assert set(sd) == set(state), (sorted(set(sd) ^ set(state)))[:10]
    for k, v in sd.items():
        assert torch.equal(v, state[k]), f"{k} differs after loading"
    return len(sd)


@torch.no_grad()
def greedy_reference(ref, prompt: list[int], n: int) -> tuple[list[int], list[float]]:
    out = ref(input_ids=torch.tensor([prompt]), use_cache=True)
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    # transformers renamed past_key_values to cache; use whichever this version's forward names.
    cache_arg = "cache" if "cache" in inspect.signature(ref.forward).parameters else "past_key_values"
    ids, margins = [], []
    for step in range(n):
        logits = out.logits[0, -1]
        top2 = torch.topk(logits, 2).values
        nxt = int(logits.argmax())
        ids.append(nxt)
        margins.append(float(top2[0] - top2[1]))
        if step == n - 1:
            break
        mask = torch.ones(1, len(prompt) + len(ids), dtype=torch.long)
        out = ref(input_ids=torch.tensor([[nxt]]), attention_mask=mask, use_cache=True, **{cache_arg: cache})
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
    return ids, margins


def mlahost(binary: str, model_dir: Path, n: int, ids: list[int] | None = None, text: str | None = None) -> dict:
    cmd = [binary, "generate", "--model", str(model_dir), "--max-tokens", str(n), "--ignore-eos", "--json"]
    cmd += ["--prompt-ids", ",".join(map(str, ids))] if ids is not None else ["--prompt", text]
    res = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(res.stdout)


def check(model_dir: Path, binary: str | None, n: int) -> dict:
    from transformers import AutoTokenizer

    cfg = json.loads((model_dir / "config.json").read_text())
    hub = {k: v.float() for k, v in safetensors_io.load(model_dir / "model.safetensors").items()}
    state = from_hub_tensors(hub, cfg)
    ref = load_reference(model_dir)
    n_params = check_weights(ref, state)

    ours = DeepseekV2(cfg)
    missing, unexpected = ours.load_state_dict(state, strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    ours.eval()
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    g = torch.Generator().manual_seed(7)
    seqs = [tok(p)["input_ids"] for p in PROMPTS] + [[0] + torch.randint(3, cfg["vocab_size"], (150,), generator=g).tolist()]
    worst, scale = 0.0, 0.0
    with torch.no_grad():
        for s in seqs:
            a = ref(input_ids=torch.tensor([s]), use_cache=False).logits[0]
            b = ours(torch.tensor([s]))[0]
            worst, scale = max(worst, float((a - b).abs().max())), max(scale, float(a.abs().max()))
    # f32 rounding only (attention and expert sums run in another order): relative 1e-4 at most.
    assert worst < 1e-4 * scale, f"training module logits differ from transformers by {worst} (max |logit| {scale})"
    print(f"weights: {n_params} parameters loaded by transformers equal the file; "
          f"training module vs transformers max |dlogit| {worst:.2e} (max |logit| {scale:.1f})")

    cases = [{"name": p, "ids": tok(p)["input_ids"], "text": p} for p in PROMPTS]
    rendered = tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    cases.append({"name": "chat", "ids": tok(rendered, add_special_tokens=False)["input_ids"], "text": None})
    cases.append({"name": "raw ids", "ids": seqs[-1][:40], "text": None})
    report = {"parameters": n_params, "module_max_abs_dlogit": worst, "max_abs_logit": scale, "cases": []}
    for c in cases:
        want, margins = greedy_reference(ref, c["ids"], n)
        row = {"name": c["name"], "reference": want, "min_margin": min(margins),
               "text": tok.decode(want)}
        if binary:
            got = mlahost(binary, model_dir, n, ids=c["ids"])
            row["mlahost"] = got["token_ids"]
            row["equal"] = got["token_ids"] == want
            if c["text"] is not None:
                row["tokenizer_equal"] = mlahost(binary, model_dir, 1, text=c["text"])["prompt_token_ids"] == c["ids"]
        report["cases"].append(row)
        status = "" if not binary else (" equal" if row["equal"] else " DIFFERENT") + (
            "" if "tokenizer_equal" not in row else (", tokenizer equal" if row["tokenizer_equal"] else ", TOKENIZER DIFFERS"))
        print(f"{c['name']!r}: min margin {row['min_margin']:.3g}{status}: {row['text']!r}")
    if binary:
        bad = [c["name"] for c in report["cases"] if not c["equal"] or c.get("tokenizer_equal") is False]
        assert not bad, f"mlahost differs from transformers on {bad}"
    return report


def random_checkpoint(preset: str, data: Path, out: Path) -> Path:
    import train

    meta = json.loads((data / "data.json").read_text())
    cfg = train.model_config(preset, meta["vocab_size"], 512)
    model = DeepseekV2(cfg)
    model.init_weights(torch.Generator().manual_seed(99), std=0.15)
    with torch.no_grad():  # a sharper router and lm_head, so the routing and the argmax mean something
        for name, p in model.named_parameters():
            if name.endswith("mlp.gate.weight") or name == "lm_head.weight":
                p.mul_(4.0)
    train.export(model, cfg, data, out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", type=Path, nargs="?")
    ap.add_argument("--random", choices=["default", "tiny"])
    ap.add_argument("--data", type=Path, default=Path(".train/data"))
    ap.add_argument("--mlahost", help="mlahost binary for the greedy comparison")
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--report", type=Path, help="write the comparison as JSON here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = random_checkpoint(args.random, args.data, Path(tmp) / "random") if args.random else args.model_dir
        report = check(model_dir, args.mlahost, args.tokens)
    if args.report:
        args.report.write_text(json.dumps(report, indent=1) + "\n")
    print("ok")


if __name__ == "__main__":
    main()

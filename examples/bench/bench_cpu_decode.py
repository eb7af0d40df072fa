#!/usr/bin/env python3
"""CPU decode benchmark: mlahost vs Hugging Face transformers, side by side on one machine.

    python3 examples/bench/make_bench_checkpoint.py --out /tmp/bench-ckpt
    python3 examples/bench/bench_cpu_decode.py --model /tmp/bench-ckpt \
        --mlahost target/release/mlahost [--prompt-len 32] [--new-tokens 64] [--threads 2]

(a) transformers: from_pretrained(DIR, dtype=float32), batch 1, greedy decode with the KV cache
    (manual loop, all-ones attention_mask, never stopping at EOS). prefill = the forward over the
    prompt (yields token 1); decode = the N-1 single-token forwards that yield tokens 2..N;
    decode tok/s = (N-1) / decode_s. One short untimed warm-up run first.
(b) mlahost: `PATH generate --model DIR --prompt-ids <ids> --max-tokens N --ignore-eos --json`;
    its JSON has "token_ids" and "stats" {"prompt_tokens","load_s","prefill_s","decode_s",
    "decode_tokens_per_s"}; decode_tokens_per_s is taken from there.

Both get the same prompt ids: BOS + fixed-seed random ids. Prints a table with both decode
rates, their ratio and how many leading generated tokens agree. Without --mlahost only (a) runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def prompt_ids(model_dir: Path, n: int, seed: int) -> list[int]:
    import torch

    cfg = json.load(open(model_dir / "config.json"))
    bos = cfg.get("bos_token_id", 0)
    hi = min(cfg["vocab_size"], 100000)  # ordinary (non-special) ids in the DeepSeek tokenizers
    g = torch.Generator().manual_seed(seed)
    return [bos] + torch.randint(3, hi, (n - 1,), generator=g).tolist()


def run_transformers(model_dir: Path, ids: list[int], n_new: int, threads: int, attn: str) -> dict:
    import torch

    torch.set_num_threads(threads)
    from transformers import AutoModelForCausalLM

    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32, attn_implementation=attn)
    model.eval()
    load_s = time.perf_counter() - t0

    @torch.no_grad()
    def decode(prompt: list[int], n: int) -> tuple[list[int], float, float]:
        x = torch.tensor([prompt])
        t = time.perf_counter()
        out = model(input_ids=x, attention_mask=torch.ones_like(x), use_cache=True)
        nxt = int(out.logits[0, -1].argmax())
        prefill = time.perf_counter() - t
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        toks = [nxt]
        top2 = out.logits[0, -1].topk(2).values
        margins.append(float(top2[0] - top2[1]))
        total = len(prompt) + 1
        t = time.perf_counter()
        for _ in range(n - 1):
            out = model(input_ids=torch.tensor([[nxt]]), attention_mask=torch.ones(1, total, dtype=torch.long),
                        cache=cache, use_cache=True)
            cache = out.cache if hasattr(out, "cache") else out.past_key_values
            nxt = int(out.logits[0, -1].argmax())
            toks.append(nxt)
            top2 = out.logits[0, -1].topk(2).values
            margins.append(float(top2[0] - top2[1]))
            total += 1
        return toks, prefill, time.perf_counter() - t

    margins: list[float] = []
    decode(ids[: min(4, len(ids))], 3)  # warm-up, untimed
    margins.clear()
    toks, prefill_s, decode_s = decode(ids, n_new)
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "token_ids": toks,
        "stats": {
            "prompt_tokens": len(ids),
            "load_s": load_s,
            "prefill_s": prefill_s,
            "decode_s": decode_s,
            "decode_tokens_per_s": (n_new - 1) / decode_s if n_new > 1 else float("nan"),
        },
        "params": n_params,
        "margins": margins,
        "threads": threads,
        "attn_implementation": attn,
    }


def parse_json_output(text: str) -> dict:
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    # a pretty-printed object at the end
    start = text.rfind("\n{")
    if start >= 0:
        return json.loads(text[start + 1:])
    raise ValueError("no JSON object in mlahost output")


def run_mlahost(binary: str, model_dir: Path, ids: list[int], n_new: int, threads: int, ids_format: str,
                extra: list[str]) -> dict:
    if ids_format == "comma":
        id_args = [",".join(map(str, ids))]
    elif ids_format == "json":
        id_args = [json.dumps(ids)]
    else:  # args
        id_args = [str(i) for i in ids]
    cmd = [binary, "generate", "--model", str(model_dir), "--prompt-ids", *id_args,
           "--max-tokens", str(n_new), "--ignore-eos", "--json", *extra]
    env = dict(os.environ)
    env.setdefault("RAYON_NUM_THREADS", str(threads))
    env.setdefault("OMP_NUM_THREADS", str(threads))
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-4000:])
        raise SystemExit(f"mlahost exited with {p.returncode}: {' '.join(cmd[:6])} ...")
    res = parse_json_output(p.stdout)
    res["wall_s"] = wall
    return res


def leading_agreement(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path)
    ap.add_argument("--mlahost", default=None, help="path to the mlahost binary (omit to run transformers only)")
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="prompt id seed")
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"], help="transformers attention")
    ap.add_argument("--ids-format", default="comma", choices=["comma", "json", "args"],
                    help="how --prompt-ids is passed to mlahost")
    ap.add_argument("--mlahost-arg", action="append", default=[], help="extra argument for mlahost (repeatable)")
    ap.add_argument("--json-out", type=Path, help="write all results here")
    args = ap.parse_args()

    ids = prompt_ids(args.model, args.prompt_len, args.seed)
    results = {"prompt_ids": ids, "new_tokens": args.new_tokens, "threads": args.threads}

    hf = run_transformers(args.model, ids, args.new_tokens, args.threads, args.attn)
    results["transformers"] = hf
    mh = None
    if args.mlahost:
        mh = run_mlahost(args.mlahost, args.model, ids, args.new_tokens, args.threads, args.ids_format,
                         args.mlahost_arg)
        results["mlahost"] = mh

    s = hf["stats"]
    print(f"model {args.model} ({hf['params'] / 1e6:.1f} M params), prompt {len(ids)} tokens, "
          f"{args.new_tokens} new tokens, {args.threads} threads")
    print(f"{'':14s} {'load_s':>8s} {'prefill_s':>10s} {'decode_s':>9s} {'decode tok/s':>13s}")
    print(f"{'transformers':14s} {s['load_s']:8.2f} {s['prefill_s']:10.3f} {s['decode_s']:9.3f} "
          f"{s['decode_tokens_per_s']:13.2f}")
    if mh is not None:
        m = mh.get("stats", {})

        def f(k, w, p):
            v = m.get(k)
            return f"{v:{w}.{p}f}" if isinstance(v, (int, float)) else f"{'?':>{w}s}"

        print(f"{'mlahost':14s} {f('load_s', 8, 2)} {f('prefill_s', 10, 3)} {f('decode_s', 9, 3)} "
              f"{f('decode_tokens_per_s', 13, 2)}")
        rate = m.get("decode_tokens_per_s")
        if isinstance(rate, (int, float)):
            print(f"decode speed ratio mlahost / transformers: {rate / s['decode_tokens_per_s']:.2f}x")
        toks = mh.get("token_ids", [])
        agree = leading_agreement(hf["token_ids"], toks)
        print(f"leading generated tokens that agree: {agree} / {min(len(toks), len(hf['token_ids']))}")
        if agree < min(len(toks), len(hf["token_ids"])):
            print(f"  transformers' top1-top2 logit margin at the first disagreement (step {agree}): "
                  f"{hf['margins'][agree]:.3g}")
        results["leading_agreement"] = agree
    first_small = next((i for i, m in enumerate(hf["margins"]) if m < 1e-3), None)
    print(f"transformers min top1-top2 margin {min(hf['margins']):.3g}; first step with margin < 1e-3: "
          f"{'none' if first_small is None else first_small}")
    print("transformers tokens:", hf["token_ids"][:16], "...")
    if mh is not None:
        print("mlahost tokens:     ", mh.get("token_ids", [])[:16], "...")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""CPU decode benchmark: mlahost vs llama.cpp, side by side on one checkpoint and one machine.

    python3 examples/bench/make_bench_checkpoint.py --out /tmp/bench-ckpt
    python3 LLAMA_CPP/convert_hf_to_gguf.py /tmp/bench-ckpt --outtype bf16 --outfile /tmp/bench-ckpt.bf16.gguf
    python3 examples/bench/bench_llama_cpp.py --model /tmp/bench-ckpt --gguf /tmp/bench-ckpt.bf16.gguf \
        --mlahost target/release/mlahost --llama-bench LLAMA_CPP_BUILD/bin/llama-bench \
        --threads 2,1 --repeats 5

llama.cpp is not part of this repository: build a pinned release yourself (the figures in
README.md name the one used) and convert the checkpoint with that release's own converter.

For each thread count, `--repeats` rounds; each round runs both engines once, in alternating
order (mlahost first in even rounds), so that slow phases of a shared machine hit both alike.
- mlahost: `generate --prompt-ids <BOS + seeded random ids> --max-tokens N --ignore-eos --json`
  with RAYON_NUM_THREADS=T and `--threads T`; decode tok/s is its `stats.decode_tokens_per_s`
  ((N-1) single-token steps after the prefill, timed inside the process).
- llama.cpp: `llama-bench -m GGUF -t T -p 0 -n N -r 1 -o json` (its `tg N` test: N single-token
  steps from an empty context, after its own warm-up run); decode tok/s is its `avg_ts`.
Prints per engine the median and the range over rounds, and the median and range of the
per-round ratio mlahost / llama.cpp.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cpu_decode import run_mlahost  # noqa: E402


def prompt_ids(model_dir: Path, n: int, seed: int) -> list[int]:
    cfg = json.load(open(model_dir / "config.json"))
    rng = random.Random(seed)
    hi = min(cfg["vocab_size"], 100000)
    return [cfg.get("bos_token_id", 0)] + [rng.randrange(3, hi) for _ in range(n - 1)]


def run_llama(binary: str, gguf: Path, n_new: int, threads: int) -> float:
    cmd = [binary, "-m", str(gguf), "-t", str(threads), "-p", "0", "-n", str(n_new), "-r", "1", "-o", "json"]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        sys.stderr.write(p.stderr[-4000:])
        raise SystemExit(f"llama-bench exited with {p.returncode}")
    rows = json.loads(p.stdout)
    return float(rows[0]["avg_ts"])


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):8.1f} [{min(values):.1f}-{max(values):.1f}]"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, type=Path, help="the hub-format checkpoint directory")
    ap.add_argument("--gguf", required=True, type=Path, help="the same checkpoint converted to GGUF")
    ap.add_argument("--mlahost", required=True)
    ap.add_argument("--llama-bench", required=True)
    ap.add_argument("--threads", default="2,1", help="comma-separated thread counts")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mlahost-arg", action="append", default=[], help="extra argument for mlahost (repeatable)")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()

    ids = prompt_ids(args.model, args.prompt_len, args.seed)
    results = []
    for threads in [int(t) for t in args.threads.split(",")]:
        os.environ["RAYON_NUM_THREADS"] = str(threads)
        extra = ["--threads", str(threads), *args.mlahost_arg]
        ours, theirs = [], []
        for rnd in range(args.repeats):
            order = ["mlahost", "llama.cpp"] if rnd % 2 == 0 else ["llama.cpp", "mlahost"]
            for engine in order:
                if engine == "mlahost":
                    r = run_mlahost(args.mlahost, args.model, ids, args.new_tokens, threads, "comma", extra)
                    ours.append(float(r["stats"]["decode_tokens_per_s"]))
                else:
                    theirs.append(run_llama(args.llama_bench, args.gguf, args.new_tokens, threads))
            print(f"  threads {threads} round {rnd}: mlahost {ours[-1]:.1f}  llama.cpp {theirs[-1]:.1f} tok/s", flush=True)
        ratios = [a / b for a, b in zip(ours, theirs)]
        results.append({"threads": threads, "mlahost": ours, "llama_cpp": theirs, "ratios": ratios})
    print(f"\nmodel {args.model}, prompt {len(ids)} tokens (mlahost), {args.new_tokens} new tokens, "
          f"{args.repeats} alternating rounds; decode tok/s median [min-max]")
    print(f"{'threads':>7s} {'mlahost':>22s} {'llama.cpp':>22s} {'ratio':>20s}")
    for r in results:
        rs = r["ratios"]
        print(f"{r['threads']:7d} {summary(r['mlahost']):>22s} {summary(r['llama_cpp']):>22s} "
              f"{statistics.median(rs):8.2f}x [{min(rs):.2f}-{max(rs):.2f}]")
    if args.json_out:
        args.json_out.write_text(json.dumps({"prompt_ids": ids, "results": results}, indent=1))


if __name__ == "__main__":
    main()

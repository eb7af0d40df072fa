#!/usr/bin/env python3
"""Joins the Rust decode benchmark (`mlahost gpu-check --bench-json`) with the PyTorch baseline
into one table: ours vs copy bandwidth and vs PyTorch on each shape.

    python3 kernels/dev/bench_table.py ours.jsonl torch.jsonl
"""
import json
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    ours, torch_rows = load(sys.argv[1]), load(sys.argv[2])
    base = {(r["heads"], r["batch"], r["ctx"]): r for r in torch_rows}
    # torch_us_8_sets: the baseline under its pre-session-5 rotation (see torch_decode_baseline.py)
    print("| kernel | heads | batch | ctx | splits | ours us | GB/s | % copy | TFLOP/s | torch us | speedup | torch us, 8 sets |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in ours:
        t = base.get((r["heads"], r["batch"], r["ctx"]))
        tu = t["torch_us"] if t else float("nan")
        old = f"{t['torch_us_8_sets']:.1f}" if t and "torch_us_8_sets" in t else "same"
        print(f"| {r['kernel']} | {r['heads']} | {r['batch']} | {r['ctx']} | {r['splits']} | {r['us']:.1f} | {r['gbps']:.0f} | "
              f"{100 * r['gbps'] / r['copy_gbps']:.1f} | {r['tflops']:.1f} | {tu:.1f} | {tu / r['us']:.2f}x | {old} |")


if __name__ == "__main__":
    main()

"""The 8-GPU node run's tables (issue 23), from what kernels/gpu_node.sh leaves in its OUT folder:
our figures per layout and workload beside each step's roofline (`mlahost plan --decode-batch`
with the node's measured copy bandwidth), the seed's and SemiAnalysis InferenceX's published
figures, the 128K capacity probe, and the per-rank decode-step profile.

Usage: python3 kernels/dev/node_report.py OUT_DIR > OUT_DIR/node_report.md
"""
import glob
import json
import os
import sys

# (tag, input, output, prompts, concurrencies) as gpu_node.sh runs them
WORKLOADS = [
    ("seed_4k", 4096, 512, 100, [16]),
    ("ctx_32k", 32768, 512, 32, [16]),
    ("ctx_128k", 131072, 512, 16, [8]),
    ("inferencex", 1024, 1024, 256, [8, 16, 32, 64]),
]
LAYOUTS = [("tp8", "TP=8"), ("dp8", "DP=8 + EP=8")]
# The seed's 8xH200 FP8 table (it does not say which tokens its tok/s counts)
SEED = {("ctx_32k", 16): "~9,500 tok/s", ("ctx_128k", 8): "~4,200 tok/s"}
# SemiAnalysis InferenceX, DeepSeek-R1 FP8, SGLang TP8 on 8xH200, 1,024 in / 1,024 out
INFERENCEX = {8: (12.8, 75), 16: (17.2, 112), 32: (25.6, 151), 64: (34.6, 224)}


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def runs(out, name, tag):
    r = load(os.path.join(out, f"{name}_{tag}.json"))
    return {run["concurrency"]: run for run in (r or {}).get("runs", [])}


def roofline(out, name, tag, c):
    """The layout's decode step from `plan --json --decode-batch c` (its layouts list)."""
    r = load(os.path.join(out, f"roofline_{tag}_c{c}.json"))
    want = dict(LAYOUTS)[name]
    for layout in ((r or {}).get("parallel") or {}).get("layouts", []):
        if layout.get("layout") == want:
            return layout.get("decode_step")
    return None


def main(out):
    card = open(os.path.join(out, "card.txt")).read().strip() if os.path.exists(os.path.join(out, "card.txt")) else "?"
    print(f"# DeepSeek-V3 (dummy FP8 weights, FP8 cache) on {card}\n")
    print("Roofline: one GPU's bytes per decode step (weights touched, latents read) over the copy bandwidth")
    print("measured on the node, plus the bytes it sends over NVLink (450 GB/s a direction), at the")
    print("workload's mean cached length (input + output / 2); see `mlahost plan --decode-batch`.\n")
    print("| layout | workload | concurrency | output tok/s | per GPU | TPOT ms (median) | TTFT ms (median / p99) | roofline TPOT ms | share of roofline | anchor |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, label in LAYOUTS:
        for tag, inp, outp, _, concs in WORKLOADS:
            got = runs(out, name, tag)
            for c in concs:
                run, step = got.get(c), roofline(out, name, tag, c)
                anchor = SEED.get((tag, c), "")
                if tag == "inferencex" and c in INFERENCEX:
                    tpot, per_gpu = INFERENCEX[c]
                    anchor = f"SGLang TP8 R1: TPOT {tpot} ms, {per_gpu} tok/s per GPU"
                roof = f"{step['roofline_ms']:.2f}" if step and "roofline_ms" in step else "?"
                if run is None or run.get("completed", 0) == 0:
                    print(f"| {label} | {inp} / {outp} | {c} | not run | | | | {roof} | | {anchor} |")
                    continue
                tput, tpot = run["output_throughput"], run["tpot_ms"]["median"]
                share = f"{100 * step['roofline_ms'] / tpot:.0f}%" if step and "roofline_ms" in step and tpot > 0 else "?"
                print(
                    f"| {label} | {inp} / {outp} | {c} | {tput:,.0f} | {tput / 8:,.0f} | {tpot:.2f} | "
                    f"{run['ttft_ms']['median']:,.0f} / {run['ttft_ms']['p99']:,.0f} | {roof} | {share} | {anchor} |"
                )
    print("\n## 128K-token users held at once without preemption\n")
    print("| layout | plan's sequences | concurrency asked | most running at once | preemptions | anchor |")
    print("|---|---|---|---|---|---|")
    for name, label in LAYOUTS:
        p = load(os.path.join(out, f"capacity_{name}.json"))
        if p is None:
            print(f"| {label} | | | not run | | ~8-9 per node (the seed) |")
            continue
        print(f"| {label} | {p['plan_sequences']} | {p['concurrency']} | {p['peak_running']} | {p['preemptions']} | ~8-9 per node (the seed) |")
    print("\n## Per decode step and rank: µs by kind (`generate --profile-kernels`, one sequence, eager)\n")
    for path in sorted(glob.glob(os.path.join(out, "profile_*.json"))):
        r = load(path) or {}
        ranks = ((r.get("kernel_profile_by_rank") or {}).get("decode")) or []
        print(f"### {os.path.basename(path)[8:-5]}\n")
        if not ranks:
            print("not run\n")
            continue
        kinds = list(ranks[0].keys())
        print("| rank | " + " | ".join(kinds) + " | all |")
        print("|---|" + "---|" * (len(kinds) + 1))
        for i, row in enumerate(ranks):
            print(f"| {i} | " + " | ".join(f"{row[k]:,.0f}" for k in kinds) + f" | {sum(row.values()):,.0f} |")
        print()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")

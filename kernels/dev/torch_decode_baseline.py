#!/usr/bin/env python3
"""PyTorch paged MLA decode on the benchmark's shapes (gather the pages, two bf16 matmuls, f32
softmax), timed as CUDA-graph replays like the Rust benchmark; prints JSON lines.

Input sets rotate as in the Rust benchmark (ceil(256 MB / set) sets, 1 to 32), so neither side is
served from L2. Until session 5 this script kept at most 8 sets, which left the 4K batch-1 shapes
(4.7 MB a set) largely in the H200's 50 MB L2; where that rule differs, its time is printed too
(`torch_us_8_sets`), for comparison with earlier results.

    python3 kernels/dev/torch_decode_baseline.py > torch.jsonl
"""
import json

import torch

D, DV, PAGE = 576, 512, 64


def decode(q, cache, bt, length, scale):
    b, _, h, _ = q.shape
    kv = cache.index_select(0, bt.reshape(-1)).view(b, -1, D)[:, :length]
    s = torch.matmul(q.view(b, h, D), kv.transpose(1, 2)).float() * scale
    p = torch.softmax(s, dim=-1).to(torch.bfloat16)
    return torch.matmul(p, kv[..., :DV])


def sets_for(set_bytes, old_rule=False):
    if old_rule:
        return max(1, min(8, (256 << 20) // set_bytes + 1))
    return max(1, min(32, -(-(256 << 20) // set_bytes)))  # bench.rs: div_ceil, clamp(1, 32)


def time_shape(heads, batch, ctx, sets):
    dev = torch.device("cuda")
    pages_per_seq = ctx // PAGE
    set_bytes = batch * ctx * D * 2
    caches = [torch.randn(batch * pages_per_seq, PAGE, D, device=dev).to(torch.bfloat16) for _ in range(sets)]
    bt = torch.randperm(batch * pages_per_seq, device=dev).to(torch.int64).view(batch, pages_per_seq)
    q = torch.randn(batch, 1, heads, D, device=dev).to(torch.bfloat16)
    scale = 192 ** -0.5
    reps = max(2, min(50, int(2e9 / set_bytes)))
    for c in caches:
        decode(q, c, bt, ctx, scale)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(reps):
            decode(q, caches[i % sets], bt, ctx, scale)
    g.replay()
    times = []
    for _ in range(5):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        g.replay()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) * 1e3 / reps)
    del g, caches
    torch.cuda.empty_cache()
    times.sort()
    return times[len(times) // 2]


def main():
    for heads in (16, 128):
        for batch in (1, 64, 128):
            for ctx in (4096, 32768):
                set_bytes = batch * ctx * D * 2
                sets = sets_for(set_bytes)
                us = time_shape(heads, batch, ctx, sets)
                gbps = set_bytes / us * 1e-3
                row = {"heads": heads, "batch": batch, "ctx": ctx, "sets": sets, "torch_us": round(us, 2), "torch_gbps": round(gbps, 1)}
                old_sets = sets_for(set_bytes, old_rule=True)
                if old_sets != sets:
                    row["torch_us_8_sets"] = round(time_shape(heads, batch, ctx, old_sets), 2)
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""PyTorch paged MLA decode on the benchmark's shapes (gather the pages, two bf16 matmuls, f32
softmax), timed as CUDA-graph replays like the Rust benchmark; prints JSON lines.

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


def time_shape(heads, batch, ctx):
    dev = torch.device("cuda")
    pages_per_seq = ctx // PAGE
    set_bytes = batch * ctx * D * 2
    sets = max(1, min(8, (256 << 20) // set_bytes + 1))
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
                us = time_shape(heads, batch, ctx)
                gbps = batch * ctx * D * 2 / us * 1e-3
                print(json.dumps({"heads": heads, "batch": batch, "ctx": ctx, "torch_us": round(us, 2), "torch_gbps": round(gbps, 1)}), flush=True)


if __name__ == "__main__":
    main()

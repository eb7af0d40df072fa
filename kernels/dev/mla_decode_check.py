#!/usr/bin/env python3
"""Correctness check and benchmark of kernels/cuda/mla_decode.cu on a GPU machine.

Needs PyTorch and CuPy (NVRTC). Compiles the .cu with NVRTC for sm_90a, checks every decode kernel
against a float64 PyTorch reference on fresh random data, then times the issue-7 shapes beside a
device-to-device copy and a PyTorch paged decode.

    python3 kernels/dev/mla_decode_check.py [--check-only] [--bench-only] [--quick]

Writes a JSON log to $OUT (or /tmp) and prints one table at the end. Exit code 1 on any failure.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("MLA_SRC") or os.path.join(HERE, "..", "cuda", "mla_decode.cu")  # MLA_SRC: another copy, for A/B
OUT = os.environ.get("OUT") or "/tmp"
D, DV = 576, 512

# Launch table (mirrors the constants in mla_decode.cu; the Rust launcher keeps the same table).
#   rows: query rows (q_len*heads flattened) per CTA; tile: tokens per pipeline stage;
#   smem: dynamic shared memory bytes; per_sm: CTAs resident per SM (for the split heuristic).
def _mma_smem(mt, t, nst):
    rows = 16 * mt
    return nst * t * (D + 8) * 2 + 4 * rows * (t + 8) * 4 + rows * (t + 8) * 2 + 3 * rows * 4


KERNELS = {
    "mma_r16_t32_s2": dict(rows=16, tile=32, smem=_mma_smem(1, 32, 2), per_sm=2),
    "mma_r16_t32": dict(rows=16, tile=32, smem=_mma_smem(1, 32, 5), per_sm=1),
    "mma_r32_t32": dict(rows=32, tile=32, smem=_mma_smem(2, 32, 5), per_sm=1),
    "wgmma_r64": dict(rows=64, tile=64, smem=3 * 64 * D * 2 + 8192 + 3 * 64 * 4 + 1024, per_sm=1),
    # WgT16Cfg: Q, one stage per warpgroup, P^T per warpgroup, reductions, column maxima
    "wgmma_t16": dict(rows=16, tile=64, smem=16 * D * 2 + 2 * 64 * D * 2 + 2 * 2048 + 2 * 4 * 16 * 4 + 2 * 16 * 4 + 1024,
                      per_sm=1),
}
THREADS = 256
ENABLED = set(KERNELS)  # --kernels narrows this


# ------------------------------------------------------------------------------------------------
# split heuristic (the Rust launcher ports this function)
# ------------------------------------------------------------------------------------------------
def plan_splits(seq_lens, rows_per_seq, rows_per_cta, per_sm, num_sms, force_chunk=None):
    """Choose `chunk` (tokens per split, a multiple of 64) for one decode launch.

    Model: every split is one CTA per row tile; CTAs run in waves of num_sms*per_sm; a wave costs
    its longest CTA, chunk/64 tile-times plus 2 tile-times of pipeline fill and epilogue. A
    sequence with several splits also pays its bf16 partials (written and read back by the
    combine kernel, spread over all SMs) and one more launch. Returns (chunk, splits per seq).
    """
    rt = -(-rows_per_seq // rows_per_cta)
    slots = num_sms * per_sm
    max_len = max(max(seq_lens), 1)
    if force_chunk:
        return force_chunk, [max(1, -(-l // force_chunk)) for l in seq_lens]
    best = None
    seen = set()
    max_ns = min(-(-max_len // 64), 4 * slots, 1024)  # 1024 = MLA_MAX_SPLITS of the combine kernel
    for ns in range(1, max_ns + 1):
        chunk = -(-(-(-max_len // ns)) // 64) * 64
        if chunk in seen:
            continue
        seen.add(chunk)
        splits = [max(1, -(-l // chunk)) for l in seq_lens]
        ctas = rt * sum(splits)
        waves = -(-ctas // slots)
        tile = 1.75 if min(ctas, slots) > num_sms else 1.0  # two CTAs sharing an SM
        cost = waves * (chunk / 64 * tile + 2.5)
        multi = sum(s for s in splits if s > 1)
        if multi:
            part_bytes = multi * rows_per_seq * DV * 2 * 2  # bf16, written and read back
            cost += 1.25 + part_bytes / (64 * 1152 * num_sms)
        if best is None or cost < best[0] - 1e-9:
            best = (cost, chunk, splits)
    return best[1], best[2]


# ------------------------------------------------------------------------------------------------
# build + launch
# ------------------------------------------------------------------------------------------------
def build():
    import cupy as cp

    src = open(SRC).read()
    opts = ["--std=c++17", "-arch=sm_90a", f"--include-path={os.path.dirname(os.path.abspath(SRC))}"]
    opts += os.environ.get("MLA_DEFINES", "").split()  # experiments: -DNAME switches in a kernel
    path = os.path.join(OUT, "mla_decode.cubin")
    how = None
    try:
        from cuda.bindings import nvrtc

        err, prog = nvrtc.nvrtcCreateProgram(src.encode(), b"mla_decode.cu", 0, [], [])
        bopts = [o.encode() for o in opts + ["--ptxas-options=-v"]]
        (err,) = nvrtc.nvrtcCompileProgram(prog, len(bopts), bopts)
        _, n = nvrtc.nvrtcGetProgramLogSize(prog)
        log = b" " * n
        nvrtc.nvrtcGetProgramLog(prog, log)
        print(log.decode(errors="replace"))
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise SystemExit("NVRTC compile failed")
        _, n = nvrtc.nvrtcGetCUBINSize(prog)
        cub = b" " * n
        nvrtc.nvrtcGetCUBIN(prog, cub)
        open(path, "wb").write(cub)
        mod = cp.RawModule(path=path)
        how = "cuda.bindings.nvrtc -> cubin"
    except ImportError:
        try:
            mod = cp.RawModule(code=src, options=tuple(opts))
            mod.get_function("mla_decode_combine")
            how = "cupy.RawModule(code, options)"
        except Exception as e:  # CuPy adds its own -arch; fall back to PTX for compute_90a
            print(f"RawModule(code) failed ({str(e)[:200]}); trying cupy nvrtc -> PTX")
            from cupy.cuda import nvrtc as cnv

            prog = cnv.createProgram(src, "mla_decode.cu", [], [])
            try:
                cnv.compileProgram(prog, ["--std=c++17", "-arch=compute_90a"])
            finally:
                print(cnv.getProgramLog(prog))
            ptx_path = os.path.join(OUT, "mla_decode.ptx")
            open(ptx_path, "w").write(cnv.getPTX(prog))
            mod = cp.RawModule(path=ptx_path)
            how = "cupy nvrtc -> PTX (compute_90a) -> driver JIT"
    print(f"built with {how}; options {opts}")
    fns = {}
    for name, cfg in KERNELS.items():
        if name not in ENABLED:
            continue
        f = mod.get_function("mla_decode_" + name)
        f.max_dynamic_shared_size_bytes = cfg["smem"]
        fns[name] = f
        print(f"  mla_decode_{name}: regs {f.num_regs}, local {f.local_size_bytes} B, smem {cfg['smem']} B")
    fns["combine"] = mod.get_function("mla_decode_combine")
    fns["_module"] = mod
    return fns


def cpv(t):
    """Zero-copy CuPy view of a contiguous torch CUDA tensor (bf16 as uint16)."""
    import cupy as cp

    dt = {torch.bfloat16: cp.uint16, torch.float32: cp.float32, torch.int32: cp.int32}[t.dtype]
    mem = cp.cuda.UnownedMemory(t.data_ptr(), max(t.numel() * t.element_size(), 1), t)
    return cp.ndarray((t.numel(),), dtype=dt, memptr=cp.cuda.MemoryPointer(mem, 0))


class Launch:
    """Everything one decode call needs: buffers, split plan, grid. Call run() to launch."""

    def __init__(self, fns, kname, q, cache, block_table, seq_lens, q_len, heads, page_size, scale,
                 num_sms, force_chunk=None):
        import numpy as np

        cfg = KERNELS[kname]
        B = block_table.shape[0]
        rows = q_len * heads
        lens = seq_lens.tolist()
        chunk, splits = plan_splits(lens, rows, cfg["rows"], cfg["per_sm"], num_sms, force_chunk)
        offs = [0]
        for s in splits:
            offs.append(offs[-1] + s)
        dev = q.device
        self.fns, self.kname, self.cfg = fns, kname, cfg
        self.chunk, self.splits = chunk, splits
        self.split_offsets = torch.tensor(offs, dtype=torch.int32, device=dev)
        self.out = torch.empty(B, q_len, heads, DV, dtype=torch.bfloat16, device=dev)
        self.lse = torch.empty(B, q_len, heads, dtype=torch.float32, device=dev)
        slots = offs[-1] if max(splits) > 1 else 1
        self.part_o = torch.empty(slots * rows * DV, dtype=torch.float32, device=dev)
        self.part_lse = torch.empty(slots * rows, dtype=torch.float32, device=dev)
        self.multi = max(splits) > 1
        self.grid = (-(-rows // cfg["rows"]), max(splits), B)
        # combine slices: as combine_slices() in decode.rs (MLA_COMBINE_Z overrides, for experiments)
        by_splits = 1 << max(0, (-(-max(splits) // 2) - 1).bit_length())
        by_grid = 1 << (max(1, 4 * num_sms // max(1, rows * B)).bit_length() - 1)
        z = max(1, min(8, by_splits, by_grid))
        self.cgrid = (rows, B, int(os.environ.get("MLA_COMBINE_Z", z)))
        self.rows = rows
        self.q, self.cache, self.bt, self.sl = q, cache, block_table, seq_lens
        # split arrivals (MLA_ARRIVALS=1), as the Rust launcher: the combine starts on its rows'
        # last split instead of on the decode grid's end (wgmma kernels)
        self.arrivals = os.environ.get("MLA_ARRIVALS") == "1" and self.multi and kname.startswith("wgmma")
        self.sync = torch.zeros(max(2 * B * -(-rows // 16), 1), dtype=torch.int32, device=dev)
        self.args = [cpv(q), cpv(cache), cpv(block_table), cpv(seq_lens), cpv(self.split_offsets),
                     cpv(self.out), cpv(self.lse), cpv(self.part_o), cpv(self.part_lse),
                     np.int32(q_len), np.int32(heads), np.int32(page_size),
                     np.int32(block_table.shape[1]), np.int32(chunk), np.float32(scale),
                     cpv(self.sync) if self.arrivals else np.uint64(0)]
        self.cargs = [self.args[7], self.args[8], self.args[4], self.args[5], self.args[6], np.int32(rows),
                      self.args[15]]

    def poison(self):
        for t in (self.out, self.lse, self.part_o, self.part_lse):
            t.fill_(float("nan"))

    def run(self, main=True, comb=True):
        if main:
            f = self.fns[self.kname]
            f(self.grid, (THREADS, 1, 1), tuple(self.args), shared_mem=self.cfg["smem"])
        if self.multi and comb:
            self.fns["combine"](self.cgrid, (256, 1, 1), tuple(self.cargs))


# ------------------------------------------------------------------------------------------------
# reference and data
# ------------------------------------------------------------------------------------------------
def make_case(B, seq_lens, q_len, heads, page_size, dev, extra_pages=3, gen=None):
    pages_per = [-(-l // page_size) for l in seq_lens]
    maxp = max(max(pages_per), 1) + 1
    num_pages = sum(pages_per) + extra_pages
    cache = torch.randn(num_pages, page_size, D, device=dev, generator=gen).to(torch.bfloat16)
    perm = torch.randperm(num_pages, device=dev, generator=gen).to(torch.int32)
    bt = torch.full((B, maxp), -1, dtype=torch.int32, device=dev)  # garbage beyond the sequence
    k = 0
    for b, n in enumerate(pages_per):
        bt[b, :n] = perm[k:k + n]
        k += n
    q = torch.randn(B, q_len, heads, D, device=dev, generator=gen).to(torch.bfloat16)
    sl = torch.tensor(seq_lens, dtype=torch.int32, device=dev)
    return q, cache, bt, sl


def reference(q, cache, bt, seq_lens, q_len, heads, page_size, scale):
    B = q.shape[0]
    outs, lses = [], []
    for b in range(B):
        L = int(seq_lens[b])
        np_ = -(-L // page_size)
        kv = cache[bt[b, :np_].long()].reshape(-1, D)[:L].double()
        qb = q[b].double()  # [q_len, H, D]
        s = torch.einsum("ihd,jd->ihj", qb, kv) * scale
        pos = torch.arange(L, device=q.device)
        lim = L - q_len + torch.arange(q_len, device=q.device)  # inclusive
        mask = pos[None, :] > lim[:, None]  # [q_len, L]
        s = s.masked_fill(mask[:, None, :], float("-inf"))
        lse = torch.logsumexp(s, -1)
        p = torch.softmax(s, -1)
        outs.append(torch.einsum("ihj,jd->ihd", p, kv[:, :DV]))
        lses.append(lse)
    return torch.stack(outs), torch.stack(lses)


def check(fns, num_sms, log):
    dev = torch.device("cuda")
    scale = 192 ** -0.5
    cases = [
        # (heads, q_len, page, seq_lens)
        (16, 1, 64, [1, 63, 64, 65, 127, 128, 1000, 4097]),
        (16, 2, 16, [2, 17, 64, 65, 300, 129]),
        (128, 1, 64, [1, 64, 65, 129, 2000]),
        (128, 2, 16, [2, 63, 64, 65, 128, 513]),
        (16, 1, 16, [5000, 3, 64]),
        (128, 1, 64, [4096]),
    ]
    ok = True
    rows = []
    for heads, q_len, page, lens in cases:
        q, cache, bt, sl = make_case(len(lens), lens, q_len, heads, page, dev)
        ro, rl = reference(q, cache, bt, sl, q_len, heads, page, scale)
        for kname in sorted(ENABLED):
            for force in (None, 64, 128, 256):  # 256: CTAs of 3+ tiles (the staggered first copies)
                if force and max(lens) <= force and force != 64:
                    continue
                L = Launch(fns, kname, q, cache, bt, sl, q_len, heads, page, scale, num_sms, force)
                L.poison()
                L.run()
                torch.cuda.synchronize()
                o = L.out.double()
                finite = bool(torch.isfinite(o).all()) and bool(torch.isfinite(L.lse).all())
                err = (o - ro).abs().max().item() if finite else float("nan")
                rel = ((o - ro).norm() / ro.norm()).item() if finite else float("nan")
                lerr = (L.lse.double() - rl).abs().max().item() if finite else float("nan")
                good = finite and rel < 1e-2 and err < 5e-2 and lerr < 5e-3
                ok &= good
                r = dict(kernel=kname, heads=heads, q_len=q_len, page=page, lens=lens, chunk=L.chunk,
                         splits=L.splits, max_abs=err, rel=rel, lse_abs=lerr, ok=good)
                rows.append(r)
                print(f"{'ok  ' if good else 'FAIL'} {kname:12s} H={heads:3d} q_len={q_len} page={page:2d} "
                      f"chunk={L.chunk:5d} maxsplit={max(L.splits):3d} max_abs={err:.2e} rel={rel:.2e} "
                      f"lse_abs={lerr:.2e}")
    log["check"] = rows
    return ok


# ------------------------------------------------------------------------------------------------
# benchmark
# ------------------------------------------------------------------------------------------------
def time_fn(fn, n_iter, warmup=3, prep=None):
    ts = []
    for i in range(warmup + n_iter):
        if prep:
            prep(i)
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn(i)
        e.record()
        e.synchronize()
        if i >= warmup:
            ts.append(s.elapsed_time(e) * 1e3)  # us
    return statistics.median(ts), ts


def measure(run_iter, n_sets, small):
    """Median us per iteration. Small problems are timed as CUDA-graph replays of many iterations
    (rotating input sets), so host launch overhead stays out, as in a graph-captured decode step."""
    import cupy as cp

    n = max(n_sets, 16) if small else max(n_sets, 3)
    try:
        for i in range(n_sets):
            run_iter(i)
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            with cp.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
                for i in range(n):
                    run_iter(i)
        g.replay()
        torch.cuda.synchronize()
        t, _ = time_fn(lambda i: g.replay(), 10 if small else 5, warmup=2)
        del g
        return t / n
    except Exception as e:  # fall back to eager timing
        print(f"  (graph capture failed: {str(e)[:120]}; eager timing)")
        torch.cuda.synchronize()
        return time_fn(run_iter, 20)[0]


def copy_bw():
    n = 1 << 30
    x = torch.empty(n, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    x.random_(0, 255)
    t, _ = time_fn(lambda i: y.copy_(x), 20)
    return 2 * n / (t * 1e-6) / 1e9, t


def torch_decode(q, cache, bt, L, scale):
    B, _, H, _ = q.shape
    kv = cache.index_select(0, bt.reshape(-1)).view(B, -1, D)[:, :L]
    s = torch.matmul(q.view(B, H, D), kv.transpose(1, 2)).float() * scale
    p = torch.softmax(s, dim=-1).to(torch.bfloat16)
    return torch.matmul(p, kv[..., :DV])


def rotating_sets(n_sets, B, L, heads):
    """n_sets input sets of B sequences of L tokens (page 64): one cache holding every set's pages
    in random order, per-set block tables and queries, and the shared seq_lens."""
    dev = torch.device("cuda")
    P = L // 64
    cache = torch.randn(n_sets * B * P, 64, D, device=dev).to(torch.bfloat16)
    perm = torch.randperm(n_sets * B * P, device=dev).to(torch.int32).view(n_sets, B, P)
    qs = torch.randn(n_sets, B, 1, heads, D, device=dev).to(torch.bfloat16)
    sl = torch.full((B,), L, dtype=torch.int32, device=dev)
    return cache, perm, qs, sl


def bench(fns, num_sms, log, copy_gbs, quick=False, variants=None):
    scale = 192 ** -0.5
    page = 64
    shapes = [(h, b, l) for h in (16, 128) for b in (1, 64, 128) for l in (4096, 32768)]
    if quick:
        shapes = [(16, 64, 4096), (128, 64, 4096)]
    table = []
    for heads, B, L in shapes:
        latent = B * L * D * 2
        n_sets = min(32, max(1, math.ceil(256e6 / latent)))
        cache, perm, qs, sl = rotating_sets(n_sets, B, L, heads)
        io = latent + qs[0].numel() * 2 + B * heads * DV * 2
        flops = B * heads * L * 2 * (D + DV)
        small = latent < 200e6
        cands = ["wgmma_t16", "mma_r16_t32_s2", "mma_r16_t32"] if heads == 16 else ["wgmma_r64"]
        cands = [k for k in cands if k in ENABLED] or ["mma_r16_t32"]
        res = {}
        for kname in cands:
            launches = [Launch(fns, kname, qs[s], cache, perm[s], sl, 1, heads, page, scale, num_sms)
                        for s in range(n_sets)]
            t = measure(lambda i: launches[i % n_sets].run(), n_sets, small)
            res[kname] = (t, launches[0].chunk, max(launches[0].splits))
        best = min(res, key=lambda k: res[k][0])
        t, chunk, ns = res[best]
        if B == 1:  # where does a batch-1 step go? main kernel alone, combine alone
            lb = [Launch(fns, best, qs[s], cache, perm[s], sl, 1, heads, page, scale, num_sms)
                  for s in range(n_sets)]
            tm = measure(lambda i: lb[i % n_sets].run(comb=False), n_sets, small)
            tc = measure(lambda i: lb[i % n_sets].run(main=False), n_sets, small)
            print(f"  batch-1 breakdown {best}: main {tm:.1f} us, combine {tc:.1f} us, both {t:.1f} us")
        # PyTorch paged decode on the same data
        tt = measure(lambda i: torch_decode(qs[i % n_sets], cache, perm[i % n_sets], L, scale), n_sets, small)
        gbs = io / (t * 1e-6) / 1e9
        row = dict(heads=heads, batch=B, ctx=L, kernel=best, splits=ns, chunk=chunk, us=t, gbs=gbs,
                   pct_copy=100 * gbs / copy_gbs, tflops=flops / (t * 1e-6) / 1e12, torch_us=tt,
                   speedup=tt / t, variants={k: v[0] for k, v in res.items()})
        table.append(row)
        print(f"H={heads:3d} B={B:3d} L={L:5d} {best:12s} ns={ns:3d} {t:9.1f} us {gbs:7.0f} GB/s "
              f"{row['pct_copy']:5.1f}% {row['tflops']:6.1f} TF  torch {tt:9.1f} us  x{row['speedup']:.1f}  "
              + " ".join(f"{k}={v[0]:.1f}" for k, v in res.items()), flush=True)
        del cache, perm, qs
        torch.cuda.empty_cache()
    log["bench"] = table
    return table


def split_sweep(fns, num_sms, log):
    """Time forced split counts on a few shapes to calibrate plan_splits."""
    scale = 192 ** -0.5
    out = []
    for heads, B, L, kname in [(16, 64, 4096, "mma_r16_t32_s2"), (16, 128, 4096, "mma_r16_t32_s2"),
                               (16, 1, 32768, "mma_r16_t32_s2"), (128, 1, 32768, "wgmma_r64"),
                               (128, 1, 4096, "wgmma_r64"), (128, 64, 4096, "wgmma_r64")]:
        if kname not in ENABLED:
            continue
        n_sets = min(16, max(1, math.ceil(256e6 / (B * L * D * 2))))
        cache, perm, qs, sl = rotating_sets(n_sets, B, L, heads)
        heur = Launch(fns, kname, qs[0], cache, perm[0], sl, 1, heads, 64, scale, num_sms).chunk
        line = []
        for ns in sorted({1, 2, 3, 4, 6, 8, 16, 32, 64, L // heur}):
            chunk = -(-L // ns // 64) * 64
            if chunk < 64 or chunk > L:
                continue
            ls = [Launch(fns, kname, qs[s], cache, perm[s], sl, 1, heads, 64, scale, num_sms, chunk)
                  for s in range(n_sets)]
            t = measure(lambda i: ls[i % n_sets].run(), n_sets, B * L * D * 2 < 200e6)
            line.append((ns, chunk, t))
        out.append(dict(heads=heads, batch=B, ctx=L, kernel=kname, heuristic_chunk=heur, sweep=line))
        print(f"sweep H={heads} B={B} L={L} {kname} heuristic chunk={heur}: "
              + " ".join(f"ns{n}:{t:.1f}" for n, c, t in line), flush=True)
        del cache, perm, qs
        torch.cuda.empty_cache()
    log["sweep"] = out


def parse_spec(spec):
    """heads,batch,ctx,kernel[,chunk] -> (heads, batch, ctx, kernel, chunk or None)."""
    parts = spec.split(",")
    return int(parts[0]), int(parts[1]), int(parts[2]), parts[3], (int(parts[4]) if len(parts) > 4 else None)


def one_set_launch(fns, num_sms, spec):
    """One input set of a spec (random pages, page 64) and its launch; the Launch keeps the data."""
    h, B, L, kname, chunk = parse_spec(spec)
    cache, perm, qs, sl = rotating_sets(1, B, L, h)
    return Launch(fns, kname, qs[0], cache, perm[0], sl, 1, h, 64, 192 ** -0.5, num_sms, chunk)


def profile(fns, num_sms, spec):
    """Run one shape a few times (for ncu): spec = heads,batch,ctx,kernel[,chunk]."""
    lo = one_set_launch(fns, num_sms, spec)
    for _ in range(3):
        lo.run()
    torch.cuda.synchronize()
    print(f"profiled {spec}: chunk {lo.chunk}, grid {lo.grid}")


def time_specs(fns, num_sms, specs):
    """Time fixed plans: specs = 'heads,batch,ctx,kernel[,chunk];...' (CUDA-graph replays, random
    page order). A chunk of the whole context is one CTA per (sequence, row tile)."""
    for spec in specs.split(";"):
        h, B, L, kname, chunk = parse_spec(spec)
        n_sets = min(16, max(1, math.ceil(256e6 / (B * L * D * 2))))
        cache, perm, qs, sl = rotating_sets(n_sets, B, L, h)
        ls = [Launch(fns, kname, qs[s], cache, perm[s], sl, 1, h, 64, 192 ** -0.5, num_sms, chunk)
              for s in range(n_sets)]
        small = B * L * D * 2 < 200e6
        t = measure(lambda i: ls[i % n_sets].run(), n_sets, small)
        tm = measure(lambda i: ls[i % n_sets].run(comb=False), n_sets, small)
        gbs = B * L * D * 2 / (tm * 1e-6) / 1e9
        print(f"time {spec}: chunk {ls[0].chunk} grid {ls[0].grid}: {t:.1f} us (main {tm:.1f} us, "
              f"{gbs:.0f} GB/s)", flush=True)
        del cache, perm, qs
        torch.cuda.empty_cache()


def trace(fns, num_sms, spec):
    """Per-phase timestamps of a kernel built with -DT16_TRACE or -DR64_PROF (MLA_DEFINES): spec as
    --profile. L2 is flushed before each launch. Prints, per marker, the median over CTAs of the
    time since the earliest CTA entered (globaltimer) and of the SM cycles since the CTA's own
    entry (clock64; R64_PROF: cycles summed per phase)."""
    import cupy as cp
    import numpy as np

    lo = one_set_launch(fns, num_sms, spec)
    mod = fns["_module"]
    gt, ck = (cp.ndarray((128 * 2 * 16,), dtype=cp.uint64, memptr=mod.get_global(n))
              for n in ("mla_trace_gt", "mla_trace_clk"))
    flush = torch.empty(256 << 20, dtype=torch.uint8, device="cuda")  # evicts the cache from L2
    for _ in range(5):
        gt.fill(0)
        ck.fill(0)
        flush.zero_()
        lo.run(comb=False)
    torch.cuda.synchronize()
    g = cp.asnumpy(gt).view(np.uint64).reshape(128, 2, 16).astype(np.float64)
    c = cp.asnumpy(ck).view(np.uint64).reshape(128, 2, 16).astype(np.float64)
    g[g == 0] = np.nan
    c[c == 0] = np.nan
    t0 = np.nanmin(g[:, :, 0])
    print(f"trace {spec}: chunk {lo.chunk} grid {lo.grid}; kernel span {(np.nanmax(g) - t0) / 1e3:.2f} us")
    for k in range(16):
        for wg in range(2):
            col = g[:, wg, k]
            if np.all(np.isnan(col)):
                continue
            dc = c[:, wg, k] - c[:, wg, 0]
            print(f"  marker {k:2d} wg{wg}: since first entry {np.nanmedian(col - t0) / 1e3:7.2f} us "
                  f"(max {np.nanmax(col - t0) / 1e3:7.2f}); own cycles {np.nanmedian(dc):9.0f}")


def membench():
    """Read bandwidth of one/two CTAs per SM: plain loads, cp.async rings, bulk-copy rings."""
    import cupy as cp
    import numpy as np

    src = open(os.path.join(HERE, "membench.cu")).read()
    mod = cp.RawModule(code=src, options=("--std=c++17",))
    total = 4 << 30
    buf = torch.empty(total // 16, 4, dtype=torch.int32, device="cuda")
    buf.random_(0, 1000)
    out = torch.zeros(4, dtype=torch.int32, device="cuda")
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    res = {}
    for name, smem in [("mb_ldg", 0), ("mb_cpasync3", 3 * 32768), ("mb_cpasync6", 6 * 32768),
                       ("mb_bulk3", 3 * 32768), ("mb_bulk6", 6 * 32768)]:
        f = mod.get_function(name)
        if smem > 48 * 1024:
            f.max_dynamic_shared_size_bytes = smem
        for ctas in (1, 8, 64, sms // 2, sms, 2 * sms):
            if smem > 113 * 1024 and ctas > sms:
                continue
            # few CTAs: 64 MB each (the per-CTA read rate), else the whole buffer
            n = min(total // 16 // ctas, (64 << 20) // 16) // 2048 * 2048
            used = n * ctas * 16
            args = (cpv(buf.view(-1)), np.int64(n), cpv(out))
            t, _ = time_fn(lambda i: f((ctas, 1, 1), (256, 1, 1), args, shared_mem=smem), 5, warmup=2)
            res[f"{name}/{ctas}"] = used / (t * 1e-6) / 1e9
    print("membench GB/s (read, all CTAs together): " + "  ".join(f"{k}={v:.0f}" for k, v in res.items()), flush=True)
    print("per CTA: " + "  ".join(f"{k}={v / int(k.split('/')[1]):.1f}" for k, v in res.items()), flush=True)
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check-only", action="store_true")
    ap.add_argument("--bench-only", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--kernels", default=",".join(sorted(ENABLED)))
    ap.add_argument("--profile", default="")
    ap.add_argument("--membench", action="store_true")
    ap.add_argument("--trace", default="", help="heads,batch,ctx,kernel[,chunk] (needs -DT16_TRACE)")
    ap.add_argument("--time", default="", help="heads,batch,ctx,kernel[,chunk];... fixed plans to time")
    args = ap.parse_args()
    ENABLED.clear()
    ENABLED.update(k for k in args.kernels.split(",") if k in KERNELS)
    name = torch.cuda.get_device_name()
    props = torch.cuda.get_device_properties(0)
    num_sms = props.multi_processor_count
    print(f"device: {name}, {num_sms} SMs, torch {torch.__version__}")
    log = dict(device=name, sms=num_sms)
    t0 = time.time()
    fns = build()
    if args.profile:
        profile(fns, num_sms, args.profile)
        return
    if args.time:
        time_specs(fns, num_sms, args.time)
        return
    if args.trace:
        for spec in args.trace.split(";"):
            trace(fns, num_sms, spec)
        return
    if args.membench and args.bench_only and args.quick:
        membench()  # only the read-rate microbenchmark
        return
    ok = True
    if not args.bench_only:
        ok = check(fns, num_sms, log)
        print(f"correctness: {'PASS' if ok else 'FAIL'} ({time.time() - t0:.0f} s)", flush=True)
    if not args.check_only:
        gbs, t = copy_bw()
        log["copy_gbs"] = gbs
        print(f"device-to-device copy: {gbs:.0f} GB/s (read+write, 1 GiB in {t:.0f} us)", flush=True)
        if args.membench:
            log["membench"] = membench()
        if args.sweep:
            split_sweep(fns, num_sms, log)
        table = bench(fns, num_sms, log, gbs, args.quick)
        print(f"\n{name} — copy {gbs:.0f} GB/s; correctness {'PASS' if ok else 'FAIL'}")
        print("| heads | batch | ctx | kernel | splits | ours us | GB/s | % copy | TFLOP/s | torch us | speedup |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for r in table:
            print(f"| {r['heads']} | {r['batch']} | {r['ctx']} | {r['kernel']} | {r['splits']} | {r['us']:.1f} | "
                  f"{r['gbs']:.0f} | {r['pct_copy']:.1f} | {r['tflops']:.1f} | {r['torch_us']:.1f} | "
                  f"{r['speedup']:.1f}x |")
    with open(os.path.join(OUT, "mla_decode_log.json"), "w") as f:
        json.dump(log, f, indent=1)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""Fixed costs of a batch-1 decode step on this GPU, each timed as CUDA-graph replays of many
back-to-back launches (as a graph-captured decode step runs them): an empty kernel, dependent
global-load round trips, one 73,728-byte tile per CTA, the 32 KB f32 partial store, and a grid-wide
barrier over co-resident CTAs (the cost an in-kernel combine would pay instead of a second launch)."""
import cupy as cp
import numpy as np
import torch

SRC = r"""
typedef unsigned int u32;
extern "C" __global__ void empty_k(int* out) { if (threadIdx.x == 1000) out[0] = 1; }
// `hops` dependent loads through an index array (each one a global round trip)
extern "C" __global__ void chase(const int* idx, int hops, int* out) {
  int v = blockIdx.x;
  for (int i = 0; i < hops; ++i) v = __ldg(idx + v);
  if (v == -7) out[0] = v;
}
__device__ __forceinline__ void cp16(u32 dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(src) : "memory");
}
// one 64-token latent page (73,728 B) per CTA into shared memory; optionally the f32 partial store
extern "C" __global__ void tile(const uint4* kv, const int* pages, float* part, int store) {
  extern __shared__ __align__(16) unsigned char sm[];
  const int page = __ldg(pages + blockIdx.x);
  const uint4* src = kv + (long long)page * 4608;
  u32 base = (u32)__cvta_generic_to_shared(sm);
  for (int i = threadIdx.x; i < 4608; i += 256) cp16(base + i * 16, src + i);
  asm volatile("cp.async.commit_group;\ncp.async.wait_group 0;\n" ::: "memory");
  __syncthreads();
  float acc = reinterpret_cast<float*>(sm)[threadIdx.x];
  if (store) {
    for (int i = threadIdx.x; i < 8192; i += 256) part[(long long)blockIdx.x * 8192 + i] = acc + i;
  } else if (acc == 12345.f) part[0] = acc;
}
// all CTAs arrive on a counter and spin until everyone has (co-resident grid); the last to leave
// resets it so that graph replays reuse it
extern "C" __global__ void grid_barrier(unsigned* ctr) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    unsigned n = gridDim.x;
    atomicAdd(ctr, 1u);
    while (atomicAdd(ctr, 0u) < n) {}
    if (atomicAdd(ctr + 1, 1u) == n - 1) { ctr[1] = 0; atomicExch(ctr, 0u); }
  }
  __syncthreads();
}
"""


def per_launch_us(fn, reps=40, iters=20):
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        with cp.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
            for _ in range(reps):
                fn()
    g.replay()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        g.replay()
        e.record()
        e.synchronize()
        ts.append(s.elapsed_time(e) * 1e3 / reps)
    return float(np.median(ts))


def main():
    mod = cp.RawModule(code=SRC, options=("--std=c++17",))
    f = {n: mod.get_function(n) for n in ("empty_k", "chase", "tile", "grid_barrier")}
    f["tile"].max_dynamic_shared_size_bytes = 73728
    out = cp.zeros(16, dtype=cp.int32)
    idx = cp.asarray(np.random.permutation(1 << 20).astype(np.int32))
    kv = cp.zeros((1 << 14) * 4608 * 4, dtype=cp.uint32)  # 16,384 pages
    pages = cp.asarray(np.random.permutation(1 << 14)[:132].astype(np.int32))
    part = cp.zeros(132 * 8192, dtype=cp.float32)
    ctr = cp.zeros(2, dtype=cp.uint32)
    rows = []
    for ctas in (1, 64, 132):
        rows.append((f"empty kernel, {ctas} CTAs", per_launch_us(lambda: f["empty_k"]((ctas,), (256,), (out,)))))
    for hops in (1, 2, 3):
        rows.append((f"{hops} dependent load(s), 64 CTAs",
                     per_launch_us(lambda: f["chase"]((64,), (256,), (idx, np.int32(hops), out)))))
    for ctas in (1, 64, 128):
        rows.append((f"page-table load + one 72 KB tile per CTA, {ctas} CTAs",
                     per_launch_us(lambda: f["tile"]((ctas,), (256,), (kv, pages, part, np.int32(0)), shared_mem=73728))))
        rows.append((f"  + 32 KB f32 partial store per CTA, {ctas} CTAs",
                     per_launch_us(lambda: f["tile"]((ctas,), (256,), (kv, pages, part, np.int32(1)), shared_mem=73728))))
    for ctas in (64, 132):
        rows.append((f"grid barrier, {ctas} CTAs", per_launch_us(lambda: f["grid_barrier"]((ctas,), (256,), (ctr,)))))
    print(f"latency probe on {torch.cuda.get_device_name()} (us per launch, graph replay of 40)")
    for name, t in rows:
        print(f"  {name:55s} {t:6.2f}")


if __name__ == "__main__":
    main()

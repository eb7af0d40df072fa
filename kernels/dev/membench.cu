// Read-bandwidth microbenchmark (dev only): how fast can one CTA per SM stream global memory
// with plain 16-byte loads, cp.async rings and bulk (TMA) copies? Built by mla_decode_check.py.
typedef unsigned int u32;
typedef unsigned long long u64;

__device__ __forceinline__ u32 smem_u32(const void* p) {
  u32 r;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
  return r;
}

// n: uint4 elements per CTA
extern "C" __global__ void __launch_bounds__(256) mb_ldg(const uint4* src, long long n, u32* out) {
  const uint4* p = src + blockIdx.x * n;
  u32 acc = 0;
  for (long long i = threadIdx.x; i < n; i += 256 * 8) {
    uint4 v[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) v[k] = __ldg(p + i + k * 256);
#pragma unroll
    for (int k = 0; k < 8; ++k) acc ^= v[k].x ^ v[k].w;
  }
  if (acc == 0x9e3779b9u) out[0] = acc;
}

// ring of NST stages of 32 KB; each thread copies 8 x 16 B per stage
template <int NST>
__device__ void cpasync_ring(const uint4* src, long long n, u32* out) {
  extern __shared__ uint4 ring[];
  const uint4* p = src + blockIdx.x * n;
  const long long chunks = n / 2048;
  auto issue = [&](long long c) {
    const u32 dst = smem_u32(ring + (c % NST) * 2048);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const int e = threadIdx.x + 256 * k;
      asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst + e * 16), "l"(p + c * 2048 + e) : "memory");
    }
  };
  for (int s = 0; s < NST - 1; ++s) {
    if (s < chunks) issue(s);
    asm volatile("cp.async.commit_group;\n" ::: "memory");
  }
  u32 acc = 0;
  for (long long c = 0; c < chunks; ++c) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(NST - 2) : "memory");
    __syncthreads();
    if (c + NST - 1 < chunks) issue(c + NST - 1);
    asm volatile("cp.async.commit_group;\n" ::: "memory");
    const uint4 v = ring[(c % NST) * 2048 + threadIdx.x];
    acc ^= v.x;
  }
  if (acc == 0x9e3779b9u) out[0] = acc;
}
extern "C" __global__ void __launch_bounds__(256) mb_cpasync3(const uint4* s, long long n, u32* o) { cpasync_ring<3>(s, n, o); }
extern "C" __global__ void __launch_bounds__(256) mb_cpasync6(const uint4* s, long long n, u32* o) { cpasync_ring<6>(s, n, o); }

// ring of NST stages of 32 KB, one bulk copy per stage issued by thread 0, mbarrier completion
template <int NST>
__device__ void bulk_ring(const uint4* src, long long n, u32* out) {
  extern __shared__ uint4 ring[];
  __shared__ __align__(8) u64 bars[NST];
  const uint4* p = src + blockIdx.x * n;
  const long long chunks = n / 2048;
  if (threadIdx.x == 0) {
    for (int s = 0; s < NST; ++s) asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n" ::"r"(smem_u32(&bars[s])) : "memory");
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  auto issue = [&](long long c) {
    if (threadIdx.x == 0) {
      const u32 bar = smem_u32(&bars[c % NST]);
      asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(32768) : "memory");
      asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
      asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];\n" ::"r"(
                       smem_u32(ring + (c % NST) * 2048)),
                   "l"(p + c * 2048), "r"(32768), "r"(bar)
                   : "memory");
    }
  };
  for (int s = 0; s < NST - 1; ++s)
    if (s < chunks) issue(s);
  u32 acc = 0;
  for (long long c = 0; c < chunks; ++c) {
    const u32 bar = smem_u32(&bars[c % NST]);
    const u32 par = (u32)((c / NST) & 1);
    u32 done = 0;
    while (!done)
      asm volatile("{\n.reg .pred q;\nmbarrier.try_wait.parity.shared::cta.b64 q, [%1], %2;\nselp.u32 %0, 1, 0, q;\n}\n"
                   : "=r"(done)
                   : "r"(bar), "r"(par)
                   : "memory");
    __syncthreads();
    if (c + NST - 1 < chunks) issue(c + NST - 1);
    const uint4 v = ring[(c % NST) * 2048 + threadIdx.x];
    acc ^= v.x;
  }
  if (acc == 0x9e3779b9u) out[0] = acc;
}
extern "C" __global__ void __launch_bounds__(256) mb_bulk3(const uint4* s, long long n, u32* o) { bulk_ring<3>(s, n, o); }
extern "C" __global__ void __launch_bounds__(256) mb_bulk6(const uint4* s, long long n, u32* o) { bulk_ring<6>(s, n, o); }

// Small helpers shared by the kernel families (NVRTC, no CUDA headers); the decode kernels keep
// theirs in mla_decode_common.cuh, and their combine uses the block reductions here.
#pragma once

typedef unsigned short u16;
typedef unsigned char u8;
typedef unsigned int u32;
typedef long long i64;
typedef unsigned long long u64;

namespace util {

// Programmatic dependent launch (sm_90+). The host launches a step's kernels with programmatic
// stream serialisation where it can (`Kernels::launch_step`), so a kernel may become resident while
// the one ahead of it in the stream is still running. Such a kernel calls this before touching
// global memory: it waits until the grids ahead have finished and their writes are visible, then
// lets the next kernel in the stream become resident (only one kernel ahead: that one waits here
// in turn). A no-op below sm_90 and in an ordinary launch.
__device__ __forceinline__ void await_prior_kernels() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// The one exception to "nothing global before the wait": immutable weights. With WEIGHT_PREFETCH
// (a -D define, off by default until measured), a step kernel asks L2 for its weight bytes before
// await_prior_kernels(), so that their DRAM round trip overlaps the kernel ahead of it. Nothing in a
// step writes weights, so this cannot race. `p` 16-byte aligned; the size is rounded down to 16.
#ifndef WEIGHT_PREFETCH
#define WEIGHT_PREFETCH 0
#endif
__device__ __forceinline__ void prefetch_weights_l2(const void* p, unsigned bytes) {
#if WEIGHT_PREFETCH && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (bytes >= 16) asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" ::"l"(p), "r"(bytes & ~15u) : "memory");
#endif
}

__device__ __forceinline__ float bf16_to_f32(u16 b) { return __uint_as_float(((u32)b) << 16); }
__device__ __forceinline__ u16 f32_to_bf16(float x) {
  u16 r;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000u); }

__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024). `scratch` holds 32 floats.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nw ? scratch[lane] : 0.f;
  return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nw ? scratch[lane] : neg_inf();
  return warp_max(v);
}

// A GEMM's output element in its mode (the host's OutMode): 0 bf16, 1 f32, 2 f32 accumulate
// (bf16_stream.cu, fp8_skinny.cu; fp8_gemm.cu keeps its own: written in place there, its
// measured SASS changes).
__device__ __forceinline__ void store_out(void* out, i64 idx, int mode, float v) {
  if (mode == 0) ((u16*)out)[idx] = f32_to_bf16(v);
  else if (mode == 1) ((float*)out)[idx] = v;
  else ((float*)out)[idx] += v;
}

// Split-k linears whose last CTA per column tile sums the splits' f32 partials (fp8_skinny.cu,
// bf16_stream.cu). After the CTA wrote its partials: whether it is the last of the tile's
// `splits` to arrive at `counter` (then every split's partials are visible to it); `flag` is a
// shared int. Every thread of the CTA calls it.
__device__ __forceinline__ bool last_split_arrived(unsigned int* counter, unsigned int splits, int* flag) {
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0) *flag = atomicAdd(counter, 1u) == splits - 1;
  __syncthreads();
  if (!*flag) return false;
  __threadfence();
  return true;
}
// The sum over splits, in split order, of p[s * stride] (read through L2: written by other SMs),
// eight loads in flight: a dependent chain of L2 round trips per split was most of a small
// layer's time at 28-56 splits.
__device__ __forceinline__ float split_sum(const float* p, int splits, i64 stride) {
  float v = 0.f;
  int s = 0;
  for (; s + 8 <= splits; s += 8) {
    float x[8];
#pragma unroll
    for (int u = 0; u < 8; u++) x[u] = __ldcg(p + (s + u) * stride);
#pragma unroll
    for (int u = 0; u < 8; u++) v += x[u];
  }
  for (; s < splits; s++) v += __ldcg(p + s * stride);
  return v;
}

// cp.async staging (moe.cu, moe_wgmma.cu; mla_decode_common.cuh keeps its own copy in namespace
// mla): a shared-memory address, a 16-byte copy that zero-fills and reads nothing when !valid,
// and the group commit / wait.
__device__ __forceinline__ u32 smem_u32(const void* p) {
  u32 r;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
  return r;
}
__device__ __forceinline__ void cp_async_16(u32 dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

// fp8 e4m3 (OCP, finite max 448): decode one byte.
__device__ __forceinline__ float e4m3_to_f32(u8 b) {
  u32 sign = (b >> 7) & 1, exp = (b >> 3) & 15, man = b & 7;
  float v;
  if (exp == 0) v = ldexpf((float)man, -9);  // subnormal: man/8 * 2^-6
  else if (exp == 15 && man == 7) v = __int_as_float(0x7fc00000u);  // NaN
  else v = ldexpf((float)(8 + man), (int)exp - 10);  // (1 + man/8) * 2^(exp-7)
  return sign ? -v : v;
}
// Round to nearest even, saturating at +-448 (the hardware's satfinite conversion on sm_89+,
// the same rounding in software before).
__device__ __forceinline__ u8 f32_to_e4m3(float x) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  unsigned short r;
  asm("{ .reg .b16 t; cvt.rn.satfinite.e4m3x2.f32 t, %1, %1; mov.b16 %0, t; }" : "=h"(r) : "f"(x));
  return (u8)(r & 0xff);
#else
  u32 sign = signbit(x) ? 0x80u : 0u;
  float a = fabsf(x);
  if (a != a) return 0x7f;
  if (a >= 464.f) return (u8)(sign | 0x7e);  // 464 is the midpoint between 448 and the next step
  int e;
  frexpf(a, &e);           // a = f * 2^e, f in [0.5, 1)
  int big_e = e - 1 + 7;   // biased exponent of a normal e4m3
  if (big_e < 1) return (u8)(sign | (u32)rintf(a * 512.f));  // subnormals (8 rounds up to 2^-6)
  int m = (int)rintf(ldexpf(a, 3 - (big_e - 7))) - 8;
  if (m == 8) { m = 0; big_e += 1; }
  if (big_e > 15 || (big_e == 15 && m == 7)) return (u8)(sign | 0x7e);
  return (u8)(sign | ((u32)big_e << 3) | (u32)m);
#endif
}

}  // namespace util

// The latent cache's fp8 layout per token per layer (kv_lora = 512, rope = 64: 656 bytes):
//   [kv_lora x e4m3 c_kv][kv_lora/128 x f32 scale][rope x bf16 k_pe]
// The bf16 layout is [kv_lora + rope x bf16]. Offsets of one token's entry, in bytes:
__device__ __forceinline__ int fp8_token_bytes(int kv_lora, int rope) { return kv_lora + ((kv_lora + 127) / 128) * 4 + rope * 2; }

// wgmma_ops.cuh — the warpgroup MMA primitives the wgmma kernels share (sm_90a; NVRTC, no CUDA
// headers): fence, commit and wait, the async-proxy fence, and the shared-memory descriptor of
// the 128-byte swizzle. The MMA wrappers themselves are generated per shape
// (kernels/dev/gen_wgmma.py) into the files that use them.
#pragma once

#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define HAS_WGMMA 1
#endif

#ifdef HAS_WGMMA
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// shared-memory matrix descriptor, 128-byte swizzle: start address, leading and stride byte
// offsets (16-byte units), swizzle mode 1 (128 B) in bits 62-63
__device__ __forceinline__ unsigned long long sw128_desc(unsigned int saddr, unsigned int lbo, unsigned int sbo) {
  return (unsigned long long)((saddr & 0x3FFFFu) >> 4) | ((unsigned long long)(lbo >> 4) << 16) | ((unsigned long long)(sbo >> 4) << 32) |
         (1ull << 62);
}
#endif

// mla_decode.cu — paged MLA decode over the latent cache (absorbed form), DeepSeek-V2/V3.
//
// Device code only. Compiled at run time by NVRTC, e.g. options {"--std=c++17", "-arch=sm_90a"}.
// Split over mla_decode_*.cuh in this directory: compile with --include-path=<this directory>
// (the Rust loader passes the headers to NVRTC by name). bf16 is carried as raw `unsigned short` bits.
// On targets other than sm_90a the wgmma kernel compiles to a trap stub; the mma.sync kernels
// (sm_80+) are the portable fallback.
//
// Semantics (per sequence b, query i of q_len, head h; row r = i*heads + h):
//   query position  p_i = seq_len[b] - q_len + i, attends to cache positions 0..=p_i
//   s_j   = scale * dot(q[b,i,h,0:576], cache_j[0:576])
//   o_lat = sum_j softmax(s)_j * cache_j[0:512]           -> out [B, q_len, H, 512] bf16
//   lse   = ln(sum_j exp(s_j))                            -> lse [B, q_len, H] f32
// A row with no visible position (seq_len 0) gets out = 0 and lse = -inf.
//
// Split-KV: split `s` of sequence b covers cache positions [s*chunk, min((s+1)*chunk, seq_len)).
// split_offsets[b] .. split_offsets[b+1] are the split slots of sequence b. A sequence with one
// split is written straight to out/lse; one with several writes partials (part_o [slots, q_len*H,
// 512] bf16, normalised; part_lse [slots, q_len*H] f32) that
// mla_decode_combine merges. See kernels/DESIGN.md for grids, launch rules and the split heuristic.
//
// Kernels (all decode kernels share one argument list, see MLA_DECODE_ARGS; 256 threads unless said):
//   mla_decode_mma_r16_t32_s2  16 rows/CTA, 32-token tiles, 2 stages, 2 CTAs/SM  (H=16 without sm_90a)
//   mla_decode_mma_r16_t32     16 rows/CTA, 32-token tiles, 5 stages, 1 CTA/SM   (fallback, any H)
//   mla_decode_mma_r32_t32     32 rows/CTA, 32-token tiles, 5 stages, 1 CTA/SM   (H=16, q_len=2)
//   mla_decode_wgmma_r64       64 rows/CTA, 64-token tiles, wgmma, sm_90a only    (H=128)
//   mla_decode_wgmma_pp        wgmma_r64 with the warpgroups owning alternate tiles (S, softmax, P
//                              published), each adding P V for its half of O   (H=128, sm_90a)
//   mla_decode_wgmma_t16       16 rows/CTA, transposed wgmma (tokens in M), 2 warpgroups on
//                              alternate 64-token tiles, sm_90a only              (H=16)
//   mla_decode_fp8_mma_r16_t32_s2 / _fp8_mma_r16_t32   the same over an fp8 cache (656-byte entries)
//   mla_decode_fp8_wgmma_r64   wgmma_r64 over an fp8 cache: raw entries land in the stage and are
//                              expanded to bf16 in place by both warpgroups     (H=128, sm_90a)
//   mla_decode_fp8_wgmma_r64_ov  the same with tile t+1 expanded under tile t's P V (not picked yet)
//   mla_decode_fp8_wgmma_pp    wgmma_pp over an fp8 cache: each owner expands its tile in place
//                              before its S                                     (H=128, sm_90a)
//   mla_decode_fp8_wgmma_t16   wgmma_t16 over an fp8 cache: each warpgroup expands its own stage
//                              beside the other's compute                       (H=16, sm_90a)
//   mla_decode_fp8_f8mma_r64   64 rows over an fp8 cache with the math on the FP8 tensor cores (Q and
//                              P quantized to e4m3), 3 warpgroups, 384 threads  (H=128, sm_90a)
//   mla_decode_fp8_f8mma_r64_cp  the same with the consumers scaling P into their own P' blocks
//   mla_decode_fp8_f8mma_r64_one the same for caches with one scale per token (not written yet)
//   mla_decode_fp8_f8mma_pp    the FP8 math with two warpgroups owning alternate tiles (S, softmax,
//                              P' by the owner; V^T P' by both for their 256 dims), 256 threads
//   mla_decode_combine         merges split partials (grid rows x B x 1-8 slices, 256 threads)


#include "mla_decode_common.cuh"
#include "mla_decode_mma.cuh"
#include "mla_decode_wgmma.cuh"
#include "mla_decode_wgmma_pp.cuh"
#include "mla_decode_wgmma_t16.cuh"
#include "mla_decode_f8mma.cuh"
#include "mla_decode_f8pp.cuh"
#include "mla_decode_combine.cuh"


// ------------------------------------------------------------------------------------------------
// entry points
// ------------------------------------------------------------------------------------------------
#define MLA_DECODE_ARGS                                                                              \
  const u16 *__restrict__ q, const u16 *__restrict__ kv, const int *__restrict__ block_table,        \
      const int *__restrict__ seq_lens, const int *__restrict__ split_offsets, u16 *__restrict__ out, \
      float *__restrict__ lse, u16 *__restrict__ part_o, float *__restrict__ part_lse, int q_len,    \
      int heads, int page_size, int max_pages, int chunk, float scale, int *__restrict__ sync
#define MLA_MAKE_ARGS                                                                                 \
  mla::Args a{q, kv, block_table, seq_lens, split_offsets, out, lse, part_o, part_lse, q_len, heads, \
              page_size, max_pages, chunk, scale, sync}

extern "C" __global__ void __launch_bounds__(256, 2) mla_decode_mma_r16_t32_s2(MLA_DECODE_ARGS) {
  extern __shared__ __align__(16) unsigned char smem[];
  MLA_MAKE_ARGS;
  mla::mma_decode<1, 32, 2>(a, smem);
}
extern "C" __global__ void __launch_bounds__(256, 1) mla_decode_mma_r16_t32(MLA_DECODE_ARGS) {
  extern __shared__ __align__(16) unsigned char smem[];
  MLA_MAKE_ARGS;
  mla::mma_decode<1, 32, 5>(a, smem);
}
extern "C" __global__ void __launch_bounds__(256, 1) mla_decode_mma_r32_t32(MLA_DECODE_ARGS) {
  extern __shared__ __align__(16) unsigned char smem[];
  MLA_MAKE_ARGS;
  mla::mma_decode<2, 32, 5>(a, smem);
}
extern "C" __global__ void __launch_bounds__(256, 1) mla_decode_wgmma_r64(MLA_DECODE_ARGS) {
  extern __shared__ __align__(16) unsigned char smem[];
  MLA_MAKE_ARGS;
  mla::wgmma_decode(a, smem);
}
extern "C" __global__ void __launch_bounds__(256, 1) mla_decode_wgmma_pp(MLA_DECODE_ARGS) {
  extern __shared__ __align__(16) unsigned char smem[];
  MLA_MAKE_ARGS;
  mla::wgmma_pp_decode(a, smem);
}
extern "C" __global__ void __launch_bounds__(256, 1) mla_decode_wgmma_t16(MLA_DECODE_ARGS) {
  extern __shared__ __align__(16) unsigned char smem[];
  MLA_MAKE_ARGS;
  mla::wgmma_t16_decode(a, smem);
}
// fp8 cache (656-byte entries): the same kernels with each tile expanded to bf16 in shared memory
extern "C" __global__ void __launch_bounds__(256, 2) mla_decode_fp8_mma_r16_t32_s2(MLA_DECODE_ARGS) {
  extern __shared__ __align__(16) unsigned char smem[];
  MLA_MAKE_ARGS;
  mla::mma_decode<1, 32, 2, true>(a, smem);
}
extern "C" __global__ void __launch_bounds__(256, 1) mla_decode_fp8_mma_r16_t32(MLA_DECODE_ARGS) {
  extern __shared__ __align__(16) unsigned char smem[];
  MLA_MAKE_ARGS;
  mla::mma_decode<1, 32, 4, true>(a, smem);
}
extern "C" __global__ void __launch_bounds__(256, 1) mla_decode_fp8_wgmma_t16(MLA_DECODE_ARGS) {
  extern __shared__ __align__(16) unsigned char smem[];
  MLA_MAKE_ARGS;
  mla::wgmma_t16_decode<true>(a, smem);
}
extern "C" __global__ void __launch_bounds__(256, 1) mla_decode_fp8_wgmma_r64(MLA_DECODE_ARGS) {
  extern __shared__ __align__(16) unsigned char smem[];
  MLA_MAKE_ARGS;
  mla::wgmma_decode<1>(a, smem);
}
extern "C" __global__ void __launch_bounds__(256, 1) mla_decode_fp8_wgmma_r64_ov(MLA_DECODE_ARGS) {
  extern __shared__ __align__(16) unsigned char smem[];
  MLA_MAKE_ARGS;
  mla::wgmma_decode<2>(a, smem);
}
extern "C" __global__ void __launch_bounds__(256, 1) mla_decode_fp8_wgmma_pp(MLA_DECODE_ARGS) {
  extern __shared__ __align__(16) unsigned char smem[];
  MLA_MAKE_ARGS;
  mla::wgmma_pp_decode<true>(a, smem);
}
// fp8 cache, FP8 tensor-core math (mla_decode_f8mma.cuh): 384 threads
extern "C" __global__ void __launch_bounds__(384, 1) mla_decode_fp8_f8mma_r64(MLA_DECODE_ARGS) {
  extern __shared__ __align__(16) unsigned char smem[];
  MLA_MAKE_ARGS;
  mla::f8mma_decode(a, smem);
}
extern "C" __global__ void __launch_bounds__(384, 1) mla_decode_fp8_f8mma_r64_cp(MLA_DECODE_ARGS) {
  extern __shared__ __align__(16) unsigned char smem[];
  MLA_MAKE_ARGS;
  mla::f8mma_decode<mla::CONSUMER_P>(a, smem);
}
extern "C" __global__ void __launch_bounds__(384, 1) mla_decode_fp8_f8mma_r64_one(MLA_DECODE_ARGS) {
  extern __shared__ __align__(16) unsigned char smem[];
  MLA_MAKE_ARGS;
  mla::f8mma_decode<mla::ONE_SCALE>(a, smem);
}
// fp8 cache, FP8 tensor-core math with ping-pong warpgroups (mla_decode_f8pp.cuh): 256 threads
extern "C" __global__ void __launch_bounds__(256, 1) mla_decode_fp8_f8mma_pp(MLA_DECODE_ARGS) {
  extern __shared__ __align__(16) unsigned char smem[];
  MLA_MAKE_ARGS;
  mla::f8pp_decode(a, smem);
}
extern "C" __global__ void __launch_bounds__(256) mla_decode_combine(const u16* __restrict__ part_o,
                                                                    const float* __restrict__ part_lse,
                                                                    const int* __restrict__ split_offsets,
                                                                    u16* __restrict__ out, float* __restrict__ lse,
                                                                    int rows_total, int* __restrict__ sync) {
  mla::combine(part_o, part_lse, split_offsets, out, lse, rows_total, sync);
}


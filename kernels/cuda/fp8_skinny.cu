// fp8_skinny.cu — the block-scaled FP8 linear for decode-sized batches (m <= 16) in one launch:
// bf16 activations in, FP8 weights streamed once at HBM speed, bf16/f32 out.
//
//  fp8_skinny_m16  C[r, c] (mode) sum_kb s_a[r, kb] * s_w[c/128, kb] * sum_{k in kb} q_a[r, k] * q_w[c, k]
//  fp8_skinny_q32/_q64  the same from rows already quantized (32 / 64 rows; not chosen yet)
//  fp8_grouped_stream  fp8_skinny_m16 over moe_align's tiles of <= 16 rows (the FP8 expert
//               GEMMs at decode sizes): each CTA one tile's gathered rows against 128 columns of
//               its expert's weights, no k split (the tiles fill the SMs)
//
// Why not fp8_gemm_m16 (quantize kernel + smem-tiled GEMM + split-k reduce): at m <= 16 the work
// is reading the weights, and three launches, a smem round trip and __syncthreads per k block
// kept it at ~65% of copy bandwidth. Here
//  - each warp loads its weight fragments straight from global memory into registers (16-byte
//    streaming loads, `D` k blocks ahead) in the order mma.sync wants them: within a 128-wide
//    k block, the k index is permuted the same way for A and W (a dot product does not care), so
//    that one thread's two 16-byte chunks (bytes cq*16.. and 64+cq*16..) are exactly its B
//    fragments for the block's four m16n8k32 steps;
//  - the CTA quantizes its activation rows per 128-channel block itself (s = amax / 448,
//    q = e4m3(x / s): the arithmetic of fp8_quant_act, so the result is the same) into a small
//    double-buffered smem tile, prefetching the next block's bf16 into registers;
//  - k splits (blockIdx.y) write f32 partials and the last CTA of a column tile to finish
//    (a counter per tile, reset by that CTA) sums them and writes C: no second launch.
// Numerics as fp8_gemm.cu: tensor-core sums within one 128 k block, promoted to f32 with both
// scales. k must be a multiple of 16; rows past m and k past k are zero-filled.
// Output modes: 0 bf16, 1 f32, 2 f32 accumulate (C += result).
#include "util.cuh"
#include "fp8_mma.cuh"

#define SK_LDA 192  // smem bytes per activation row: 16-byte reads of rows g and g+1 hit disjoint banks

__device__ __forceinline__ uint4 sk_stream16(const u8* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
  return r;
}

__device__ __forceinline__ u32 sk_pack4(float a, float b, float c, float d) {
  return (u32)util::f32_to_e4m3(a) | ((u32)util::f32_to_e4m3(b) << 8) | ((u32)util::f32_to_e4m3(c) << 16) | ((u32)util::f32_to_e4m3(d) << 24);
}

// MT m16 tiles (rows 16 * MT), NJ n8 tiles per warp (8 warps: 64 * NJ columns per CTA, inside
// one 128-column scale block), D k blocks of weights in flight per thread. QUANTIZED: `x` holds
// e4m3 codes [m, k] and `x_scale` their scales [m, ceil(k/128)] (fp8_quant_act's output) instead
// of bf16 rows: each CTA only copies them, which is what makes 32 and 64 rows pay (quantizing in
// every CTA cost more than the weights' reads there).
// GATHER: row r of the tile is x's row arow[r] (shared, -1: none) and goes to C's row out_row0 +
// r; one k split (blockIdx.y is the tile).
template <int MT, int NJ, int D, bool QUANTIZED, bool GATHER = false>
__device__ __forceinline__ void fp8_skinny_body(const void* __restrict__ x, const float* __restrict__ x_scale, const u8* __restrict__ w,
                                                const float* __restrict__ w_scale, void* __restrict__ c, float* __restrict__ part,
                                                u32* __restrict__ counters, int mode, int m, int n, int k, int kb_per_split,
                                                const int* arow = nullptr, i64 out_row0 = 0) {
  static_assert(!GATHER || MT == 1, "a gathered tile is 16 rows (the callers' arow)");
  if (!GATHER && MT == 1 && (k & 15) == 0 && (int)threadIdx.x < 64 * NJ) {  // this CTA's weight rows (util::prefetch_weights_l2)
    // (the first two k blocks: the ramp is what it hides; a whole large layer would overflow L2)
    const int col = blockIdx.x * 64 * NJ + threadIdx.x, e0 = blockIdx.y * kb_per_split * 128, e1 = min(e0 + min(kb_per_split, 2) * 128, k);
    if (col < n && e1 > e0) util::prefetch_weights_l2(w + (i64)col * k + e0, (unsigned)(e1 - e0));
  }
  util::await_prior_kernels();
  constexpr int ROWS = 16 * MT, COLS = 64 * NJ, RPW = ROWS / 8;  // activation rows each warp stages
  __shared__ __align__(16) u8 as[2][ROWS][SK_LDA];
  __shared__ float ss[2][ROWS];
  __shared__ int last;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, cq = lane & 3;
  const int kb_total = (k + 127) / 128;
  const int kb0 = GATHER ? 0 : blockIdx.y * kb_per_split, kb1 = min(kb_total, kb0 + kb_per_split), nk = kb1 - kb0;
  const int n0 = blockIdx.x * COLS, wcol = n0 + warp * NJ * 8, nb = n0 / 128;
  const float* sw = w_scale + (i64)nb * kb_total;

  // the next k block's activations, row warp + 8 i, channels lane * 4 ..: four bf16 (or, when
  // QUANTIZED, four codes in .x, and lane i < RPW holds row warp + 8 i's scale in ar_s)
  uint2 ar[RPW];
  float ar_s = 0.f;
  auto a_fetch = [&](int kb) {
    if constexpr (QUANTIZED) {
      const int r = warp + 8 * lane;
      if constexpr (GATHER) {
        const int src = lane < RPW ? arow[r] : -1;
        ar_s = (r < m && src >= 0) ? __ldg(x_scale + (i64)src * kb_total + kb) : 0.f;
      } else {
        ar_s = (lane < RPW && r < m) ? __ldg(x_scale + (i64)r * kb_total + kb) : 0.f;
      }
    }
#pragma unroll
    for (int i = 0; i < RPW; i++) {
      int r = warp + 8 * i;
      const int col = kb * 128 + lane * 4;
      bool ok = r < m && col < k;
      if constexpr (GATHER) {
        r = arow[r];  // the source row (rows past the tile's hold -1)
        ok = ok && r >= 0;
      }
      if constexpr (QUANTIZED) {
        ar[i].x = ok ? __ldg(reinterpret_cast<const u32*>(reinterpret_cast<const u8*>(x) + (i64)r * k + col)) : 0u;
      } else {
        ar[i] = ok ? __ldg(reinterpret_cast<const uint2*>(reinterpret_cast<const u16*>(x) + (i64)r * k + col)) : make_uint2(0u, 0u);
      }
    }
  };
  auto a_store = [&](int buf) {
#pragma unroll
    for (int i = 0; i < RPW; i++) {
      const int r = warp + 8 * i;
      if constexpr (QUANTIZED) {
        *reinterpret_cast<u32*>(&as[buf][r][lane * 4]) = ar[i].x;
        if (lane == i) ss[buf][r] = ar_s;
        continue;
      }
      const float v0 = util::bf16_to_f32(ar[i].x & 0xffff), v1 = util::bf16_to_f32(ar[i].x >> 16);
      const float v2 = util::bf16_to_f32(ar[i].y & 0xffff), v3 = util::bf16_to_f32(ar[i].y >> 16);
      const float amax = util::warp_max(fmaxf(fmaxf(fabsf(v0), fabsf(v1)), fmaxf(fabsf(v2), fabsf(v3))));
      const float s = amax / 448.f;
      *reinterpret_cast<u32*>(&as[buf][r][lane * 4]) = amax > 0.f ? sk_pack4(v0 / s, v1 / s, v2 / s, v3 / s) : 0u;
      if (lane == 0) ss[buf][r] = s;
    }
  };
  uint4 wb[D][NJ][2];
  auto w_fetch = [&](uint4 (&dst)[NJ][2], int kb) {
#pragma unroll
    for (int j = 0; j < NJ; j++) {
      const int col = wcol + j * 8 + g;
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int kc = kb * 128 + h * 64 + cq * 16;
        dst[j][h] = (kb < kb1 && col < n && kc < k) ? sk_stream16(w + (i64)col * k + kc) : make_uint4(0u, 0u, 0u, 0u);
      }
    }
  };
  float acc[MT][NJ][4];
#pragma unroll
  for (int i = 0; i < MT; i++)
#pragma unroll
    for (int j = 0; j < NJ; j++)
#pragma unroll
      for (int q = 0; q < 4; q++) acc[i][j][q] = 0.f;
  // one 128-wide k block: four m16n8k32 steps per (m tile, n tile), then promotion with scales.
  // Step s takes chunk s / 2 (bytes cq*16.. or 64+cq*16..) and its half s % 2: 4 bytes as the
  // fragment's k 0..15 part (a0/a1, b0), the next 4 as its k 16..31 part (a2/a3, b1).
  auto compute = [&](const uint4 (&wv)[NJ][2], int buf, int kb) {
    float t[MT][NJ][4];
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
      for (int j = 0; j < NJ; j++)
#pragma unroll
        for (int q = 0; q < 4; q++) t[i][j][q] = 0.f;
#pragma unroll
    for (int ch = 0; ch < 2; ch++) {
#pragma unroll
      for (int i = 0; i < MT; i++) {
        const uint4 lo = *reinterpret_cast<const uint4*>(&as[buf][i * 16 + g][ch * 64 + cq * 16]);
        const uint4 hi = *reinterpret_cast<const uint4*>(&as[buf][i * 16 + g + 8][ch * 64 + cq * 16]);
#pragma unroll
        for (int j = 0; j < NJ; j++) {
          mma_e4m3(t[i][j], lo.x, hi.x, lo.y, hi.y, wv[j][ch].x, wv[j][ch].y);
          mma_e4m3(t[i][j], lo.z, hi.z, lo.w, hi.w, wv[j][ch].z, wv[j][ch].w);
        }
      }
    }
    const float s_w = __ldg(sw + kb);
#pragma unroll
    for (int i = 0; i < MT; i++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const float f = ss[buf][i * 16 + g + 8 * h] * s_w;
#pragma unroll
        for (int j = 0; j < NJ; j++) {
          acc[i][j][2 * h] += t[i][j][2 * h] * f;
          acc[i][j][2 * h + 1] += t[i][j][2 * h + 1] * f;
        }
      }
  };

  if (nk > 0) {
    a_fetch(kb0);
    a_store(0);
    if (nk > 1) a_fetch(kb0 + 1);
#pragma unroll
    for (int d = 0; d < D; d++) w_fetch(wb[d], kb0 + d);
    __syncthreads();
    for (int it = 0; it < nk; it += D) {
#pragma unroll
      for (int d = 0; d < D; d++) {
        const int i2 = it + d;
        if (i2 < nk) {
          const int buf = i2 & 1;
          compute(wb[d], buf, kb0 + i2);
          w_fetch(wb[d], kb0 + i2 + D);
          // the other buffer was last read in step i2 - 1, before the barrier that ended it
          if (i2 + 1 < nk) a_store(buf ^ 1);
          if (i2 + 2 < nk) a_fetch(kb0 + i2 + 2);
          __syncthreads();
        }
      }
    }
  }

  const bool split = !GATHER && gridDim.y > 1;
  auto emit = [&](i64 idx, float v) { util::store_out(c, idx, mode, v); };
#pragma unroll
  for (int i = 0; i < MT; i++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int r = i * 16 + g + 8 * h;
      if (r >= m) continue;
#pragma unroll
      for (int j = 0; j < NJ; j++)
#pragma unroll
        for (int q = 0; q < 2; q++) {
          const int col = wcol + j * 8 + 2 * cq + q;
          if (col >= n) continue;
          const float v = acc[i][j][2 * h + q];
          if constexpr (GATHER) emit((out_row0 + r) * n + col, v);
          else if (split) part[((i64)blockIdx.y * m + r) * n + col] = v;
          else emit((i64)r * n + col, v);
        }
    }
  if (!split) return;
  // the last split of this column tile to arrive sums the partials and resets the tile's
  // counter for the next launch
  if (!util::last_split_arrived(counters + blockIdx.x, gridDim.y, &last)) return;
  const int splits = gridDim.y;
  const i64 stride = (i64)m * n;
  for (int idx = tid; idx < m * COLS; idx += blockDim.x) {
    const int r = idx / COLS, col = n0 + idx % COLS;
    if (col >= n) continue;
    emit((i64)r * n + col, util::split_sum(part + (i64)r * n + col, splits, stride));
  }
  if (tid == 0) counters[blockIdx.x] = 0u;
}

#define SKINNY_ARGS                                                                                                   \
  const void *__restrict__ x, const float *__restrict__ x_scale, const u8 *__restrict__ w, const float *__restrict__ w_scale, \
      void *__restrict__ c, float *__restrict__ part, u32 *__restrict__ counters, int mode, int m, int n, int k, int kb_per_split
#define SKINNY_PASS x, x_scale, w, w_scale, c, part, counters, mode, m, n, k, kb_per_split

// fp8_skinny_m16 (bf16 rows, quantized in the CTA): 78 registers (ptxas, sm_90a), three CTAs
// per SM, two k blocks of weights in flight per thread, ~96 KB per SM. Up to 16 rows: the
// quantization each CTA repeats grows with m (at 64 rows it cost more than the weights' reads).
// fp8_skinny_q32 (rows quantized once by fp8_quant_act): 64 columns, four k blocks in flight,
// 128 registers, two CTAs per SM. fp8_skinny_q64: 128 columns, four k blocks in flight, 254
// registers, one CTA per SM (two CTAs at 128 registers spilled 300 bytes). ~64 KB per SM each.
extern "C" __global__ void __launch_bounds__(256) fp8_skinny_m16(SKINNY_ARGS) { fp8_skinny_body<1, 2, 2, false>(SKINNY_PASS); }
extern "C" __global__ void __launch_bounds__(256, 2) fp8_skinny_q32(SKINNY_ARGS) { fp8_skinny_body<2, 1, 4, true>(SKINNY_PASS); }
extern "C" __global__ void __launch_bounds__(256, 1) fp8_skinny_q64(SKINNY_ARGS) { fp8_skinny_body<4, 2, 4, true>(SKINNY_PASS); }

// Grid (ceil(n / 128), max tiles); 256 threads. x: bf16 rows, gathered as moe_gemm's (row(p) =
// a_rows[p] / a_div, or p); w: e4m3 [experts, n, k] with scales [experts, ceil(n / 128),
// ceil(k / 128)]; C: [pairs, n], mode 0 bf16 or 1 f32.
extern "C" __global__ void __launch_bounds__(256) fp8_grouped_stream(const u16* __restrict__ x, const int* __restrict__ a_rows, int a_div,
                                                                     const u8* __restrict__ w, const float* __restrict__ w_scale,
                                                                     const int* __restrict__ tiles, const int* __restrict__ num_tiles,
                                                                     void* __restrict__ c, int mode, int n, int k) {
  util::await_prior_kernels();  // the tile list and rows come from the kernels ahead
  __shared__ int arow[16];
  const int tile = blockIdx.y;
  if (tile >= *num_tiles) return;
  const int e = tiles[3 * tile], start = tiles[3 * tile + 1], rows = tiles[3 * tile + 2];
  if (threadIdx.x < 16) arow[threadIdx.x] = (int)threadIdx.x < rows ? (a_rows ? a_rows[start + threadIdx.x] / a_div : start + threadIdx.x) : -1;
  __syncthreads();
  const int kb_total = (k + 127) / 128, nb_total = (n + 127) / 128;
  fp8_skinny_body<1, 2, 2, false, true>(x, nullptr, w + (i64)e * n * k, w_scale + (i64)e * nb_total * kb_total, c, nullptr, nullptr, mode, rows, n,
                                         k, kb_total, arow, start);
}

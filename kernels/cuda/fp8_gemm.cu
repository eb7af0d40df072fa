// fp8_gemm.cu — block-scaled FP8 (e4m3) linear layers: DeepSeek-V3's weight format (one f32
// scale per 128x128 weight block) against activations quantized per token per 128 channels.
//
//  fp8_quant_act     x [m, k] (bf16 or f32) -> q [m, k] e4m3 and s [m, ceil(k/128)] f32 with
//                    s = amax/448 over each row's 128-channel block, q = e4m3(x / s); a zero
//                    block gets s = 0 and zero codes. One warp per (row, block); grid (m, ceil(kb/8)).
//                    s_kmajor stores s as [ceil(k/128), m] instead (what cuBLASLt's VEC128 reads).
//  fp8_gemm_m16/_m64 C[r, c] = sum_kb s_a[r, kb] * s_w[c/128, kb] * sum_{k in kb} q_a[r, k] * q_w[c, k]
//                    mma.sync m16n8k32 e4m3 -> f32 within a 128-wide k block, then promoted into
//                    f32 accumulators with both scales (the tensor cores' fp8 accumulation keeps
//                    fewer bits than f32, so no sum runs longer than one block before promotion).
//                    Tiles of 16 (decode) or 64 rows by 128 columns, 128-byte k steps, cp.async
//                    stages. Dense (tiles == null: row tiles along blockIdx.y) or grouped over
//                    MoE experts (moe_align's tile list (expert, first row, rows); A rows gathered
//                    through a_rows[p] / a_div). blockIdx.z splits the k blocks; with more than
//                    one split each writes f32 partials [split][m][n] for fp8_splitk_reduce.
//                    k must be a multiple of 16 (the tail of the last block is zero-filled).
//  fp8_splitk_reduce sums the partials into C.
// Output modes: 0 bf16, 1 f32, 2 f32 accumulate (C += result; the residual stream).
#include "util.cuh"
#include "fp8_mma.cuh"

#define FP8_BN 128
#define FP8_BK 128
#define FP8_LDS (FP8_BK + 16)  // bytes per smem row: 144 keeps ldmatrix conflict-free

__device__ __forceinline__ u32 f8_smem_addr(const void* p) { return (u32)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void f8_cp16(u32 dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}
__device__ __forceinline__ void f8_ldsm_x4(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n" : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
extern "C" __global__ void __launch_bounds__(256) fp8_quant_act(const void* __restrict__ x, int x_f32, u8* __restrict__ q,
                                                                float* __restrict__ s, int s_kmajor, int m, int k) {
  util::await_prior_kernels();
  const int kb_total = (k + 127) / 128;
  // rows along x (a routed batch has tokens x top-k rows, past y's 65535), 8 blocks per CTA on y
  const int row = blockIdx.x, kb = blockIdx.y * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= m || kb >= kb_total) return;
  float v[4];
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int c = kb * 128 + lane * 4 + i;
    v[i] = 0.f;
    if (c < k) v[i] = x_f32 ? ((const float*)x)[(i64)row * k + c] : util::bf16_to_f32(((const u16*)x)[(i64)row * k + c]);
  }
  float amax = fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])));
  amax = util::warp_max(amax);
  const float scale = amax / 448.f;
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int c = kb * 128 + lane * 4 + i;
    if (c < k) q[(i64)row * k + c] = amax > 0.f ? util::f32_to_e4m3(v[i] / scale) : (u8)0;
  }
  if (lane == 0) s[s_kmajor ? (i64)kb * m + row : (i64)row * kb_total + kb] = scale;
}

template <int BM, int STAGES>
__device__ __forceinline__ void fp8_gemm_body(const u8* __restrict__ a, const float* __restrict__ a_scale, const int* __restrict__ a_rows,
                                              int a_div, const u8* __restrict__ w, const float* __restrict__ w_scale,
                                              const int* __restrict__ tiles, const int* __restrict__ num_tiles, void* __restrict__ c,
                                              float* __restrict__ part, int mode, int m, int n, int k, int kb_per_split) {
  util::await_prior_kernels();
  // warps: BM 16 -> 1 x 8 (16 x 16 each); BM 64 -> 2 x 4 (32 x 32 each)
  constexpr int WM = BM == 16 ? 1 : 2, WN = 8 / WM;
  constexpr int MI = BM / WM / 16, NJ = FP8_BN / WN / 8;
  extern __shared__ __align__(16) u8 fp8_smem[];
  u8(*as)[BM][FP8_LDS] = reinterpret_cast<u8(*)[BM][FP8_LDS]>(fp8_smem);
  u8(*bs)[FP8_BN][FP8_LDS] = reinterpret_cast<u8(*)[FP8_BN][FP8_LDS]>(fp8_smem + STAGES * BM * FP8_LDS);
  __shared__ int arow[BM];
  int e = 0, start, rows;
  if (tiles) {
    if ((int)blockIdx.y >= *num_tiles) return;
    e = tiles[3 * blockIdx.y];
    start = tiles[3 * blockIdx.y + 1];
    rows = tiles[3 * blockIdx.y + 2];
  } else {
    start = blockIdx.y * BM;
    rows = min(BM, m - start);
  }
  const int n0 = blockIdx.x * FP8_BN, nb = blockIdx.x;
  const int kb_total = (k + FP8_BK - 1) / FP8_BK, nb_total = (n + FP8_BN - 1) / FP8_BN;
  const int kb0 = blockIdx.z * kb_per_split, kb1 = min(kb_total, kb0 + kb_per_split);
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wm = warp / WN, wn = warp % WN;
  for (int r = tid; r < BM; r += 256) arow[r] = r < rows ? (a_rows ? a_rows[start + r] / a_div : start + r) : -1;
  __syncthreads();
  const u8* wexp = w + (i64)e * n * k;
  const float* wsexp = w_scale + (i64)e * nb_total * kb_total + (i64)nb * kb_total;
  auto load = [&](int stage, int kb) {
    const int k0 = kb * FP8_BK;
    for (int idx = tid; idx < BM * 8; idx += 256) {
      const int r = idx >> 3, ch = idx & 7, src = arow[r], kc = k0 + ch * 16;
      const bool ok = src >= 0 && kc < k;
      f8_cp16(f8_smem_addr(&as[stage][r][ch * 16]), a + (ok ? (i64)src * k + kc : 0), ok);
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {
      const int idx = tid + i * 256, r = idx >> 3, ch = idx & 7, col = n0 + r, kc = k0 + ch * 16;
      const bool ok = col < n && kc < k;
      f8_cp16(f8_smem_addr(&bs[stage][r][ch * 16]), wexp + (ok ? (i64)col * k + kc : 0), ok);
    }
  };
  float acc[MI][NJ][4], tmp[MI][NJ][4];
#pragma unroll
  for (int i = 0; i < MI; i++)
#pragma unroll
    for (int j = 0; j < NJ; j++)
#pragma unroll
      for (int q = 0; q < 4; q++) acc[i][j][q] = 0.f;
  const int g = lane >> 2, cq = lane & 3;
  // this thread's accumulator rows: (i, half) -> wm * (BM / WM) + i * 16 + g + 8 * half
  int srow[MI][2];
#pragma unroll
  for (int i = 0; i < MI; i++)
#pragma unroll
    for (int h = 0; h < 2; h++) srow[i][h] = arow[wm * (BM / WM) + i * 16 + g + 8 * h];
  const int nk = kb1 - kb0;
#pragma unroll
  for (int s = 0; s < STAGES - 1; s++) {
    if (s < nk) load(s, kb0 + s);
    asm volatile("cp.async.commit_group;\n" ::: "memory");
  }
  for (int it = 0; it < nk; it++) {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(STAGES - 2) : "memory");
    __syncthreads();
    const int nxt = it + STAGES - 1;
    if (nxt < nk) load(nxt % STAGES, kb0 + nxt);
    asm volatile("cp.async.commit_group;\n" ::: "memory");
    const int st = it % STAGES, kb = kb0 + it;
#pragma unroll
    for (int i = 0; i < MI; i++)
#pragma unroll
      for (int j = 0; j < NJ; j++)
#pragma unroll
        for (int q = 0; q < 4; q++) tmp[i][j][q] = 0.f;
#pragma unroll
    for (int kk = 0; kk < FP8_BK; kk += 32) {
      u32 af[MI][4], bf[NJ][2];
#pragma unroll
      for (int i = 0; i < MI; i++) {
        const int row = wm * (BM / WM) + i * 16 + (lane & 7) + 8 * ((lane >> 3) & 1);
        f8_ldsm_x4(f8_smem_addr(&as[st][row][kk + 16 * (lane >> 4)]), af[i][0], af[i][1], af[i][2], af[i][3]);
      }
#pragma unroll
      for (int j = 0; j < NJ; j += 2) {
        const int row = wn * (FP8_BN / WN) + j * 8 + (lane & 7) + 8 * (lane >> 4);
        f8_ldsm_x4(f8_smem_addr(&bs[st][row][kk + 16 * ((lane >> 3) & 1)]), bf[j][0], bf[j][1], bf[j + 1][0], bf[j + 1][1]);
      }
#pragma unroll
      for (int i = 0; i < MI; i++)
#pragma unroll
        for (int j = 0; j < NJ; j++) mma_e4m3(tmp[i][j], af[i][0], af[i][1], af[i][2], af[i][3], bf[j][0], bf[j][1]);
    }
    const float sw = wsexp[kb];
#pragma unroll
    for (int i = 0; i < MI; i++)
#pragma unroll
      for (int h = 0; h < 2; h++) {
        const int src = srow[i][h];
        const float f = src >= 0 ? a_scale[(i64)src * kb_total + kb] * sw : 0.f;
#pragma unroll
        for (int j = 0; j < NJ; j++) {
          acc[i][j][2 * h] += tmp[i][j][2 * h] * f;
          acc[i][j][2 * h + 1] += tmp[i][j][2 * h + 1] * f;
        }
      }
  }
  asm volatile("cp.async.wait_group 0;\n" ::: "memory");
  const bool split = gridDim.z > 1;
#pragma unroll
  for (int i = 0; i < MI; i++)
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const int r = wm * (BM / WM) + i * 16 + g + 8 * h;
      if (r >= rows) continue;
      const i64 base = (i64)(start + r) * n;
#pragma unroll
      for (int j = 0; j < NJ; j++)
#pragma unroll
        for (int q = 0; q < 2; q++) {
          const int col = n0 + wn * (FP8_BN / WN) + j * 8 + 2 * cq + q;
          if (col >= n) continue;
          const float v = acc[i][j][2 * h + q];
          if (split) part[(i64)blockIdx.z * m * n + base + col] = v;
          else if (mode == 0) ((u16*)c)[base + col] = util::f32_to_bf16(v);
          else if (mode == 1) ((float*)c)[base + col] = v;
          else ((float*)c)[base + col] += v;
        }
    }
}

#define FP8_GEMM_ARGS                                                                                                      \
  const u8 *__restrict__ a, const float *__restrict__ a_scale, const int *__restrict__ a_rows, int a_div,                  \
      const u8 *__restrict__ w, const float *__restrict__ w_scale, const int *__restrict__ tiles,                          \
      const int *__restrict__ num_tiles, void *__restrict__ c, float *__restrict__ part, int mode, int m, int n, int k,    \
      int kb_per_split
#define FP8_GEMM_PASS a, a_scale, a_rows, a_div, w, w_scale, tiles, num_tiles, c, part, mode, m, n, k, kb_per_split

// Dynamic shared memory: STAGES * (BM + 128) * 144 bytes (m16: 4 stages, 82 944; m64: 3, 82 944).
extern "C" __global__ void __launch_bounds__(256) fp8_gemm_m16(FP8_GEMM_ARGS) { fp8_gemm_body<16, 4>(FP8_GEMM_PASS); }
extern "C" __global__ void __launch_bounds__(256) fp8_gemm_m64(FP8_GEMM_ARGS) { fp8_gemm_body<64, 3>(FP8_GEMM_PASS); }

extern "C" __global__ void fp8_splitk_reduce(const float* __restrict__ part, int splits, void* __restrict__ c, int mode, int m, int n) {
  util::await_prior_kernels();
  const i64 total = (i64)m * n;
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += (i64)gridDim.x * blockDim.x) {
    float v = 0.f;
    for (int s = 0; s < splits; s++) v += part[s * total + i];
    if (mode == 0) ((u16*)c)[i] = util::f32_to_bf16(v);
    else if (mode == 1) ((float*)c)[i] = v;
    else ((float*)c)[i] += v;
  }
}

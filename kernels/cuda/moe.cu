// moe.cu — mixture-of-experts on the GPU: routing, dispatch (sort token-expert pairs by expert),
// a grouped bf16 GEMM over the experts' weights, and the weighted combine.
//
//  moe_route     one warp per token: the experts and weights, exactly as the CPU engine chooses
//                them (host/engine/src/cpu/moe.rs): method 0 greedy, 1 group_limited_greedy (softmax),
//                2 noaux_tc (sigmoid + correction bias for the choice). Ties go to the lower index.
//  moe_align     one block: pairs p = t*k + j sorted by expert (positions within an expert are in
//                arrival order; each row is computed independently, so results do not depend on it),
//                expert offsets, and the GEMM's tile list (expert, first row, rows) of <= 64 rows.
//  moe_route_small  the router GEMM, moe_route and moe_align of a batch of <= 16 tokens in one launch.
//  moe_gemm      C[p, n] = sum_k A[row(p), k] * W[e(p), n, k]; row(p) = a_rows[p] / a_div, or p when
//                a_rows is null. mma.sync m16n8k16 bf16 -> f32, 64x128 tiles, 3-stage cp.async.
//  moe_gemm_skinny  the same over tiles of <= 16 rows (decode: a few tokens per expert), where
//                streaming the weights is all the work: 16x128 tiles, 64-wide k steps, 4 stages
//                (48 KB of weights in flight per CTA instead of 16).
//  moe_combine   x[t] += sum_j w[t, j] * Z[pos(t, j)]  (f32 residual stream; pairs of experts
//                another rank holds are skipped); moe_combine_norm also writes the next layer's
//                input RMSNorm of the updated rows.
#include "moe_routing.cuh"

// ------------------------------------------------------------------------------------------------
// routing
// ------------------------------------------------------------------------------------------------
extern "C" __global__ void __launch_bounds__(32) moe_route(const float* __restrict__ logits, const float* __restrict__ bias,
                                                           int* __restrict__ topk_ids, float* __restrict__ topk_w, int n_exp,
                                                           int k, int n_group, int topk_group, int method, int norm_topk,
                                                           float scaling) {
  util::await_prior_kernels();
  __shared__ float scores[ROUTE_MAX_E], choice[ROUTE_MAX_E], gscore[64];
  __shared__ bool taken[ROUTE_MAX_E], gtaken[64], gkeep[64];
  __shared__ int chosen[64];
  const RouteArgs p{bias, n_exp, k, n_group, topk_group, method, norm_topk, scaling};
  const int t = blockIdx.x;
  route_token(logits + (i64)t * n_exp, t, p, RouteScratch{scores, choice, taken, gscore, gtaken, gkeep, chosen}, topk_ids, topk_w);
}

// ------------------------------------------------------------------------------------------------
// dispatch
// ------------------------------------------------------------------------------------------------
#define MOE_BM 64
#define MOE_BN 128
#define MOE_BK 32
#define MOE_STAGES 3
#define MOE_LDS (MOE_BK + 8)

extern "C" __global__ void __launch_bounds__(1024) moe_align(const int* __restrict__ topk_ids, int pairs, int n_exp,
                                                             int* __restrict__ expert_offsets, int* __restrict__ sorted_pairs,
                                                             int* __restrict__ pair_pos, int* __restrict__ tiles,
                                                             int* __restrict__ num_tiles, int tile_rows, int e_first,
                                                             int e_local) {
  util::await_prior_kernels();
  __shared__ int counts[ROUTE_MAX_E], cursor[ROUTE_MAX_E];
  align_pairs(topk_ids, pairs, n_exp, expert_offsets, sorted_pairs, pair_pos, tiles, num_tiles, tile_rows, e_first, e_local, counts, cursor);
}

// The router, routing and dispatch of a small batch in one launch (decode): logits[t, e] =
// h[t, :] · W[e, :] (f32), each CTA 16 experts (a warp each) over RS_K columns of h, partials summed
// in split order by each expert group's last CTA to arrive, and the last group to finish routes
// every token (route_token, a warp per token) and builds the dispatch (align_pairs). Grid
// (ceil(n_exp / 16), ceil(hidden / RS_K)), 512 threads (the last CTA routes 16 tokens at once),
// RS_SMEM bytes of dynamic shared memory;
// at most RS_TOKENS tokens and RS_MAX_E experts, hidden a multiple of 4. `part`: [splits, tokens,
// n_exp] f32; `counters`: gridDim.x + 1 zeroed u32 (left zeroed).
#define RS_TOKENS 16
#define RS_EXPERTS 16                             // warps a CTA
#define RS_K 512
#define RS_MAX_E 384                              // Kimi-K2's 384 experts
#define RS_WARP_FLOATS 1536                       // one warp's routing scratch (below)
#define RS_SMEM ((RS_EXPERTS * RS_WARP_FLOATS + 2 * RS_MAX_E) * 4)
extern "C" __global__ void __launch_bounds__(512, 2) moe_route_small(const float* __restrict__ h, const float* __restrict__ w, float* __restrict__ logits,
                                                                  float* __restrict__ part, unsigned int* __restrict__ counters, const float* __restrict__ bias,
                                                                  int* __restrict__ topk_ids, float* __restrict__ topk_w, int tokens, int hidden, int n_exp,
                                                                  int k, int n_group, int topk_group, int method, int norm_topk, float scaling,
                                                                  int* __restrict__ expert_offsets, int* __restrict__ sorted_pairs, int* __restrict__ pair_pos,
                                                                  int* __restrict__ tiles, int* __restrict__ num_tiles, int tile_rows, int e_first, int e_local) {
  if (threadIdx.x < RS_EXPERTS) {  // this CTA's router rows over its columns (util::prefetch_weights_l2)
    const int pe = blockIdx.x * RS_EXPERTS + threadIdx.x, pk = blockIdx.y * RS_K;
    if (pe < n_exp) util::prefetch_weights_l2(w + (i64)pe * hidden + pk, (unsigned)min(RS_K, hidden - pk) * 4);
  }
  util::await_prior_kernels();
  extern __shared__ __align__(16) float rs_smem[];  // the tokens' k slice [tokens][RS_K], then the routing scratch
  __shared__ int last;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int e = blockIdx.x * RS_EXPERTS + warp, k0 = blockIdx.y * RS_K, kn = min(RS_K, hidden - k0);
  // this warp's expert row over the slice: lane's float4s at (lane + 32 i) * 4, all in flight
  float4 wv[RS_K / 128];
#pragma unroll
  for (int i = 0; i < RS_K / 128; i++) {
    const int c = (lane + 32 * i) * 4;
    wv[i] = (e < n_exp && c < kn) ? __ldg(reinterpret_cast<const float4*>(w + (i64)e * hidden + k0 + c)) : make_float4(0.f, 0.f, 0.f, 0.f);
  }
  // the tokens' slice of h, every load in flight before the first store
  constexpr int HV = RS_TOKENS * RS_K / 4 / (RS_EXPERTS * 32);
  float4 hv[HV];
#pragma unroll
  for (int u = 0; u < HV; u++) {
    const int i = tid + u * RS_EXPERTS * 32, t = i / (RS_K / 4), c = (i % (RS_K / 4)) * 4;
    hv[u] = (t < tokens && c < kn) ? *reinterpret_cast<const float4*>(h + (i64)t * hidden + k0 + c) : make_float4(0.f, 0.f, 0.f, 0.f);
  }
#pragma unroll
  for (int u = 0; u < HV; u++) {
    const int i = tid + u * RS_EXPERTS * 32, t = i / (RS_K / 4), c = (i % (RS_K / 4)) * 4;
    if (t < tokens) *reinterpret_cast<float4*>(rs_smem + t * RS_K + c) = hv[u];
  }
  __syncthreads();
  float mine = 0.f;  // lane t: token t's partial logit
  for (int t = 0; t < tokens; t++) {
    float acc = 0.f;
#pragma unroll
    for (int i = 0; i < RS_K / 128; i++) {
      const float4 x = *reinterpret_cast<const float4*>(rs_smem + t * RS_K + (lane + 32 * i) * 4);
      acc += x.x * wv[i].x + x.y * wv[i].y + x.z * wv[i].z + x.w * wv[i].w;
    }
    acc = util::warp_sum(acc);
    if (lane == t) mine = acc;
  }
  if (e < n_exp && lane < tokens) part[((i64)blockIdx.y * tokens + lane) * n_exp + e] = mine;
  // the group's last split sums its experts' logits in split order
  if (!util::last_split_arrived(counters + blockIdx.x, gridDim.y, &last)) return;
  const i64 stride = (i64)tokens * n_exp;
  for (int i = tid; i < tokens * RS_EXPERTS; i += blockDim.x) {
    const int t = i / RS_EXPERTS, ee = blockIdx.x * RS_EXPERTS + i % RS_EXPERTS;
    if (ee < n_exp) logits[(i64)t * n_exp + ee] = util::split_sum(part + (i64)t * n_exp + ee, gridDim.y, stride);
  }
  if (tid == 0) counters[blockIdx.x] = 0u;
  // the last group routes every token and builds the dispatch
  if (!util::last_split_arrived(counters + gridDim.x, gridDim.x, &last)) return;
  // a warp's scratch (floats, E = RS_MAX_E): logits row 0, scores E, choice 2E, group scores 3E
  // (64), chosen 3E + 64 (64 ints), taken 3E + 128 (E bytes), group flags 3E + 128 + E/4 and
  // + 16 (64 bytes each): 3E + 160 + E/4 <= RS_WARP_FLOATS
  constexpr int E = RS_MAX_E, TAKEN = 3 * E + 128;
  static_assert(TAKEN + E / 4 + 32 <= RS_WARP_FLOATS && RS_EXPERTS * RS_WARP_FLOATS >= RS_TOKENS * RS_K, "routing scratch");
  float* mine_s = rs_smem + warp * RS_WARP_FLOATS;
  const RouteScratch scratch{mine_s + E, mine_s + 2 * E, reinterpret_cast<bool*>(mine_s + TAKEN), mine_s + 3 * E,
                             reinterpret_cast<bool*>(mine_s + TAKEN + E / 4), reinterpret_cast<bool*>(mine_s + TAKEN + E / 4 + 16),
                             reinterpret_cast<int*>(mine_s + 3 * E + 64)};
  const RouteArgs p{bias, n_exp, k, n_group, topk_group, method, norm_topk, scaling};
  for (int t = warp; t < tokens; t += blockDim.x / 32) {
    for (int i = lane; i < n_exp; i += 32) mine_s[i] = __ldcg(logits + (i64)t * n_exp + i);  // written by other SMs
    __syncwarp();
    route_token(mine_s, t, p, scratch, topk_ids, topk_w);
  }
  // topk_ids is read back below after the barrier: it must stay a plain (coherent) pointer, not
  // const __restrict__, which would let the compiler read it through the non-coherent path
  __syncthreads();
  int* counts = reinterpret_cast<int*>(rs_smem + RS_EXPERTS * RS_WARP_FLOATS);
  align_pairs(topk_ids, tokens * k, n_exp, expert_offsets, sorted_pairs, pair_pos, tiles, num_tiles, tile_rows, e_first, e_local, counts,
              counts + RS_MAX_E);
  if (tid == 0) counters[gridDim.x] = 0u;
}

// ------------------------------------------------------------------------------------------------
// grouped GEMM
// ------------------------------------------------------------------------------------------------
__device__ __forceinline__ void ldsm_x4(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(addr));
}
__device__ __forceinline__ void mma16816(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

extern "C" __global__ void __launch_bounds__(256) moe_gemm(const u16* __restrict__ a, const int* __restrict__ a_rows, int a_div,
                                                           const u16* __restrict__ w, const int* __restrict__ tiles,
                                                           const int* __restrict__ num_tiles, void* __restrict__ c, int c_f32,
                                                           int n, int k) {
  util::await_prior_kernels();
  __shared__ __align__(16) u16 as[MOE_STAGES][MOE_BM][MOE_LDS];
  __shared__ __align__(16) u16 bs[MOE_STAGES][MOE_BN][MOE_LDS];
  __shared__ int arow[MOE_BM];
  int tile = blockIdx.y;
  if (tile >= *num_tiles) return;
  int e = tiles[3 * tile], start = tiles[3 * tile + 1], rows = tiles[3 * tile + 2];
  int n0 = blockIdx.x * MOE_BN;
  int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  int wm = warp >> 2, wn = warp & 3;  // 2 x 4 warps, 32 x 32 each
  for (int r = tid; r < MOE_BM; r += blockDim.x) {
    int p = start + r;
    arow[r] = r < rows ? (a_rows ? a_rows[p] / a_div : p) : -1;
  }
  __syncthreads();
  const u16* wexp = w + (i64)e * n * k;
  auto load = [&](int stage, int kt) {
    int k0 = kt * MOE_BK;
    {  // A: 64 rows x 4 chunks of 8
      int r = tid >> 2, ch = tid & 3;
      int src = arow[r];
      const u16* g = a + (i64)(src < 0 ? 0 : src) * k + k0 + ch * 8;
      util::cp_async_16(util::smem_u32(&as[stage][r][ch * 8]), g, src >= 0);
    }
#pragma unroll
    for (int i = 0; i < 2; i++) {  // B: 128 rows x 4 chunks
      int idx = tid + i * 256;
      int r = idx >> 2, ch = idx & 3;
      int col = n0 + r;
      const u16* g = wexp + (i64)(col < n ? col : 0) * k + k0 + ch * 8;
      util::cp_async_16(util::smem_u32(&bs[stage][r][ch * 8]), g, col < n);
    }
  };
  float acc[2][4][4];
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
      for (int q = 0; q < 4; q++) acc[i][j][q] = 0.f;
  int ktiles = k / MOE_BK;
#pragma unroll
  for (int s = 0; s < MOE_STAGES - 1; s++) {
    if (s < ktiles) load(s, s);
    util::cp_async_commit();
  }
  for (int kt = 0; kt < ktiles; kt++) {
    util::cp_async_wait<MOE_STAGES - 2>();
    __syncthreads();
    int nxt = kt + MOE_STAGES - 1;
    if (nxt < ktiles) load(nxt % MOE_STAGES, nxt);
    util::cp_async_commit();
    int st = kt % MOE_STAGES;
#pragma unroll
    for (int kk = 0; kk < MOE_BK; kk += 16) {
      u32 af[2][4], bf[4][2];
#pragma unroll
      for (int i = 0; i < 2; i++) {
        int row = wm * 32 + i * 16 + (lane & 7) + 8 * ((lane >> 3) & 1);
        int col = kk + 8 * (lane >> 4);
        ldsm_x4(util::smem_u32(&as[st][row][col]), af[i][0], af[i][1], af[i][2], af[i][3]);
      }
#pragma unroll
      for (int j = 0; j < 2; j++) {
        int row = wn * 32 + j * 16 + (lane & 7) + 8 * (lane >> 4);
        int col = kk + 8 * ((lane >> 3) & 1);
        ldsm_x4(util::smem_u32(&bs[st][row][col]), bf[2 * j][0], bf[2 * j][1], bf[2 * j + 1][0], bf[2 * j + 1][1]);
      }
#pragma unroll
      for (int i = 0; i < 2; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) mma16816(acc[i][j], af[i][0], af[i][1], af[i][2], af[i][3], bf[j][0], bf[j][1]);
    }
  }
  util::cp_async_wait<0>();
  int g = lane >> 2, cq = lane & 3;
#pragma unroll
  for (int i = 0; i < 2; i++)
#pragma unroll
    for (int j = 0; j < 4; j++)
#pragma unroll
      for (int half = 0; half < 2; half++) {
        int r = wm * 32 + i * 16 + g + 8 * half;
        int col = n0 + wn * 32 + j * 8 + 2 * cq;
        if (r >= rows) continue;
        i64 base = (i64)(start + r) * n;
#pragma unroll
        for (int q = 0; q < 2; q++) {
          if (col + q >= n) continue;
          float v = acc[i][j][2 * half + q];
          if (c_f32) ((float*)c)[base + col + q] = v;
          else ((u16*)c)[base + col + q] = util::f32_to_bf16(v);
        }
      }
}

#define SKINNY_BM 16
#define SKINNY_BN 128
#define SKINNY_BK 64
#define SKINNY_STAGES 4
#define SKINNY_LDS (SKINNY_BK + 8)
#define SKINNY_SMEM (SKINNY_STAGES * (SKINNY_BM + SKINNY_BN) * SKINNY_LDS * 2)

// Tiles of <= 16 rows; 8 warps, each 16 output columns; k only needs to be a multiple of 8 (the
// last k step is zero-filled). Dynamic shared memory: SKINNY_SMEM bytes.
extern "C" __global__ void __launch_bounds__(256) moe_gemm_skinny(const u16* __restrict__ a, const int* __restrict__ a_rows, int a_div,
                                                                  const u16* __restrict__ w, const int* __restrict__ tiles,
                                                                  const int* __restrict__ num_tiles, void* __restrict__ c, int c_f32,
                                                                  int n, int k) {
  util::await_prior_kernels();
  extern __shared__ __align__(16) u16 skinny_smem[];
  u16(*as)[SKINNY_BM][SKINNY_LDS] = reinterpret_cast<u16(*)[SKINNY_BM][SKINNY_LDS]>(skinny_smem);
  u16(*bs)[SKINNY_BN][SKINNY_LDS] = reinterpret_cast<u16(*)[SKINNY_BN][SKINNY_LDS]>(skinny_smem + SKINNY_STAGES * SKINNY_BM * SKINNY_LDS);
  __shared__ int arow[SKINNY_BM];
  const int tile = blockIdx.y;
  if (tile >= *num_tiles) return;
  const int e = tiles[3 * tile], start = tiles[3 * tile + 1], rows = tiles[3 * tile + 2];
  const int n0 = blockIdx.x * SKINNY_BN;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  if (tid < SKINNY_BM) {
    const int p = start + tid;
    arow[tid] = tid < rows ? (a_rows ? a_rows[p] / a_div : p) : -1;
  }
  __syncthreads();
  const u16* wexp = w + (i64)e * n * k;
  auto load = [&](int stage, int kt) {
    const int k0 = kt * SKINNY_BK;
    if (tid < SKINNY_BM * 8) {  // A: 16 rows x 8 chunks of 8
      const int r = tid >> 3, ch = tid & 7, src = arow[r], kc = k0 + ch * 8;
      const bool ok = src >= 0 && kc < k;
      util::cp_async_16(util::smem_u32(&as[stage][r][ch * 8]), a + (ok ? (i64)src * k + kc : 0), ok);
    }
#pragma unroll
    for (int i = 0; i < 4; i++) {  // B: 128 rows x 8 chunks
      const int idx = tid + i * 256, r = idx >> 3, ch = idx & 7, col = n0 + r, kc = k0 + ch * 8;
      const bool ok = col < n && kc < k;
      util::cp_async_16(util::smem_u32(&bs[stage][r][ch * 8]), wexp + (ok ? (i64)col * k + kc : 0), ok);
    }
  };
  float acc[2][4];
#pragma unroll
  for (int j = 0; j < 2; j++)
#pragma unroll
    for (int q = 0; q < 4; q++) acc[j][q] = 0.f;
  const int ktiles = (k + SKINNY_BK - 1) / SKINNY_BK;
#pragma unroll
  for (int s = 0; s < SKINNY_STAGES - 1; s++) {
    if (s < ktiles) load(s, s);
    util::cp_async_commit();
  }
  for (int kt = 0; kt < ktiles; kt++) {
    util::cp_async_wait<SKINNY_STAGES - 2>();
    __syncthreads();
    const int nxt = kt + SKINNY_STAGES - 1;
    if (nxt < ktiles) load(nxt % SKINNY_STAGES, nxt);
    util::cp_async_commit();
    const int st = kt % SKINNY_STAGES;
#pragma unroll
    for (int kk = 0; kk < SKINNY_BK; kk += 16) {
      u32 af[4], bf[2][2];
      ldsm_x4(util::smem_u32(&as[st][(lane & 7) + 8 * ((lane >> 3) & 1)][kk + 8 * (lane >> 4)]), af[0], af[1], af[2], af[3]);
      ldsm_x4(util::smem_u32(&bs[st][warp * 16 + (lane & 7) + 8 * (lane >> 4)][kk + 8 * ((lane >> 3) & 1)]), bf[0][0], bf[0][1], bf[1][0], bf[1][1]);
#pragma unroll
      for (int j = 0; j < 2; j++) mma16816(acc[j], af[0], af[1], af[2], af[3], bf[j][0], bf[j][1]);
    }
  }
  util::cp_async_wait<0>();
  const int g = lane >> 2, cq = lane & 3;
#pragma unroll
  for (int j = 0; j < 2; j++)
#pragma unroll
    for (int half = 0; half < 2; half++) {
      const int r = g + 8 * half, col = n0 + warp * 16 + j * 8 + 2 * cq;
      if (r >= rows) continue;
      const i64 base = (i64)(start + r) * n;
#pragma unroll
      for (int q = 0; q < 2; q++) {
        if (col + q >= n) continue;
        const float v = acc[j][2 * half + q];
        if (c_f32) ((float*)c)[base + col + q] = v;
        else ((u16*)c)[base + col + q] = util::f32_to_bf16(v);
      }
    }
}

// ------------------------------------------------------------------------------------------------
// combine
// ------------------------------------------------------------------------------------------------
extern "C" __global__ void moe_combine(const float* __restrict__ z, const int* __restrict__ pair_pos, const float* __restrict__ topk_w,
                                       float* __restrict__ x, int k, int dim) {
  util::await_prior_kernels();
  int t = blockIdx.x;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    float acc = 0.f;
    for (int j = 0; j < k; j++) {
      int pos = pair_pos[t * k + j];
      if (pos >= 0) acc += topk_w[(i64)t * k + j] * z[(i64)pos * dim + i];
    }
    x[(i64)t * dim + i] += acc;
  }
}

// moe_combine, then the next layer's input RMSNorm of the updated rows, with norm.cu's arithmetic
// and thread mapping (256 threads), so `out` holds what rmsnorm_residual would write: one launch
// fewer per MoE layer (the forward pass runs the shared experts first so that this is the
// layer's last write to x).
extern "C" __global__ void __launch_bounds__(256) moe_combine_norm(const float* __restrict__ z, const int* __restrict__ pair_pos,
                                                                   const float* __restrict__ topk_w, float* __restrict__ x, int k, int dim,
                                                                   const float* __restrict__ weight, u16* __restrict__ out, float eps) {
  util::await_prior_kernels();
  __shared__ float scratch[32];
  const int t = blockIdx.x;
  float* xr = x + (i64)t * dim;
  float ss = 0.f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    float acc = 0.f;
    for (int j = 0; j < k; j++) {
      int pos = pair_pos[t * k + j];
      if (pos >= 0) acc += topk_w[(i64)t * k + j] * z[(i64)pos * dim + i];
    }
    const float v = xr[i] + acc;
    xr[i] = v;
    ss += v * v;
  }
  const float inv = rsqrtf(util::block_sum(ss, scratch) / dim + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) out[(i64)t * dim + i] = util::f32_to_bf16(xr[i] * inv * weight[i]);
}

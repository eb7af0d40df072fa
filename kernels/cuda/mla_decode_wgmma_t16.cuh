// The transposed wgmma decode kernel body (sm_90a) for 16 query rows (16 heads, q_len 1): tokens
// fill wgmma's M dimension instead of padding 16 heads to 64 rows.
//   S^T[64 tokens, 16 rows] = K[64, 576] Q^T          (36 x m64n16k16, A = cache tile, B = Q)
//   O^T[512, 16]           += V^T[512, 64] P^T[64, 16] (8 blocks x 4 x m64n16k16, A = the same
//                                                       tile read MN-major, B = P^T)
// Two warpgroups take alternate 64-token tiles of the CTA's split, each with its own stage, online
// softmax and O^T accumulators (64 f32 per thread). They compute in turn (ping-pong), so one's next
// tile loads while the other computes; with 3 tiles or more, warpgroup 1 also requests its first
// tile only once warpgroup 0's has landed. The split plan, the sequence length, Q and the first
// page ids are all requested before any of them is used. The epilogue has one CTA barrier: each
// warpgroup hands the other half of its O^T over, merges the half it stores, and writes it in
// 16-byte vectors. Faster than the mma.sync kernels at 16 rows on the H200.
#pragma once
#include "mla_decode_common.cuh"
#include "mla_decode_mma.cuh"  // named_bar_sync
#include "mla_decode_wgmma.cuh"

namespace mla {

struct WgT16Cfg {
  static constexpr int ROWS = 16;
  static constexpr int TILE_BYTES = 64 * MLA_D * 2;   // 73728: 9 chunks x (64 tokens x 128 B)
  static constexpr int Q_BYTES = ROWS * MLA_D * 2;    // 18432: 9 chunks x (16 rows x 128 B)
  static constexpr int Q_OFF = 0;
  static constexpr int KV_OFF = Q_BYTES;              // one stage per warpgroup (1024-aligned)
  static constexpr int P_OFF = KV_OFF + 2 * TILE_BYTES;  // P^T per warpgroup: 16 rows x 128 B
  static constexpr int RED_OFF = P_OFF + 2 * 2048;    // column maxima, then sums: [2 wg][4 warps][16]
  static constexpr int ML_OFF = RED_OFF + 2 * 4 * ROWS * 4;  // final column maxima: [2 wg][16]
  static constexpr int SMEM = ML_OFF + 2 * ROWS * 4 + 1024;  // + alignment slack
  static constexpr int HANDOVER_BYTES = 8 * 128 * 16;  // half of O^T: [4 blocks x 2 halves][128 threads] float4
  static constexpr int XSTR = MLA_DV / 2 + 4;          // f32 per merged row of a half (bank spread)
  static_assert(HANDOVER_BYTES + ROWS * XSTR * 4 <= TILE_BYTES, "the epilogue's staging fits in a stage");
};

#ifdef T16_TRACE  // dev only: per-phase timestamps of row tile 0, sequence 0, splits < 128;
// markers 3-6 of a warpgroup's first tile, 7-10 of its second, 11-15 after the loop
__device__ __forceinline__ void t16_mark(int k) {
  if ((threadIdx.x & 127) == 0 && blockIdx.y < 128 && blockIdx.x == 0 && blockIdx.z == 0) {
    u64 t, c;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
    asm volatile("mov.u64 %0, %%clock64;" : "=l"(c));
    const int i = (blockIdx.y * 2 + (threadIdx.x >> 7)) * MLA_TRACE_PER_WG + k;
    mla_trace_gt[i] = t;
    mla_trace_clk[i] = c;
  }
}
#define T16_MARK(k) t16_mark(k)
#define T16_MARK1(k) if (t < wg + 4) t16_mark(k + (t >= 2 ? 4 : 0))
#else
#define T16_MARK(k)
#define T16_MARK1(k)
#endif

#ifdef MLA_HAS_WGMMA
// D[64 x 16] (+)= A[64 x 16] B[16 x 16]; A K-major (tnspA 0) or MN-major (tnspA 1), B K-major
template <int TNSP_A>
__device__ __forceinline__ void wgmma_m64n16k16(float* d, u64 da, u64 db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %10, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7}, %8, %9, p, 1, 1, %11, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
      : "l"(da), "l"(db), "r"(scale_d), "n"(TNSP_A));
}
__device__ __forceinline__ void fence_acc8(float* d) {
#pragma unroll
  for (int i = 0; i < 8; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
#endif

// FP8 (656-byte entries): each warpgroup's raw entries land in its own stage (Fp8Stage's layout)
// and that warpgroup expands them in place before computing, while the other computes its tile.
template <bool FP8 = false>
__device__ __forceinline__ void wgmma_t16_decode(const Args& a, unsigned char* smem_raw) {
#ifdef MLA_HAS_WGMMA
  typedef WgT16Cfg C;
  T16_MARK(0);
  const u32 raw = smem_u32(smem_raw);
  unsigned char* smem = smem_raw + (((raw + 1023u) & ~1023u) - raw);
  const u32 sbase = smem_u32(smem);
  const int tid = threadIdx.x, wg = tid >> 7, wt = tid & 127, wi = wt >> 5, lane = tid & 31;
  const int g = lane >> 2, c4 = lane & 3;
  const int b = blockIdx.z, row0 = blockIdx.x * C::ROWS, rows_total = a.q_len * a.heads;
  if (row0 >= rows_total) return;
  const u32 sQ = sbase + C::Q_OFF, sK = sbase + C::KV_OFF + wg * C::TILE_BYTES, sP = sbase + C::P_OFF + wg * 2048;
  unsigned char* pgen = smem + C::P_OFF + wg * 2048;
  float* red = reinterpret_cast<float*>(smem + C::RED_OFF) + wg * 4 * C::ROWS;  // [4 warps][16]
  float* sml = reinterpret_cast<float*>(smem + C::ML_OFF);                      // [2 wg][16] maxima
  auto wg_sync = [&]() { named_bar_sync(1 + wg, 128); };

  allow_dependent_grids();
  // The split plan and sequence length are loaded first; the page ids of each warpgroup's first
  // tile and Q depend on neither, so they are issued while those loads are in flight.
  const WorkLoads work_loads = load_work(a);
  const PageMap pm(a, b);
  // this warpgroup's loader: 8 threads per token, 16 tokens per pass, 4 passes; thread -> token
  // 16p + wt/8, 16-byte units wt%8 + 8m, so one warp instruction reads 4 whole 128-byte lines
  const int ld_tok = wt >> 3, ld_unit = wt & 7;
  int pages[4];
  auto tile_pages = [&](int kv_begin, int t) {
#pragma unroll
    for (int p = 0; p < 4; ++p) pages[p] = pm.page(kv_begin + t * 64 + 16 * p + ld_tok);
  };
  tile_pages(blockIdx.y * a.chunk, wg);
  wait_for_prior_grids();  // the metadata above may be read early; q and the cache only after this
  // Q: 16 rows x 72 16-byte units, all 256 threads; chunk c holds 16 rows x 128 B, swizzled
  for (int i = tid; i < C::ROWS * 72; i += MLA_THREADS) {
    const int r = i / 72, u = i % 72, row = row0 + r;
    const bool ok = row < rows_total;
    const u16* src = ok ? a.q + ((i64)b * rows_total + row) * MLA_D + u * 8 : a.q;
    cp_async_16(sQ + (u >> 3) * 2048 + r * 128 + (((u & 7) ^ (r & 7)) << 4), src, ok);
  }
  cp_async_commit();
  Work w;
  if (!make_work(a, C::ROWS, work_loads, w)) {
    cp_async_wait<0>();
    return;
  }
  T16_MARK(1);
  const int ntiles = w.kv_stop > w.kv_begin ? (w.kv_stop - w.kv_begin + 63) / 64 : 0;
  auto load_tile = [&](int t) {
#pragma unroll
    for (int p = 0; p < 4; ++p) {
      const int tok = 16 * p + ld_tok, pos = w.kv_begin + t * 64 + tok;
      const bool valid = pos < w.kv_stop;
      const i64 slot = valid ? pm.slot(pages[p], pos) : 0;
      if constexpr (FP8) {
        const unsigned char* src = reinterpret_cast<const unsigned char*>(a.kv) + slot * MLA_FP8_BYTES;
#pragma unroll
        for (int m = 0; m < 6; ++m) {
          const int j = ld_unit + 8 * m;
          if (j < MLA_FP8_CHUNKS) cp_async_16(sK + Fp8Stage::unit(j, tok), src + j * 16, valid);
        }
      } else {
        const u16* src = a.kv + slot * MLA_D;
#pragma unroll
        for (int m = 0; m < 9; ++m) cp_async_16(sK + sw128_off(tok, ld_unit + 8 * m), src + (ld_unit + 8 * m) * 8, valid);
      }
    }
  };
  // FP8: expand a landed stage in place with `n` threads (thread i of them: tokens i/4 + n/4 h,
  // codes 16 (i%4) .. of each chunk), two chunks per barrier `bar` (each pair read before anyone
  // writes it), then fence the writes for wgmma. The caller's barrier publishes them.
  auto expand = [&](unsigned char* base, int i, int n, auto bar) {
    constexpr int H = 2;  // items per thread per chunk with 128 threads (64 tokens x 4 quarters)
#pragma unroll
    for (int c = 0; c < 8; c += 2) {
      uint4 v[H][2];
      float sc[H];
#pragma unroll
      for (int h = 0; h < H; ++h) {
        const int item = i + n * h;
        const int r = item >> 2, q = item & 3;
        if (item < 256) {
          v[h][0] = *reinterpret_cast<const uint4*>(base + Fp8Stage::codes(c, r) + q * 16);
          v[h][1] = *reinterpret_cast<const uint4*>(base + Fp8Stage::codes(c + 1, r) + q * 16);
          sc[h] = reinterpret_cast<const float*>(base + Fp8Stage::SCALES + r * 16)[c >> 1];
        }
      }
      bar();
#pragma unroll
      for (int h = 0; h < H; ++h) {
        const int item = i + n * h;
        if (item < 256) {
          Fp8Stage::put16(base, item >> 2, c, item & 3, v[h][0], sc[h]);
          Fp8Stage::put16(base, item >> 2, c + 1, item & 3, v[h][1], sc[h]);
        }
      }
    }
    fence_proxy_async();
  };
  // With 3 tiles or more, warpgroup 1 requests its first tile only once warpgroup 0's has landed
  // (barrier 5): otherwise every CTA's first tile shares the DRAM with the second ones and lands
  // at the end of the whole burst (16 h 1x32K: 20.7 -> 19.3 us)
  const bool stagger = ntiles >= 3;
  const bool delayed = stagger && wg == 1;
  if (wg < ntiles && !delayed) load_tile(wg);
  cp_async_commit();
  if (wg + 2 < ntiles && !delayed) tile_pages(w.kv_begin, wg + 2);
  // Q was loaded by both warpgroups: wait for the older group (Q) and publish it CTA-wide
  cp_async_wait<1>();
  fence_proxy_async();
  __syncthreads();
  if (delayed) {
    named_bar_sync(5, 256);
    load_tile(1);
    cp_async_commit();
    if (3 < ntiles) tile_pages(w.kv_begin, 3);
  }
  T16_MARK(2);

  // fragments: S^T / O^T element i of n8 group j: row (token or latent dim) 16*wi + g (+8 for
  // i >= 2), column (query row) 8j + 2*c4 + (i & 1)
  int lim[2][2];
#pragma unroll
  for (int j = 0; j < 2; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) lim[j][e] = a.q_len == 1 ? w.kv_end : row_limit(a, w, 8 * j + 2 * c4 + e);
  float o[8][8];
#pragma unroll
  for (int mb = 0; mb < 8; ++mb)
#pragma unroll
    for (int i = 0; i < 8; ++i) o[mb][i] = 0.f;
  float m_run[2][2], l_part[2][2];
#pragma unroll
  for (int j = 0; j < 2; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) m_run[j][e] = neg_inf(), l_part[j][e] = 0.f;
  const float sl2 = a.scale * 1.4426950408889634f;
  // S^T masked to each column's (query row's) limit and scaled to log2 units; each warp's column
  // maxima go to red[] (read after a wg_sync with red_max)
  auto column_maxima = [&](float(&s)[8], int pos0) {
    const int tok0 = 16 * wi + g;
    float mx[2][2];
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const float v0 = (pos0 + tok0 < lim[j][e]) ? s[4 * j + e] * sl2 : neg_inf();
        const float v1 = (pos0 + tok0 + 8 < lim[j][e]) ? s[4 * j + 2 + e] * sl2 : neg_inf();
        s[4 * j + e] = v0;
        s[4 * j + 2 + e] = v1;
        float m = fmaxf(v0, v1);
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 4));
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 8));
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 16));
        mx[j][e] = m;
      }
    if (g == 0) {
#pragma unroll
      for (int j = 0; j < 2; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) red[wi * C::ROWS + 8 * j + 2 * c4 + e] = mx[j][e];
    }
  };
  // each warp's column sums of l_part to red[] (read after a wg_sync with red_sum)
  auto column_sums = [&]() {
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float l = l_part[j][e];
        l += __shfl_xor_sync(0xffffffffu, l, 4);
        l += __shfl_xor_sync(0xffffffffu, l, 8);
        l += __shfl_xor_sync(0xffffffffu, l, 16);
        if (g == 0) red[wi * C::ROWS + 8 * j + 2 * c4 + e] = l;
      }
  };
  auto red_max = [&](int col) {
    return fmaxf(fmaxf(red[col], red[C::ROWS + col]), fmaxf(red[2 * C::ROWS + col], red[3 * C::ROWS + col]));
  };
  auto red_sum = [&](const float* rd, int col) { return rd[col] + rd[C::ROWS + col] + rd[2 * C::ROWS + col] + rd[3 * C::ROWS + col]; };
  // P^T as B (K-major): row = query row col, 128 B of 64 tokens, 16-byte units swizzled
  auto put_p = [&](int col, int tok, float p) {
    *reinterpret_cast<u16*>(pgen + col * 128 + ((((tok >> 3) ^ (col & 7))) << 4) + (tok & 7) * 2) = to_bf16(p);
  };
  // this warpgroup's 256 latent dims from [16 rows][XSTR] f32 staging to the output or this
  // split's partial (both bf16), in 16-byte vectors; then the split counts itself as arrived
  auto store_half = [&](const float* xo) {
    u16* dst = (w.nsplit == 1 ? a.out + (i64)b * rows_total * MLA_DV : a.part_o + (i64)w.slot * rows_total * MLA_DV) + wg * (MLA_DV / 2);
    for (int u = wt; u < C::ROWS * 32; u += 128) {
      const int rl = u >> 5, d = (u & 31) * 8, r = row0 + rl;
      const float4 x0 = *reinterpret_cast<const float4*>(xo + rl * C::XSTR + d);
      const float4 x1 = *reinterpret_cast<const float4*>(xo + rl * C::XSTR + d + 4);
      if (r < rows_total)
        *reinterpret_cast<uint4*>(dst + (i64)r * MLA_DV + d) =
            make_uint4(pack_bf16(x0.x, x0.y), pack_bf16(x0.z, x0.w), pack_bf16(x1.x, x1.y), pack_bf16(x1.z, x1.w));
    }
    split_arrive(a, w, C::ROWS);
  };

  // A one-tile CTA: warpgroup 1 has no tile of its own. It takes half of S^T's k-steps (the
  // partial S^T handed over is 8 floats a thread) and half of P V's 512 dims, so that each
  // warpgroup stores its own half of O and nothing is merged (16 h 1x4K: 7.5 -> 7.3 us). Both compute the same softmax (each into its own red[] and P^T), since the summed S^T
  // is the same in both (a + b == b + a).
  if (ntiles == 1) {
    const u32 sK0 = sbase + C::KV_OFF;  // warpgroup 0's stage holds the tile
    cp_async_wait<0>();
    fence_proxy_async();
    __syncthreads();  // the tile, CTA-wide
    if constexpr (FP8) {
      expand(smem + C::KV_OFF, tid, 256, [] { __syncthreads(); });
      __syncthreads();
    }
    float s[8];
    wgmma_fence();
#pragma unroll
    for (int i = 0; i < 18; ++i) {
      const int k = 18 * wg + i, c = k >> 2, kk = k & 3;
      wgmma_m64n16k16<0>(s, sw128_desc(sK0 + c * 8192 + kk * 32, 16, 1024), sw128_desc(sQ + c * 2048 + kk * 32, 16, 1024),
                         i ? 1 : 0);
    }
    wgmma_commit();
    wgmma_wait<0>();
    fence_acc8(s);
    // partial S^T through warpgroup 1's stage (idle in a one-tile CTA): [wg][2][128 threads]
    float4* xb = reinterpret_cast<float4*>(smem + C::KV_OFF + C::TILE_BYTES);
    xb[(wg * 2) * 128 + wt] = make_float4(s[0], s[1], s[2], s[3]);
    xb[(wg * 2 + 1) * 128 + wt] = make_float4(s[4], s[5], s[6], s[7]);
    __syncthreads();
    {
      const float4 x0 = xb[((wg ^ 1) * 2) * 128 + wt], x1 = xb[((wg ^ 1) * 2 + 1) * 128 + wt];
      s[0] += x0.x, s[1] += x0.y, s[2] += x0.z, s[3] += x0.w;
      s[4] += x1.x, s[5] += x1.y, s[6] += x1.z, s[7] += x1.w;
    }
    // softmax down each column, over the one tile (O is still zero: no rescale)
    column_maxima(s, w.kv_begin);
    wg_sync();
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int col = 8 * j + 2 * c4 + e, tok0 = 16 * wi + g;
        const float tm = red_max(col);
        const float base = (tm == neg_inf()) ? 0.f : tm;
        m_run[j][e] = tm;
        const float p0 = ex2(s[4 * j + e] - base), p1 = ex2(s[4 * j + 2 + e] - base);
        l_part[j][e] = p0 + p1;
        put_p(col, tok0, p0);
        put_p(col, tok0 + 8, p1);
      }
    fence_proxy_async();  // P^T written by st.shared, read next by wgmma
    wg_sync();            // P^T complete; red[] read (free for the sums)
    // O^T[256wg .. +255] = V^T P^T: this warpgroup's 4 blocks of 64 latent dims
#pragma unroll
    for (int mb = 0; mb < 4; ++mb) fence_acc8(o[mb]);
    wgmma_fence();
#pragma unroll
    for (int mb = 0; mb < 4; ++mb)
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        wgmma_m64n16k16<1>(o[mb], sw128_desc(sK0 + (4 * wg + mb) * 8192 + kk * 2048, 8192, 1024), sw128_desc(sP + kk * 32, 16, 1024), 1);
    wgmma_commit();
    wgmma_wait<0>();
#pragma unroll
    for (int mb = 0; mb < 4; ++mb) fence_acc8(o[mb]);
    // column sums, then this warpgroup's half of O normalised, staged and stored
    float inv[2][2];
    column_sums();
    wg_sync();
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int col = 8 * j + 2 * c4 + e, r = row0 + col;
        const float L = red_sum(red, col);
        inv[j][e] = L > 0.f ? 1.f / L : 0.f;
        const float m = m_run[j][e];
        if (wg == 0 && wi == 0 && g == 0 && r < rows_total) store_lse(a, w, r, m == neg_inf() ? 0.f : m, L);
      }
    // [16 rows][XSTR] f32 per warpgroup, in warpgroup 1's stage past the handed-over S^T
    float* xo = reinterpret_cast<float*>(smem + C::KV_OFF + C::TILE_BYTES + 8192) + wg * C::ROWS * C::XSTR;
#pragma unroll
    for (int mb = 0; mb < 4; ++mb)
#pragma unroll
      for (int i = 0; i < 8; ++i) {
        const int j = i >> 2, e = i & 1, d = 64 * mb + 16 * wi + g + ((i & 2) ? 8 : 0);
        xo[(8 * j + 2 * c4 + e) * C::XSTR + d] = o[mb][i] * inv[j][e];
      }
    wg_sync();
    store_half(xo);
    return;
  }

  for (int t = wg; t < ntiles; t += 2) {
    cp_async_wait<0>();
    fence_proxy_async();  // cp.async wrote through the generic proxy; wgmma reads via the async proxy
    wg_sync();
    if (stagger && t == 0) named_bar_arrive(5, 256);  // warpgroup 1 may request its first tile
    if constexpr (FP8) {  // before the turn barrier: beside the other warpgroup's compute
      expand(smem + C::KV_OFF + wg * C::TILE_BYTES, wt, 128, wg_sync);
      wg_sync();
    }

    // The warpgroups compute their tiles in turn (barrier 3 + wg: "the other finished tile t-1"),
    // so that one's next tile loads while the other computes, instead of both loading and then
    // both computing at half speed. The last two tiles have nothing left to load behind them and
    // run together (2-tile CTAs: 12.2 -> 11.6 us at 1x4K).
    if (t >= 1 && t + 1 < ntiles) named_bar_sync(3 + wg, 256);
    // ---- S^T = K Q^T ----
    T16_MARK1(3);
    float s[8];
    wgmma_fence();
#pragma unroll
    for (int c = 0; c < 9; ++c)
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        wgmma_m64n16k16<0>(s, sw128_desc(sK + c * 8192 + kk * 32, 16, 1024), sw128_desc(sQ + c * 2048 + kk * 32, 16, 1024),
                           (c | kk) ? 1 : 0);
    wgmma_commit();
    wgmma_wait<0>();
    fence_acc8(s);
    T16_MARK1(4);

    // ---- online softmax down each column (query row) ----
    column_maxima(s, w.kv_begin + t * 64);
    wg_sync();
    float al[2][2];
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int col = 8 * j + 2 * c4 + e, tok0 = 16 * wi + g;
        const float m_new = fmaxf(m_run[j][e], red_max(col));
        const float base = (m_new == neg_inf()) ? 0.f : m_new;
        al[j][e] = ex2(m_run[j][e] - base);
        m_run[j][e] = m_new;
        const float p0 = ex2(s[4 * j + e] - base), p1 = ex2(s[4 * j + 2 + e] - base);
        l_part[j][e] = l_part[j][e] * al[j][e] + p0 + p1;
        put_p(col, tok0, p0);
        put_p(col, tok0 + 8, p1);
      }
    fence_proxy_async();  // P written by st.shared, read next by wgmma
    wg_sync();            // P complete; everyone has read red[] (free for the next tile)
    T16_MARK1(5);

    // ---- O^T = alpha O^T + V^T P^T (the rescale skipped while no column's maximum moved) ----
    if (__any_sync(0xffffffffu, al[0][0] != 1.f || al[0][1] != 1.f || al[1][0] != 1.f || al[1][1] != 1.f)) {
#pragma unroll
      for (int mb = 0; mb < 8; ++mb)
#pragma unroll
        for (int j = 0; j < 2; ++j)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            o[mb][4 * j + e] *= al[j][e];
            o[mb][4 * j + 2 + e] *= al[j][e];
          }
    }
#pragma unroll
    for (int mb = 0; mb < 8; ++mb) fence_acc8(o[mb]);
    wgmma_fence();
#pragma unroll
    for (int mb = 0; mb < 8; ++mb)
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        wgmma_m64n16k16<1>(o[mb], sw128_desc(sK + mb * 8192 + kk * 2048, 8192, 1024), sw128_desc(sP + kk * 32, 16, 1024), 1);
    wgmma_commit();
    wgmma_wait<0>();
#pragma unroll
    for (int mb = 0; mb < 8; ++mb) fence_acc8(o[mb]);
    if (t + 2 < ntiles) named_bar_arrive(3 + (wg ^ 1), 256);  // the sync above, for tile t + 1
    wg_sync();  // the stage and P are free
    T16_MARK1(6);
    if (t + 2 < ntiles) load_tile(t + 2);
    cp_async_commit();
    if (t + 4 < ntiles) tile_pages(w.kv_begin, t + 4);
  }
  cp_async_wait<0>();  // a warpgroup without tiles still has Q in flight
  T16_MARK(11);

  // ---- epilogue: one CTA barrier. Each warpgroup publishes its column maxima and sums and hands
  // the other the half of O^T that the other finishes and stores (warpgroup 0 stores latent
  // dims 0-255, warpgroup 1 dims 256-511), staged in its own stage, idle now.
  column_sums();  // red[] is free: past the last tile's barrier
  if (wi == 0 && g == 0) {
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) sml[wg * C::ROWS + 8 * j + 2 * c4 + e] = m_run[j][e];
  }
  float4* stage_mine = reinterpret_cast<float4*>(smem + C::KV_OFF + wg * C::TILE_BYTES);
  // [block k of the handed-over half][half h of the fragment][thread]: conflict-free 16-byte stores
  auto hand_over = [&](const float(*oh)[8]) {
#pragma unroll
    for (int k = 0; k < 4; ++k)
#pragma unroll
      for (int h = 0; h < 2; ++h)
        stage_mine[(k * 2 + h) * 128 + wt] = make_float4(oh[k][4 * h], oh[k][4 * h + 1], oh[k][4 * h + 2], oh[k][4 * h + 3]);
  };
  if (wg == 0) hand_over(o + 4);
  else hand_over(o);
  __syncthreads();
  T16_MARK(12);

  const float* red_other = reinterpret_cast<const float*>(smem + C::RED_OFF) + (wg ^ 1) * 4 * C::ROWS;
  const float4* stage_other = reinterpret_cast<const float4*>(smem + C::KV_OFF + (wg ^ 1) * C::TILE_BYTES);
  float w_mine[2][2], w_other[2][2];  // weights of the two halves per column: 2^(m - M) / L
#pragma unroll
  for (int j = 0; j < 2; ++j)
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int col = 8 * j + 2 * c4 + e;
      const float m_me = m_run[j][e], m_ot = sml[(wg ^ 1) * C::ROWS + col];
      const float l_me = red_sum(red, col), l_ot = red_sum(red_other, col);
      const float M = fmaxf(m_me, m_ot), base = (M == neg_inf()) ? 0.f : M;
      const float e_me = ex2(m_me - base), e_ot = ex2(m_ot - base), L = l_me * e_me + l_ot * e_ot;
      const float inv = L > 0.f ? 1.f / L : 0.f;
      w_mine[j][e] = e_me * inv;
      w_other[j][e] = e_ot * inv;
      const int r = row0 + col;
      if (wg == 0 && wi == 0 && g == 0 && r < rows_total) store_lse(a, w, r, base, L);
    }
  T16_MARK(14);
  // merge this warpgroup's half into [16 rows][XSTR] f32 in its own stage (past the handed-over
  // part, which the other warpgroup may still be reading), then store it in 16-byte vectors
  float* xo = reinterpret_cast<float*>(smem + C::KV_OFF + wg * C::TILE_BYTES + C::HANDOVER_BYTES);
  auto merge = [&](const float(*oh)[8]) {
#pragma unroll
    for (int k = 0; k < 4; ++k)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float4 x = stage_other[(k * 2 + h) * 128 + wt];
        const float xv[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
        for (int q = 0; q < 4; ++q) {
          const int i = 4 * h + q, j = i >> 2, e = i & 1;
          const int d = 64 * k + 16 * wi + g + ((i & 2) ? 8 : 0), col = 8 * j + 2 * c4 + e;
          xo[col * C::XSTR + d] = oh[k][i] * w_mine[j][e] + xv[q] * w_other[j][e];
        }
      }
  };
  if (wg == 0) merge(o);
  else merge(o + 4);
  wg_sync();
  T16_MARK(15);
  store_half(xo);
  T16_MARK(13);
#else
  asm volatile("trap;");
#endif
}

}  // namespace mla

// The mma.sync decode kernel body (sm_80+), used for 16 heads and as the portable fallback.
#pragma once
#include "mla_decode_common.cuh"

namespace mla {

// ------------------------------------------------------------------------------------------------
// mma.sync kernel: ROWS = 16*MT query rows per CTA, T-token tiles, NST-stage cp.async pipeline.
// 8 warps. QK: warp (ks = warp&3, th = warp>>2) multiplies its Q slice (dims 144ks..144ks+143,
// kept in registers) with tokens th*T/2..th*T/2+T/2-1; the 4 K-split partials meet in shared
// memory. Softmax: 256/ROWS threads per row. PV: warp w owns latent dims 64w..64w+63.
// Every cache byte is read once per CTA; with H=16, q_len=1 there is one CTA per (seq, split).
// ------------------------------------------------------------------------------------------------
// FP8: the pipeline stages hold raw fp8 entries (656 B per token) and each tile is expanded to
// bf16 in one extra buffer before the tensor cores read it (one more barrier per tile).
template <int MT, int T, int NST, bool FP8 = false>
struct MmaCfg {
  static constexpr int ROWS = 16 * MT;
  static constexpr int KROW = MLA_D + 8;  // bf16 per smem cache row: 1168 B, conflict-free ldmatrix
  static constexpr int SSTR = T + 8;      // f32 per partial-S row
  static constexpr int PSTR = T + 8;      // bf16 per P row
  static constexpr int STAGE_BYTES = FP8 ? NST * T * MLA_FP8_BYTES : 0;
  static constexpr int KV_BYTES = FP8 ? STAGE_BYTES + T * KROW * 2 : NST * T * KROW * 2;
  static constexpr int RED_BYTES = 4 * ROWS * SSTR * 4;
  static constexpr int P_BYTES = ROWS * PSTR * 2;
  static constexpr int SMEM = KV_BYTES + RED_BYTES + P_BYTES + 3 * ROWS * 4;
};

template <int MT, int T, int NST, bool FP8 = false>
__device__ __forceinline__ void mma_decode(const Args& a, unsigned char* smem) {
  typedef MmaCfg<MT, T, NST, FP8> C;
  constexpr int ROWS = C::ROWS, KROW = C::KROW, SSTR = C::SSTR, PSTR = C::PSTR;
  constexpr int NTQ = T / 16;                      // n8 tiles per warp in QK
  constexpr int TPR = MLA_THREADS / ROWS;          // softmax threads per row
  constexpr int EPT = T / TPR;                     // softmax elements per thread
  constexpr int TPT = MLA_THREADS / T;             // loader threads per token
  constexpr int CHUNKS = FP8 ? MLA_FP8_CHUNKS : 72;  // 16-byte chunks per cached token
  constexpr int CPT = (CHUNKS + TPT - 1) / TPT;    // loader 16-byte chunks per thread
  static_assert(EPT >= 1 && TPR <= 32, "tile shape");

  Work w;
  if (!make_work(a, ROWS, w)) return;
  // The host launches these kernels without programmatic serialisation (two CTAs per SM: an early
  // dependent would share their SMs); the wait keeps them correct if one is.
  wait_for_prior_grids();  // q and the cache below

  unsigned char* stage8 = smem;  // FP8 only: raw entries, NST stages
  u16* kvs = reinterpret_cast<u16*>(smem + C::STAGE_BYTES);
  float* sred = reinterpret_cast<float*>(smem + C::KV_BYTES);
  u16* sp = reinterpret_cast<u16*>(smem + C::KV_BYTES + C::RED_BYTES);
  float* salpha = reinterpret_cast<float*>(smem + C::KV_BYTES + C::RED_BYTES + C::P_BYTES);
  float* sl = salpha + ROWS;
  float* sm = sl + ROWS;

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, c4 = lane & 3;
  const int ks = warp & 3, th = warp >> 2;
  const int ntiles = w.kv_stop > w.kv_begin ? (w.kv_stop - w.kv_begin + T - 1) / T : 0;

  // ---- loader: thread -> (token tid/TPT, 16-byte chunks tid%TPT + k*TPT) ----
  const int ld_tok = tid / TPT, ld_sub = tid % TPT;
  // source row of this thread's token in tile t (nullptr: nothing to read -> zero fill)
  const unsigned char* kv8 = reinterpret_cast<const unsigned char*>(a.kv);
  const PageMap pm(a, w.b);
  auto tile_src = [&](int t) -> const unsigned char* {
    const int pos = w.kv_begin + t * T + ld_tok;
    if (!(t < ntiles && pos < w.kv_stop)) return nullptr;
    const i64 slot = pm.slot(pm.page(pos), pos);
    return FP8 ? kv8 + slot * MLA_FP8_BYTES : reinterpret_cast<const unsigned char*>(a.kv + slot * MLA_D);
  };
  auto load_tile = [&](int t, const unsigned char* src) {
    const bool valid = src != nullptr;
    if (!valid) src = kv8;
    const u32 dst = FP8 ? smem_u32(stage8 + ((t % NST) * T + ld_tok) * MLA_FP8_BYTES)
                        : smem_u32(kvs + ((t % NST) * T + ld_tok) * KROW);
#pragma unroll
    for (int k = 0; k < CPT; ++k) {
      const int c = ld_sub + k * TPT;
      if (c < CHUNKS) cp_async_16(dst + c * 16, src + c * 16, valid);
    }
  };
  // FP8: expand the raw entries of stage `st` into the bf16 tile (thread -> token tid/TPT,
  // latent dims (tid%TPT)*64 .. +63 and k_pe dims 512 + (tid%TPT)*8 .. +7; TPT is 8 here).
  auto expand_tile = [&](int st) {
    const unsigned char* e = stage8 + (st * T + ld_tok) * MLA_FP8_BYTES;
    const float scale = reinterpret_cast<const float*>(e + 512)[ld_sub / 2];
    u16* row = kvs + ld_tok * KROW;
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      u32 packed[8];
      e4m3x16_to_bf16(*reinterpret_cast<const uint4*>(e + ld_sub * 64 + q * 16), scale, packed);
      uint4* dst = reinterpret_cast<uint4*>(row + ld_sub * 64 + q * 16);
      dst[0] = make_uint4(packed[0], packed[1], packed[2], packed[3]);
      dst[1] = make_uint4(packed[4], packed[5], packed[6], packed[7]);
    }
    *reinterpret_cast<uint4*>(row + 512 + ld_sub * 8) = *reinterpret_cast<const uint4*>(e + 528 + ld_sub * 16);
  };
#pragma unroll
  for (int s = 0; s < NST - 1; ++s) {
    if (s < ntiles) load_tile(s, tile_src(s));
    cp_async_commit();
  }
  const unsigned char* src_next = tile_src(NST - 1);  // page-table lookup one iteration ahead of its use

  // ---- Q slice in registers (A fragments): rows 16m+g(+8), dims 144ks + 16kk + 2c4 (+8) ----
  u32 qf[MT][9][4];
  {
    const u16* qb = a.q + (i64)w.b * w.rows_total * MLA_D;
#pragma unroll
    for (int m = 0; m < MT; ++m) {
#pragma unroll
      for (int hh = 0; hh < 2; ++hh) {
        const int r = w.row0 + 16 * m + g + 8 * hh;
        const bool ok = r < w.rows_total;
        const u32* qr = reinterpret_cast<const u32*>(qb + (i64)(ok ? r : 0) * MLA_D);
#pragma unroll
        for (int kk = 0; kk < 9; ++kk) {
          const int d = 144 * ks + 16 * kk + 2 * c4;
          qf[m][kk][hh] = ok ? __ldg(qr + d / 2) : 0u;
          qf[m][kk][2 + hh] = ok ? __ldg(qr + (d + 8) / 2) : 0u;
        }
      }
    }
  }

  float o[MT][8][4];
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[m][n][e] = 0.f;

  const int srow = tid / TPR, scol0 = (tid % TPR) * EPT;
  const int lim = row_limit(a, w, srow);
  const float sl2 = a.scale * 1.4426950408889634f;  // scores in log2 units
  float m_run = neg_inf(), l_run = 0.f;

  for (int t = 0; t < ntiles; ++t) {
    cp_async_wait<NST - 2>();
    __syncthreads();  // tile t visible; everyone finished tile t-1 (its stage is free)
    if (t + NST - 1 < ntiles) load_tile(t + NST - 1, src_next);
    cp_async_commit();
    src_next = tile_src(t + NST);
    if constexpr (FP8) {
      expand_tile(t % NST);
      __syncthreads();  // the bf16 tile is complete
    }
    const u16* kt = FP8 ? kvs : kvs + (t % NST) * T * KROW;

    // ---- QK partial over this warp's 144 dims and T/2 tokens (two accumulator chains) ----
    float sacc[MT][NTQ][4], sacc2[MT][NTQ][4];
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int n = 0; n < NTQ; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) sacc[m][n][e] = sacc2[m][n][e] = 0.f;
    const int tokq = th * (T / 2);
#pragma unroll
    for (int kk = 0; kk < 9; ++kk) {
      const int d0 = 144 * ks + 16 * kk;
      if constexpr (NTQ >= 2) {
#pragma unroll
        for (int np = 0; np < NTQ / 2; ++np) {
          u32 b0, b1, b2, b3;
          ldsm_x4(smem_u32(kt + (tokq + 16 * np + ((lane >> 4) << 3) + (lane & 7)) * KROW + d0 +
                           (((lane >> 3) & 1) << 3)),
                  b0, b1, b2, b3);
#pragma unroll
          for (int m = 0; m < MT; ++m) {
            float* c0 = (kk & 1) ? sacc2[m][2 * np] : sacc[m][2 * np];
            float* c1 = (kk & 1) ? sacc2[m][2 * np + 1] : sacc[m][2 * np + 1];
            mma_bf16(c0, qf[m][kk][0], qf[m][kk][1], qf[m][kk][2], qf[m][kk][3], b0, b1);
            mma_bf16(c1, qf[m][kk][0], qf[m][kk][1], qf[m][kk][2], qf[m][kk][3], b2, b3);
          }
        }
      } else {
        u32 b0, b1;
        ldsm_x2(smem_u32(kt + (tokq + (lane & 7)) * KROW + d0 + (((lane >> 3) & 1) << 3)), b0, b1);
#pragma unroll
        for (int m = 0; m < MT; ++m)
          mma_bf16((kk & 1) ? sacc2[m][0] : sacc[m][0], qf[m][kk][0], qf[m][kk][1], qf[m][kk][2],
                   qf[m][kk][3], b0, b1);
      }
    }
#pragma unroll
    for (int m = 0; m < MT; ++m)
#pragma unroll
      for (int n = 0; n < NTQ; ++n)
#pragma unroll
        for (int e = 0; e < 4; ++e) sacc[m][n][e] += sacc2[m][n][e];
    {
      float* sr = sred + ks * ROWS * SSTR;
#pragma unroll
      for (int m = 0; m < MT; ++m)
#pragma unroll
        for (int n = 0; n < NTQ; ++n) {
          const int row = 16 * m + g, col = tokq + 8 * n + 2 * c4;
          *reinterpret_cast<float2*>(sr + row * SSTR + col) = make_float2(sacc[m][n][0], sacc[m][n][1]);
          *reinterpret_cast<float2*>(sr + (row + 8) * SSTR + col) = make_float2(sacc[m][n][2], sacc[m][n][3]);
        }
    }
    __syncthreads();

    // ---- online softmax: row srow, columns scol0..scol0+EPT-1 ----
    {
      const int pos0 = w.kv_begin + t * T;
      float sv[EPT];
      float mx = neg_inf();
#pragma unroll
      for (int e = 0; e < EPT; ++e) {
        const int col = scol0 + e;
        float v = sred[srow * SSTR + col] + sred[ROWS * SSTR + srow * SSTR + col] +
                  sred[2 * ROWS * SSTR + srow * SSTR + col] + sred[3 * ROWS * SSTR + srow * SSTR + col];
        v = (pos0 + col < lim) ? v * sl2 : neg_inf();
        sv[e] = v;
        mx = fmaxf(mx, v);
      }
#pragma unroll
      for (int off = TPR / 2; off >= 1; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
      const float m_new = fmaxf(m_run, mx);
      const float base = (m_new == neg_inf()) ? 0.f : m_new;
      const float alpha = ex2(m_run - base);
      float psum = 0.f;
#pragma unroll
      for (int e = 0; e < EPT; ++e) {
        const float p = ex2(sv[e] - base);
        psum += p;
        sp[srow * PSTR + scol0 + e] = to_bf16(p);
      }
      l_run = l_run * alpha + psum;
      m_run = m_new;
      if (tid % TPR == 0) salpha[srow] = alpha;
    }
    __syncthreads();

    // ---- PV: o[rows, 64*warp .. +63] = o*alpha + P[rows, T] V[T, dims] ----
#pragma unroll
    for (int m = 0; m < MT; ++m) {
      const float al = salpha[16 * m + g], ah = salpha[16 * m + g + 8];
#pragma unroll
      for (int n = 0; n < 8; ++n) {
        o[m][n][0] *= al;
        o[m][n][1] *= al;
        o[m][n][2] *= ah;
        o[m][n][3] *= ah;
      }
    }
#pragma unroll
    for (int kk = 0; kk < T / 16; ++kk) {
      u32 pa[MT][4];
#pragma unroll
      for (int m = 0; m < MT; ++m)
        ldsm_x4(smem_u32(sp + (16 * m + (((lane >> 3) & 1) << 3) + (lane & 7)) * PSTR + 16 * kk +
                         ((lane >> 4) << 3)),
                pa[m][0], pa[m][1], pa[m][2], pa[m][3]);
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        u32 b0, b1, b2, b3;
        ldsm_x4_t(smem_u32(kt + (16 * kk + (((lane >> 3) & 1) << 3) + (lane & 7)) * KROW + 64 * warp +
                           16 * np + ((lane >> 4) << 3)),
                  b0, b1, b2, b3);
#pragma unroll
        for (int m = 0; m < MT; ++m) {
          mma_bf16(o[m][2 * np], pa[m][0], pa[m][1], pa[m][2], pa[m][3], b0, b1);
          mma_bf16(o[m][2 * np + 1], pa[m][0], pa[m][1], pa[m][2], pa[m][3], b2, b3);
        }
      }
    }
  }

  // ---- epilogue ----
#pragma unroll
  for (int off = TPR / 2; off >= 1; off >>= 1) l_run += __shfl_xor_sync(0xffffffffu, l_run, off);
  if (tid % TPR == 0) {
    sl[srow] = l_run;
    sm[srow] = m_run;
  }
  __syncthreads();
#pragma unroll
  for (int m = 0; m < MT; ++m)
#pragma unroll
    for (int hh = 0; hh < 2; ++hh) {
      const int rl = 16 * m + g + 8 * hh, r = w.row0 + rl;
      if (r >= w.rows_total) continue;
      const float l = sl[rl];
      const float inv = l > 0.f ? 1.f / l : 0.f;
#pragma unroll
      for (int n = 0; n < 8; ++n)
        store_o2(a, w, r, 64 * warp + 8 * n + 2 * c4, o[m][n][2 * hh] * inv, o[m][n][2 * hh + 1] * inv);
    }
  if (tid < ROWS && w.row0 + tid < w.rows_total) store_lse(a, w, w.row0 + tid, sm[tid], sl[tid]);
}

__device__ __forceinline__ void named_bar_sync(int id, int n) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}
__device__ __forceinline__ void named_bar_arrive(int id, int n) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}


}  // namespace mla

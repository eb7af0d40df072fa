// mla_decode.cu — paged MLA decode over the latent cache (absorbed form), DeepSeek-V2/V3.
//
// Device code only. Compiled at run time by NVRTC, e.g. options {"--std=c++17", "-arch=sm_90a"}.
// No #include at all: needs no --include-path. bf16 is carried as raw `unsigned short` bits.
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
// split is written straight to out/lse; one with several writes f32 partials
// (part_o [slots, q_len*H, 512], normalised; part_lse [slots, q_len*H]) that
// mla_decode_combine merges. See kernels/NOTES.md for grids, shared memory and the split heuristic.
//
// Kernels (all decode kernels share one argument list, see MLA_DECODE_ARGS; 256 threads):
//   mla_decode_mma_r16_t32_s2  16 rows/CTA, 32-token tiles, 2 stages, 2 CTAs/SM  (H=16, q_len=1)
//   mla_decode_mma_r16_t32     16 rows/CTA, 32-token tiles, 5 stages, 1 CTA/SM   (fallback, any H)
//   mla_decode_mma_r32_t32     32 rows/CTA, 32-token tiles, 5 stages, 1 CTA/SM   (H=16, q_len=2)
//   mla_decode_wgmma_r64       64 rows/CTA, 64-token tiles, wgmma, sm_90a only    (H=128)
//   mla_decode_combine         merges split partials (grid rows x B x 4, 256 threads)

typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

#define MLA_D 576   // kv_lora_rank 512 + rope 64
#define MLA_DV 512  // latent value width
#define MLA_THREADS 256

namespace mla {

// ------------------------------------------------------------------------------------------------
// small helpers (inline PTX, so nothing depends on CUDA headers)
// ------------------------------------------------------------------------------------------------
__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000u); }

__device__ __forceinline__ u32 smem_u32(const void* p) {
  u32 r;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
  return r;
}
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float lg2(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
// two floats -> packed bf16x2 (lo in the low half), round to nearest even
__device__ __forceinline__ u32 pack_bf16(float lo, float hi) {
  u32 r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
__device__ __forceinline__ u16 to_bf16(float x) {
  u16 r;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ void cp_async_16(u32 dst, const void* src, bool valid) {
  // src-size 0 zero-fills the 16 bytes and reads nothing
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void ldsm_x4(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void ldsm_x4_t(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void ldsm_x2(u32 addr, u32& r0, u32& r1) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r0), "=r"(r1)
               : "r"(addr)
               : "memory");
}
// D[16x8] += A[16x16] * B[16x8], bf16 in, f32 accumulate
__device__ __forceinline__ void mma_bf16(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// ------------------------------------------------------------------------------------------------
// arguments and per-CTA work item
// ------------------------------------------------------------------------------------------------
struct Args {
  const u16* q;              // [B, q_len, H, 576] bf16
  const u16* kv;             // [num_pages, page_size, 576] bf16
  const int* block_table;    // [B, max_pages] physical page ids
  const int* seq_lens;       // [B] tokens in the cache, new ones included
  const int* split_offsets;  // [B+1] prefix sums of splits per sequence
  u16* out;                  // [B, q_len, H, 512] bf16
  float* lse;                // [B, q_len, H] f32
  float* part_o;             // [slots, q_len*H, 512] f32 (only touched when a sequence has >1 split)
  float* part_lse;           // [slots, q_len*H] f32
  int q_len, heads, page_size, max_pages, chunk;
  float scale;
};

struct Work {
  int b, split, nsplit, slot;
  int seq, kv_begin, kv_end, kv_stop;  // kv_stop: end of what any row of this CTA can see
  int rows_total, row0;
};

// returns false when this CTA has nothing to do (split beyond the sequence's split count)
__device__ __forceinline__ bool make_work(const Args& a, int rows_per_cta, Work& w) {
  w.b = blockIdx.z;
  w.split = blockIdx.y;
  const int s0 = a.split_offsets[w.b];
  w.nsplit = a.split_offsets[w.b + 1] - s0;
  if (w.split >= w.nsplit) return false;
  w.slot = s0 + w.split;
  w.seq = imax(a.seq_lens[w.b], 0);
  w.rows_total = a.q_len * a.heads;
  w.row0 = blockIdx.x * rows_per_cta;
  if (w.row0 >= w.rows_total) return false;
  w.kv_begin = w.split * a.chunk;
  w.kv_end = imin(w.seq, w.kv_begin + a.chunk);
  const int last_row = imin(w.row0 + rows_per_cta, w.rows_total) - 1;
  w.kv_stop = imin(w.kv_end, w.seq - a.q_len + last_row / a.heads + 1);
  return true;
}

// causal limit (exclusive) of one row; padding rows read what the CTA reads
__device__ __forceinline__ int row_limit(const Args& a, const Work& w, int local_row) {
  const int r = w.row0 + local_row;
  if (r >= w.rows_total) return w.kv_stop;
  return imin(w.kv_end, w.seq - a.q_len + r / a.heads + 1);
}

// global element offset of cache position `pos` of sequence b (pos must be < seq_len)
__device__ __forceinline__ i64 cache_row(const Args& a, int b, int pos) {
  const int page = __ldg(a.block_table + (i64)b * a.max_pages + pos / a.page_size);
  return ((i64)page * a.page_size + pos % a.page_size) * MLA_D;
}

// final store of one row-pair value pair: direct (bf16) or partial (f32)
__device__ __forceinline__ void store_o2(const Args& a, const Work& w, int r, int d, float v0, float v1) {
  if (w.nsplit == 1) {
    *reinterpret_cast<u32*>(a.out + ((i64)w.b * w.rows_total + r) * MLA_DV + d) = pack_bf16(v0, v1);
  } else {
    *reinterpret_cast<float2*>(a.part_o + ((i64)w.slot * w.rows_total + r) * MLA_DV + d) =
        make_float2(v0, v1);
  }
}
__device__ __forceinline__ void store_lse(const Args& a, const Work& w, int r, float m2, float l) {
  const float v = (l > 0.f) ? (m2 + lg2(l)) * 0.6931471805599453f : neg_inf();
  if (w.nsplit == 1) a.lse[(i64)w.b * w.rows_total + r] = v;
  else a.part_lse[(i64)w.slot * w.rows_total + r] = v;
}

// ------------------------------------------------------------------------------------------------
// mma.sync kernel: ROWS = 16*MT query rows per CTA, T-token tiles, NST-stage cp.async pipeline.
// 8 warps. QK: warp (ks = warp&3, th = warp>>2) multiplies its Q slice (dims 144ks..144ks+143,
// kept in registers) with tokens th*T/2..th*T/2+T/2-1; the 4 K-split partials meet in shared
// memory. Softmax: 256/ROWS threads per row. PV: warp w owns latent dims 64w..64w+63.
// Every cache byte is read once per CTA; with H=16, q_len=1 there is one CTA per (seq, split).
// ------------------------------------------------------------------------------------------------
template <int MT, int T, int NST>
struct MmaCfg {
  static constexpr int ROWS = 16 * MT;
  static constexpr int KROW = MLA_D + 8;  // bf16 per smem cache row: 1168 B, conflict-free ldmatrix
  static constexpr int SSTR = T + 8;      // f32 per partial-S row
  static constexpr int PSTR = T + 8;      // bf16 per P row
  static constexpr int KV_BYTES = NST * T * KROW * 2;
  static constexpr int RED_BYTES = 4 * ROWS * SSTR * 4;
  static constexpr int P_BYTES = ROWS * PSTR * 2;
  static constexpr int SMEM = KV_BYTES + RED_BYTES + P_BYTES + 3 * ROWS * 4;
};

template <int MT, int T, int NST>
__device__ __forceinline__ void mma_decode(const Args& a, unsigned char* smem) {
  typedef MmaCfg<MT, T, NST> C;
  constexpr int ROWS = C::ROWS, KROW = C::KROW, SSTR = C::SSTR, PSTR = C::PSTR;
  constexpr int NTQ = T / 16;                      // n8 tiles per warp in QK
  constexpr int TPR = MLA_THREADS / ROWS;          // softmax threads per row
  constexpr int EPT = T / TPR;                     // softmax elements per thread
  constexpr int TPT = MLA_THREADS / T;             // loader threads per token
  constexpr int CPT = (72 + TPT - 1) / TPT;        // loader 16-byte chunks per thread
  static_assert(EPT >= 1 && TPR <= 32, "tile shape");

  Work w;
  if (!make_work(a, ROWS, w)) return;

  u16* kvs = reinterpret_cast<u16*>(smem);
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
  auto tile_src = [&](int t) -> const u16* {
    const int pos = w.kv_begin + t * T + ld_tok;
    return (t < ntiles && pos < w.kv_stop) ? a.kv + cache_row(a, w.b, pos) : nullptr;
  };
  auto load_tile = [&](int t, const u16* src) {
    const bool valid = src != nullptr;
    if (!valid) src = a.kv;
    const u32 dst = smem_u32(kvs + ((t % NST) * T + ld_tok) * KROW);
#pragma unroll
    for (int k = 0; k < CPT; ++k) {
      const int c = ld_sub + k * TPT;
      if (c < 72) cp_async_16(dst + c * 16, src + c * 8, valid);
    }
  };
#pragma unroll
  for (int s = 0; s < NST - 1; ++s) {
    if (s < ntiles) load_tile(s, tile_src(s));
    cp_async_commit();
  }
  const u16* src_next = tile_src(NST - 1);  // page-table lookup one iteration ahead of its use

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
    const u16* kt = kvs + (t % NST) * T * KROW;

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

// ------------------------------------------------------------------------------------------------
// wgmma kernel (sm_90a): 64 query rows per CTA, 64-token tiles, 2 warpgroups.
// Shared memory tiles use the 128-byte swizzle wgmma expects: a [rows x 576] bf16 tile is 9
// column chunks of 64 dims; chunk c holds rows x 128 B, 16-byte unit u of row r stored at
// c*rows*128 + r*128 + ((u ^ (r & 7)) * 16). The same cache tile serves as K (K-major B of
// S = Q K^T) and as V (MN-major B of O = P V).
//   WG0: S = Q K^T (36 x m64n64k16), online softmax, P -> smem (bf16, swizzled), alpha -> smem.
//   both: O[:, 256*wg .. +255] = alpha*O + P V (4 x m64n256k16), accumulators in registers.
// ------------------------------------------------------------------------------------------------
#if defined(__CUDA_ARCH__) && (__CUDA_ARCH__ >= 900) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define MLA_HAS_WGMMA 1
#endif

#ifdef MLA_HAS_WGMMA
// ---- GENERATED by kernels/dev/gen_wgmma.py: do not edit by hand ----
__device__ __forceinline__ void wgmma_m64n64k16_ss(float* d, u64 da, u64 db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(da), "l"(db), "r"(scale_d));
}

__device__ __forceinline__ void wgmma_m64n256k16_ss_tb(float* d, u64 da, u64 db, int scale_d) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p, 1, 1, 0, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]), "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(da), "l"(db), "r"(scale_d));
}

__device__ __forceinline__ void fence_acc32(float* d) {
#pragma unroll
  for (int i = 0; i < 32; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

__device__ __forceinline__ void fence_acc128(float* d) {
#pragma unroll
  for (int i = 0; i < 128; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// ---- END GENERATED ----

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// shared-memory matrix descriptor, 128-byte swizzle
__device__ __forceinline__ u64 sw128_desc(u32 saddr, u32 lbo, u32 sbo) {
  return (u64)((saddr & 0x3FFFFu) >> 4) | ((u64)(lbo >> 4) << 16) | ((u64)(sbo >> 4) << 32) | (1ull << 62);
}
#endif

struct WgCfg {
  static constexpr int TILE = 64;
  static constexpr int TILE_BYTES = 64 * MLA_D * 2;  // 73728 = 9 chunks x 8192
  static constexpr int Q_OFF = 0;
  static constexpr int KV_OFF = TILE_BYTES;          // 2 stages
  static constexpr int P_OFF = 3 * TILE_BYTES;       // 8192
  static constexpr int SMALL_OFF = P_OFF + 8192;     // alpha, l, m: 3 x 64 f32
  static constexpr int SMEM = SMALL_OFF + 3 * 64 * 4 + 1024;  // + alignment slack
};

__device__ __forceinline__ u32 sw128_off(int row, int c16) {
  return (u32)((c16 >> 3) * 8192 + row * 128 + (((c16 & 7) ^ (row & 7)) << 4));
}

__device__ __forceinline__ void wgmma_decode(const Args& a, unsigned char* smem_raw) {
#ifdef MLA_HAS_WGMMA
  Work w;
  if (!make_work(a, 64, w)) return;
  const u32 raw = smem_u32(smem_raw);
  unsigned char* smem = smem_raw + (((raw + 1023u) & ~1023u) - raw);
  const u32 sbase = smem_u32(smem);
  const u32 sQ = sbase + WgCfg::Q_OFF, sKV = sbase + WgCfg::KV_OFF, sP = sbase + WgCfg::P_OFF;
  unsigned char* pgen = smem + WgCfg::P_OFF;
  float* salpha = reinterpret_cast<float*>(smem + WgCfg::SMALL_OFF);
  float* sl = salpha + 64;
  float* sm = sl + 64;

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, c4 = lane & 3;
  const int wg = warp >> 2, wi = warp & 3;
  const int R0 = 16 * wi + g, R1 = R0 + 8;
  const int ntiles = w.kv_stop > w.kv_begin ? (w.kv_stop - w.kv_begin + 63) / 64 : 0;

  // loader: thread -> row tid/4, 16-byte chunks tid%4 + 4k (k < 18)
  const int ld_row = tid >> 2, ld_sub = tid & 3;
  auto tile_src = [&](int t) -> const u16* {
    const int pos = w.kv_begin + t * 64 + ld_row;
    return (t < ntiles && pos < w.kv_stop) ? a.kv + cache_row(a, w.b, pos) : nullptr;
  };
  auto load_tile = [&](int t, const u16* src) {
    const bool valid = src != nullptr;
    if (!valid) src = a.kv;
    const u32 dst = sKV + (t & 1) * WgCfg::TILE_BYTES;
#pragma unroll
    for (int k = 0; k < 18; ++k) {
      const int c = ld_sub + 4 * k;
      cp_async_16(dst + sw128_off(ld_row, c), src + c * 8, valid);
    }
  };
  {
    const int r = w.row0 + ld_row;
    const bool ok = r < w.rows_total;
    const u16* src = ok ? a.q + ((i64)w.b * w.rows_total + r) * MLA_D : a.q;
#pragma unroll
    for (int k = 0; k < 18; ++k) {
      const int c = ld_sub + 4 * k;
      cp_async_16(sQ + sw128_off(ld_row, c), src + c * 8, ok);
    }
  }
  if (ntiles > 0) load_tile(0, tile_src(0));
  cp_async_commit();
  if (ntiles > 1) load_tile(1, tile_src(1));
  cp_async_commit();

  float o[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) o[i] = 0.f;
  float m0 = neg_inf(), m1 = neg_inf(), l0 = 0.f, l1 = 0.f;
  const int lim0 = row_limit(a, w, R0), lim1 = row_limit(a, w, R1);
  const float sl2 = a.scale * 1.4426950408889634f;

  for (int t = 0; t < ntiles; ++t) {
    cp_async_wait<1>();
    fence_proxy_async();  // cp.async wrote through the generic proxy; wgmma reads via the async proxy
    __syncthreads();
    const u32 sK = sKV + (t & 1) * WgCfg::TILE_BYTES;
    const u16* src_next = tile_src(t + 2);  // page lookup overlaps this tile's math
    if (wg == 0) {
      float s[32];
      wgmma_fence();
#pragma unroll
      for (int c = 0; c < 9; ++c)
#pragma unroll
        for (int kk = 0; kk < 4; ++kk)
          wgmma_m64n64k16_ss(s, sw128_desc(sQ + c * 8192 + kk * 32, 16, 1024),
                             sw128_desc(sK + c * 8192 + kk * 32, 16, 1024), (c | kk) ? 1 : 0);
      wgmma_commit();
      wgmma_wait<0>();
      fence_acc32(s);

      const int pos0 = w.kv_begin + t * 64;
      float mx0 = neg_inf(), mx1 = neg_inf();
#pragma unroll
      for (int j = 0; j < 8; ++j)
#pragma unroll
        for (int e = 0; e < 2; ++e) {
          const int p = pos0 + 8 * j + 2 * c4 + e;
          const float v0 = (p < lim0) ? s[4 * j + e] * sl2 : neg_inf();
          const float v1 = (p < lim1) ? s[4 * j + 2 + e] * sl2 : neg_inf();
          s[4 * j + e] = v0;
          s[4 * j + 2 + e] = v1;
          mx0 = fmaxf(mx0, v0);
          mx1 = fmaxf(mx1, v1);
        }
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
      mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
      mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
      const float n0 = fmaxf(m0, mx0), n1 = fmaxf(m1, mx1);
      const float b0 = (n0 == neg_inf()) ? 0.f : n0, b1 = (n1 == neg_inf()) ? 0.f : n1;
      const float al0 = ex2(m0 - b0), al1 = ex2(m1 - b1);
      m0 = n0;
      m1 = n1;
      float ps0 = 0.f, ps1 = 0.f;
#pragma unroll
      for (int j = 0; j < 8; ++j) {
        const float p00 = ex2(s[4 * j] - b0), p01 = ex2(s[4 * j + 1] - b0);
        const float p10 = ex2(s[4 * j + 2] - b1), p11 = ex2(s[4 * j + 3] - b1);
        ps0 += p00 + p01;
        ps1 += p10 + p11;
        *reinterpret_cast<u32*>(pgen + R0 * 128 + ((j ^ (R0 & 7)) << 4) + c4 * 4) = pack_bf16(p00, p01);
        *reinterpret_cast<u32*>(pgen + R1 * 128 + ((j ^ (R1 & 7)) << 4) + c4 * 4) = pack_bf16(p10, p11);
      }
      l0 = l0 * al0 + ps0;
      l1 = l1 * al1 + ps1;
      if (c4 == 0) {
        salpha[R0] = al0;
        salpha[R1] = al1;
      }
#pragma unroll
      for (int j = 0; j < 32; ++j) {
        o[4 * j] *= al0;
        o[4 * j + 1] *= al0;
        o[4 * j + 2] *= al1;
        o[4 * j + 3] *= al1;
      }
      fence_proxy_async();  // P written by st.shared, read next by wgmma
      named_bar_sync(1, 256);
    } else {
      named_bar_sync(1, 256);
      const float al0 = salpha[R0], al1 = salpha[R1];
#pragma unroll
      for (int j = 0; j < 32; ++j) {
        o[4 * j] *= al0;
        o[4 * j + 1] *= al0;
        o[4 * j + 2] *= al1;
        o[4 * j + 3] *= al1;
      }
    }
    // O[:, 256wg..] += P[64 x 64] V[64 x 256]: V is the cache tile read MN-major (transposed B):
    // LBO = 8192 (next 64-dim chunk), SBO = 1024 (next 8 tokens); k-step of 16 tokens = 2048 B.
    fence_acc128(o);  // keep the alpha rescale above the wgmma fence
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      wgmma_m64n256k16_ss_tb(o, sw128_desc(sP + kk * 32, 16, 1024),
                             sw128_desc(sK + (4 * wg) * 8192 + kk * 2048, 8192, 1024), 1);
    wgmma_commit();
    wgmma_wait<0>();
    fence_acc128(o);
    __syncthreads();  // stage (t&1) and sP are free again
    if (t + 2 < ntiles) load_tile(t + 2, src_next);
    cp_async_commit();
  }

  if (wg == 0) {
    l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
    l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
    l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
    if (c4 == 0) {
      sl[R0] = l0;
      sm[R0] = m0;
      sl[R1] = l1;
      sm[R1] = m1;
    }
  }
  __syncthreads();
  const float L0 = sl[R0], L1 = sl[R1];
  const float inv0 = L0 > 0.f ? 1.f / L0 : 0.f, inv1 = L1 > 0.f ? 1.f / L1 : 0.f;
  const int r0 = w.row0 + R0, r1 = w.row0 + R1;
#pragma unroll
  for (int j = 0; j < 32; ++j) {
    const int d = 256 * wg + 8 * j + 2 * c4;
    if (r0 < w.rows_total) store_o2(a, w, r0, d, o[4 * j] * inv0, o[4 * j + 1] * inv0);
    if (r1 < w.rows_total) store_o2(a, w, r1, d, o[4 * j + 2] * inv1, o[4 * j + 3] * inv1);
  }
  if (tid < 64 && w.row0 + tid < w.rows_total) store_lse(a, w, w.row0 + tid, sm[tid], sl[tid]);
#else
  asm volatile("trap;");
#endif
}

// ------------------------------------------------------------------------------------------------
// combine: grid (q_len*H rows, B, 4 latent quarters), 256 threads = 8 warps. Every CTA computes
// the split weights of its row in shared memory; warp k then sums splits k, k+8, ... for 128
// dims (lane -> 4 dims) and the 8 warps are added in shared memory. At most MLA_MAX_SPLITS splits.
// ------------------------------------------------------------------------------------------------
#define MLA_MAX_SPLITS 1024
__device__ __forceinline__ float block_reduce(float v, bool is_max, float* red) {
#pragma unroll
  for (int off = 16; off >= 1; off >>= 1) {
    const float o = __shfl_xor_sync(0xffffffffu, v, off);
    v = is_max ? fmaxf(v, o) : v + o;
  }
  const int warp = threadIdx.x >> 5;
  __syncthreads();  // red[] free from any earlier use
  if ((threadIdx.x & 31) == 0) red[warp] = v;
  __syncthreads();
  v = red[0];
#pragma unroll
  for (int i = 1; i < 8; ++i) v = is_max ? fmaxf(v, red[i]) : v + red[i];
  return v;
}

__device__ __forceinline__ void combine(const float* __restrict__ part_o, const float* __restrict__ part_lse,
                                        const int* __restrict__ split_offsets, u16* __restrict__ out,
                                        float* __restrict__ lse, int rows_total) {
  __shared__ float sw[MLA_MAX_SPLITS];
  __shared__ float red[8];
  __shared__ float4 acc_s[8][32];
  const int r = blockIdx.x, b = blockIdx.y, quarter = blockIdx.z, tid = threadIdx.x;
  const int warp = tid >> 5, lane = tid & 31;
  const int s0 = split_offsets[b], ns = split_offsets[b + 1] - s0;
  if (ns <= 1) return;  // written directly by the decode kernel
  const int d = 128 * quarter + 4 * lane;
  const float* po = part_o + ((i64)s0 * rows_total + r) * MLA_DV + d;
  const i64 sstride = (i64)rows_total * MLA_DV;
  float4 pre[4];  // partials of splits warp, warp+8, warp+16, warp+24: in flight during the lse phase
#pragma unroll
  for (int k = 0; k < 4; ++k)
    pre[k] = (warp + 8 * k < ns) ? __ldg(reinterpret_cast<const float4*>(po + (warp + 8 * k) * sstride))
                                 : make_float4(0.f, 0.f, 0.f, 0.f);
  float mx = neg_inf();
  for (int s = tid; s < ns; s += 256) {
    const float v = part_lse[(i64)(s0 + s) * rows_total + r];
    sw[s] = v;
    mx = fmaxf(mx, v);
  }
  mx = block_reduce(mx, true, red);
  const i64 orow = ((i64)b * rows_total + r) * MLA_DV;
  if (mx == neg_inf()) {
    if (warp == 0) *reinterpret_cast<uint2*>(out + orow + d) = make_uint2(0u, 0u);
    if (tid == 0 && quarter == 0) lse[(i64)b * rows_total + r] = neg_inf();
    return;
  }
  float ws = 0.f;
  for (int s = tid; s < ns; s += 256) {
    const float wt = ex2((sw[s] - mx) * 1.4426950408889634f);  // 0 for an empty split (-inf)
    sw[s] = wt;
    ws += wt;
  }
  ws = block_reduce(ws, false, red);  // its barriers also publish sw[]
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float wt = (warp + 8 * k < ns) ? sw[warp + 8 * k] : 0.f;
    acc.x += wt * pre[k].x;
    acc.y += wt * pre[k].y;
    acc.z += wt * pre[k].z;
    acc.w += wt * pre[k].w;
  }
#pragma unroll 4
  for (int s = warp + 32; s < ns; s += 8) {
    const float wt = sw[s];
    const float4 v = __ldg(reinterpret_cast<const float4*>(po + s * sstride));
    acc.x += wt * v.x;
    acc.y += wt * v.y;
    acc.z += wt * v.z;
    acc.w += wt * v.w;
  }
  acc_s[warp][lane] = acc;
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int k = 1; k < 8; ++k) {
      const float4 v = acc_s[k][lane];
      acc.x += v.x;
      acc.y += v.y;
      acc.z += v.z;
      acc.w += v.w;
    }
    const float inv = 1.f / ws;
    *reinterpret_cast<uint2*>(out + orow + d) =
        make_uint2(pack_bf16(acc.x * inv, acc.y * inv), pack_bf16(acc.z * inv, acc.w * inv));
  }
  if (tid == 0 && quarter == 0) lse[(i64)b * rows_total + r] = mx + lg2(ws) * 0.6931471805599453f;
}

}  // namespace mla

// ------------------------------------------------------------------------------------------------
// entry points
// ------------------------------------------------------------------------------------------------
#define MLA_DECODE_ARGS                                                                              \
  const u16 *__restrict__ q, const u16 *__restrict__ kv, const int *__restrict__ block_table,        \
      const int *__restrict__ seq_lens, const int *__restrict__ split_offsets, u16 *__restrict__ out, \
      float *__restrict__ lse, float *__restrict__ part_o, float *__restrict__ part_lse, int q_len,  \
      int heads, int page_size, int max_pages, int chunk, float scale
#define MLA_MAKE_ARGS                                                                                 \
  mla::Args a{q, kv, block_table, seq_lens, split_offsets, out, lse, part_o, part_lse, q_len, heads, \
              page_size, max_pages, chunk, scale}

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
extern "C" __global__ void __launch_bounds__(256) mla_decode_combine(const float* __restrict__ part_o,
                                                                    const float* __restrict__ part_lse,
                                                                    const int* __restrict__ split_offsets,
                                                                    u16* __restrict__ out, float* __restrict__ lse,
                                                                    int rows_total) {
  mla::combine(part_o, part_lse, split_offsets, out, lse, rows_total);
}

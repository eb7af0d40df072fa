// The FP8-math decode kernel with ping-pong warpgroups (sm_90a), 128 heads, fp8 cache: the math of
// mla_decode_f8mma.cuh (S and O^T = V^T P' on the FP8 tensor cores, the tile never expanded) with
// the schedule of mla_decode_wgmma_pp.cuh. f8mma runs S, the softmax and P' of every tile through
// one producer warpgroup (~4,400 cycles a tile against ~1,150 of FP8 tensor work); here two
// warpgroups own alternate tiles, each copying its tiles, computing their S, softmax and P' and
// publishing the softmax state, and both add O^T += V^T P' for their own 256 latent dims of every
// tile.
//
// Order within a warpgroup's iteration u: S(u) first, which three stages allow (S(u) reads only
// its own stage), then the P V of the other's tile u - 1, so that S(u) runs beside the other's
// softmax and P' of u - 1 (ptxas: 255 registers, 20 bytes spilled). F8PP_S_FIRST=0 (a
// development knob, MLAHOST_KERNEL_DEFINES=-DF8PP_S_FIRST=0) is the first order written: the
// P V of u - 1 before S(u), which then waits for the other's softmax, so per tile the chain is
// P V + S + softmax + P' (116 bytes spilled). Neither has run yet; the A/B decides which stays.
//
// Shared memory as F8Cfg: Q (e4m3 + k_pe), three stages of raw tiles (tile t in stage t % 3), P'
// of tile t in buffer t & 1 (its owner's). A stage is refilled with tile t + 3, owned by the other
// warpgroup, once both P V of tile t are done; the owner of t says so (FREE) after its own.
//
// Published per tile (one buffer each: a tile's values are read by the follower before it
// publishes the next): alpha per row, the running row maxima, the block-scale ratios and maxima
// (P' of block k is P x s_k x 256 / M_k, M_k the largest scale of block k so far).
//
// Named barriers (besides 0): LOCAL_w (1 + w, 128): within warpgroup w; PUB_w (3 + w, 256): tile of
// w published; FREE_w (5 + w, 256): the other warpgroup finished P V of its tile whose stage w
// refills next.
#pragma once
#include "mla_decode_f8mma.cuh"

#ifndef F8PP_S_FIRST
#define F8PP_S_FIRST 1
#endif

namespace mla {

// offsets (floats) from F8Cfg::SMALL_OFF
struct F8PpSmall {
  static constexpr int ROW_SCALE = 0, ALPHA = 64, MAX = 128, RATIO = 192, MK = 196, SUM = 200, FIN = 328;
  static_assert(FIN + 4 <= F8Cfg::SMALL_FLOATS, "fits F8Cfg's small arrays");
};

// raw fp8 entries of the tile's rows into a stage in F8Cfg's layout (codes as 4 swizzled blocks,
// the 4 scales, k_pe swizzled), by one warpgroup as copy_bf16_tile; rows past kv_stop zero-filled
__device__ __forceinline__ void copy_f8_stage(u32 dst, const u16* kv, const PageMap& pm, const TilePages& pg, int first_pos, int kv_stop,
                                              int ld_row, int ld_unit) {
#pragma unroll
  for (int h = 0; h < 4; ++h) {
    const int row = ld_row + 16 * h, pos = first_pos + row;
    const bool valid = pos < kv_stop;
    const i64 slot = valid ? pm.slot(pg.p[h], pos) : 0;
    const unsigned char* sp = reinterpret_cast<const unsigned char*>(kv) + slot * MLA_FP8_BYTES;
#pragma unroll
    for (int m = 0; m < 6; ++m) {
      const int j = ld_unit + 8 * m;
      if (j >= MLA_FP8_CHUNKS) continue;
      u32 off;
      if (j < 32) off = F8Cfg::CODES + (j >> 3) * 8192 + row * 128 + (((j & 7) ^ (row & 7)) << 4);
      else if (j == 32) off = F8Cfg::SCALES + row * 16;
      else off = F8Cfg::PE + row * 128 + (((j - 33) ^ (row & 7)) << 4);
      cp_async_16(dst + off, sp + j * 16, valid);
    }
  }
}

struct F8PpCtx {
  const Args& a;
  const Work& w;
  const PageMap& pm;
  unsigned char* smem;
  u32 sbase;
  int ntiles, lim0, lim1, R0, R1, c4, wi, lane, ld_row, ld_unit;
};

template <int WG>
__device__ __forceinline__ void f8pp_tiles(const F8PpCtx& c, float (&o)[128], float& l0, float& l1) {
#ifdef MLA_HAS_WGMMA
  constexpr int OTHER = 1 - WG, LOCAL = 1 + WG, PUB_MINE = 3 + WG, PUB_OTHER = 3 + OTHER, FREE_MINE = 5 + WG, FREE_OTHER = 5 + OTHER;
  float* small = reinterpret_cast<float*>(c.smem + F8Cfg::SMALL_OFF);
  float* salpha = small + F8PpSmall::ALPHA;
  float* smax = small + F8PpSmall::MAX;
  float* sratio = small + F8PpSmall::RATIO;
  float* smk = small + F8PpSmall::MK;
  const u32 sQ = c.sbase + F8Cfg::Q_OFF, sQpe = c.sbase + F8Cfg::QPE_OFF, sKV = c.sbase + F8Cfg::KV_OFF, sP = c.sbase + F8Cfg::P_OFF;
  const int R0 = c.R0, R1 = c.R1, c4 = c.c4, ntiles = c.ntiles, wt = threadIdx.x & 127;
  float m0 = neg_inf(), m1 = neg_inf();
  float mk[4] = {0.f, 0.f, 0.f, 0.f};
  const float sl2 = c.a.scale * 1.4426950408889634f;
  const float rs0 = sl2 * small[F8PpSmall::ROW_SCALE + R0], rs1 = sl2 * small[F8PpSmall::ROW_SCALE + R1];

  // O^T by tile t's factors: column (head) h by alpha[h] x its block's scale ratio (row tiles 0-1:
  // block 2 WG, 2-3: block 2 WG + 1); al holds alpha of heads 8j + 2c4, +1; skipped when all are 1
  auto rescale = [&](const float2 (&al)[8], float ra, float rb) {
    bool need = ra != 1.f || rb != 1.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) need |= al[j].x != 1.f || al[j].y != 1.f;
    if (!__any_sync(0xffffffffu, need)) return;
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int rt = 0; rt < 4; ++rt) {
        const float r = rt < 2 ? ra : rb;
        o[32 * rt + 4 * j] *= al[j].x * r;
        o[32 * rt + 4 * j + 1] *= al[j].y * r;
        o[32 * rt + 4 * j + 2] *= al[j].x * r;
        o[32 * rt + 4 * j + 3] *= al[j].y * r;
      }
  };
  // the published factors of the last tile, for this thread's columns and blocks
  auto read_factors = [&](float2 (&al)[8], float& ra, float& rb) {
#pragma unroll
    for (int j = 0; j < 8; ++j) al[j] = *reinterpret_cast<const float2*>(salpha + 8 * j + 2 * c4);
    ra = sratio[2 * WG];
    rb = sratio[2 * WG + 1];
  };
  // O^T[256 WG ..] += V^T P'(t): 8 wgmma m64n64k32 (row tile rt: 64 dims of block 2 WG + rt/2; 32
  // tokens kk), A = V^T from the stage by ldmatrix.trans + byte permutes as in f8mma; returns
  // with every MMA done (the A registers then may be reused)
  auto issue_pv = [&](int t) {
    const u32 codes = sKV + (t % F8Cfg::STAGES) * F8Cfg::STAGE_BYTES + F8Cfg::CODES;
    const u32 pbuf = sP + (t & 1) * 16384 + WG * 8192;
    u32 A[2][4];
    fence_acc128(o);
#pragma unroll
    for (int step = 0; step < 8; ++step) {
      const int rt = step >> 1, kk = step & 1;
      const int blk = 2 * WG + (rt >> 1), unit = 4 * (rt & 1) + c.wi;
      const int tok = 32 * kk + c.lane;
      u32 r0, r1, r2, r3;
      if (step >= 2) {
        wgmma_wait<1>();  // step - 2, the last reader of A[step % 2], is done
        keep_a(A[step % 2]);
      }
      ldsm_x4_t(codes + blk * 8192 + tok * 128 + ((unit ^ (tok & 7)) << 4), r0, r1, r2, r3);
      A[step % 2][0] = byte_perm(r0, r1, 0x6420);
      A[step % 2][1] = byte_perm(r0, r1, 0x7531);
      A[step % 2][2] = byte_perm(r2, r3, 0x6420);
      A[step % 2][3] = byte_perm(r2, r3, 0x7531);
      wgmma_fence();
      wgmma_m64n64k32_e4m3_rs(o + 32 * rt, A[step % 2], sw128_desc(pbuf + (rt >> 1) * 64 + kk * 32, 16, 1024), 1);
      wgmma_commit();
    }
    wgmma_wait<0>();
    keep_a(A[0]);
    keep_a(A[1]);
    fence_acc128(o);
  };
  // the other warpgroup's tile t: its published state, then its P V
  auto follow = [&](int t) {
    named_bar_sync(PUB_OTHER, 256);
    float2 al[8];
    float ra, rb;
    read_factors(al, ra, rb);
    m0 = smax[R0];
    m1 = smax[R1];
#pragma unroll
    for (int k = 0; k < 4; ++k) mk[k] = smk[k];
    const float a0 = salpha[R0], a1 = salpha[R1];
    l0 *= a0;
    l1 *= a1;
    rescale(al, ra, rb);
    issue_pv(t);
  };

  // tile u + 2 (own) into the stage of tile u - 1, whose P V are both done: the follower's
  // (follow(u - 1) before this), the owner's (FREE); tiles up to 2 came with the prologue
  auto refill = [&](int u) {
    if (u + 2 < ntiles && u + 2 >= 3) {
      const TilePages pg = tile_pages_of(c.pm, c.w.kv_begin + (u + 2) * 64, c.ld_row);
      named_bar_sync(FREE_MINE, 256);
      copy_f8_stage(sKV + ((u + 2) % F8Cfg::STAGES) * F8Cfg::STAGE_BYTES, c.a.kv, c.pm, pg, c.w.kv_begin + (u + 2) * 64, c.w.kv_stop, c.ld_row,
                    c.ld_unit);
    }
    cp_async_commit();  // one group per own tile, possibly empty
  };

  for (int u = WG; u < ntiles; u += 2) {
#if !F8PP_S_FIRST
    if (u >= 1) follow(u - 1);
#endif
    // this tile's copies (the prologue's second group holds warpgroup 0's tile 2)
    if (u < 2) cp_async_wait<1>();
    else cp_async_wait<0>();
    fence_proxy_async();  // cp.async wrote the stage; wgmma reads it
    named_bar_sync(LOCAL, 128);
#if !F8PP_S_FIRST
    refill(u);
#endif

    // S: k_pe in bf16, then the 4 code blocks on the FP8 tensor cores, each folded in with the
    // tokens' block scales as it completes
    const int st = u % F8Cfg::STAGES;
    // addresses opaque to the compiler: descriptors built as issued, not kept live (as wgmma_pp)
    u32 sT = sKV + st * F8Cfg::STAGE_BYTES, q_at = sQ, qpe_at = sQpe;
    asm volatile("" : "+r"(sT), "+r"(q_at), "+r"(qpe_at));
    const float* sc = reinterpret_cast<const float*>(c.smem + F8Cfg::KV_OFF + st * F8Cfg::STAGE_BYTES + F8Cfg::SCALES);
    float s[32], x[32], tmax[4];
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      wgmma_m64n64k16_ss(s, sw128_desc(qpe_at + kk * 32, 16, 1024), sw128_desc(sT + F8Cfg::PE + kk * 32, 16, 1024), kk ? 1 : 0);
#pragma unroll
    for (int blk = 0; blk < 4; ++blk) {
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        wgmma_m64n64k32_e4m3_ss(x, sw128_desc(q_at + blk * 8192 + kk * 32, 16, 1024), sw128_desc(sT + F8Cfg::CODES + blk * 8192 + kk * 32, 16, 1024),
                                kk ? 1 : 0);
      wgmma_commit();
      wgmma_wait<0>();
      fence_acc32(s);
      fence_acc32(x);
      tmax[blk] = fold_block(s, x, sc, blk, c4);
      if (blk < 3) wgmma_fence();
    }

#if F8PP_S_FIRST
    // the other warpgroup's tile u - 1 after this tile's S (three stages: S(u) needs only its
    // own), so this S runs beside the other's softmax; then every thread of this warpgroup has
    // read tile u - 1's state before tile u's is written below
    if (u >= 1) follow(u - 1);
    named_bar_sync(LOCAL, 128);
    refill(u);
#endif
    // softmax (S in units of the row's Q scale, folded into rs), then P' per block into this
    // tile's buffer (free: both P V of tile u - 2 are done) in f8mma's byte order
    const RowStep rstep = softmax_rows64(s, c.w.kv_begin + u * 64, c.lim0, c.lim1, c4, rs0, rs1, m0, m1);
    float ps0 = 0.f, ps1 = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      s[4 * j] = ex2(fmaf(s[4 * j], rs0, -rstep.b0));
      s[4 * j + 1] = ex2(fmaf(s[4 * j + 1], rs0, -rstep.b0));
      s[4 * j + 2] = ex2(fmaf(s[4 * j + 2], rs1, -rstep.b1));
      s[4 * j + 3] = ex2(fmaf(s[4 * j + 3], rs1, -rstep.b1));
      ps0 += s[4 * j] + s[4 * j + 1];
      ps1 += s[4 * j + 2] + s[4 * j + 3];
    }
    l0 = l0 * rstep.al0 + ps0;
    l1 = l1 * rstep.al1 + ps1;
#pragma unroll
    for (int blk = 0; blk < 4; ++blk) {
      const float nk = fmaxf(mk[blk], tmax[blk]);
      if (wt == 0) sratio[blk] = nk > 0.f ? mk[blk] / nk : 1.f;
      const float inv = nk > 0.f ? 256.f / nk : 0.f;
      mk[blk] = nk;
      write_p_block(c.smem + F8Cfg::P_OFF + WG * 16384, s, sc, blk, inv, R0, R1, c4);
    }
    if (c4 == 0) {
      salpha[R0] = rstep.al0;
      salpha[R1] = rstep.al1;
      smax[R0] = m0;
      smax[R1] = m1;
    }
    if (wt == 0) {
#pragma unroll
      for (int k = 0; k < 4; ++k) smk[k] = mk[k];
    }
    fence_proxy_async();  // P' written by st.shared, read by both warpgroups' wgmma
    named_bar_sync(LOCAL, 128);  // the whole warpgroup's state is out: read this thread's columns
    float2 al[8];
    float ra, rb;
    read_factors(al, ra, rb);
    named_bar_arrive(PUB_MINE, 256);  // (after the reads: the other overwrites the state next)
    rescale(al, ra, rb);
    issue_pv(u);
    if (u + 3 < ntiles) named_bar_arrive(FREE_OTHER, 256);  // the other refills this stage with u + 3
  }
  // the last tile, when the other warpgroup owns it
  if (ntiles > 0 && ((ntiles - 1) & 1) != WG) follow(ntiles - 1);
#endif
}

__device__ __forceinline__ void f8pp_decode(const Args& a, unsigned char* smem_raw) {
#ifdef MLA_HAS_WGMMA
  allow_dependent_grids();
  const WorkLoads work_loads = load_work(a);
  const u32 raw = smem_u32(smem_raw);
  unsigned char* smem = smem_raw + (((raw + 1023u) & ~1023u) - raw);
  const u32 sbase = smem_u32(smem);
  float* small = reinterpret_cast<float*>(smem + F8Cfg::SMALL_OFF);
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, c4 = lane & 3;
  const int wg = warp >> 2, wi = warp & 3;
  const int R0 = 16 * wi + g, R1 = R0 + 8;
  const int b = blockIdx.z, row0 = blockIdx.x * 64, rows_total = a.q_len * a.heads;
  const PageMap pm(a, b);
  const int ld_row = (tid & 127) >> 3, ld_unit = tid & 7;
  // each warpgroup's first tile (tile wg) and warpgroup 0's tile 2, looked up before the plan returns
  const TilePages first = tile_pages_of(pm, blockIdx.y * a.chunk + wg * 64, ld_row);
  const TilePages third = tile_pages_of(pm, blockIdx.y * a.chunk + 128, ld_row);
  wait_for_prior_grids();  // the metadata above may be read early; q and the cache only after this
  Work w;
  if (!make_work(a, 64, work_loads, w)) return;
  const int ntiles = w.kv_stop > w.kv_begin ? (w.kv_stop - w.kv_begin + 63) / 64 : 0;
  if (wg < ntiles) copy_f8_stage(sbase + F8Cfg::KV_OFF + wg * F8Cfg::STAGE_BYTES, a.kv, pm, first, w.kv_begin + wg * 64, w.kv_stop, ld_row, ld_unit);
  cp_async_commit();
  if (wg == 0 && ntiles > 2) copy_f8_stage(sbase + F8Cfg::KV_OFF + 2 * F8Cfg::STAGE_BYTES, a.kv, pm, third, w.kv_begin + 128, w.kv_stop, ld_row, ld_unit);
  cp_async_commit();
  // Q -> e4m3 (one scale per row) and k_pe / that scale, as f8mma: 4 threads per row
  quantize_q64(smem, a, b, row0, rows_total, tid >> 2, tid & 3, small + F8PpSmall::ROW_SCALE);
  fence_proxy_async();  // Q written by st.shared, read by wgmma
  __syncthreads();

  float o[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) o[i] = 0.f;
  float l0 = 0.f, l1 = 0.f;
  const F8PpCtx ctx{a, w, pm, smem, sbase, ntiles, row_limit(a, w, R0), row_limit(a, w, R1), R0, R1, c4, wi, lane, ld_row, ld_unit};
  if (wg == 0) f8pp_tiles<0>(ctx, o, l0, l1);
  else f8pp_tiles<1>(ctx, o, l0, l1);
  cp_async_wait<0>();

  // row sums of both warpgroups; the final block factors M_k / 256 (0 without a tile: O is 0)
  float* ssum = small + F8PpSmall::SUM;  // [2][64]
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  if (c4 == 0) {
    ssum[64 * wg + R0] = l0;
    ssum[64 * wg + R1] = l1;
  }
  if (tid < 4) small[F8PpSmall::FIN + tid] = ntiles > 0 ? small[F8PpSmall::MK + tid] * (1.f / 256.f) : 0.f;
  __syncthreads();  // sums and factors out; every P V has left the stages
  // O^T (bf16) staged as [64 rows][STG_STRIDE] in the stages, as f8mma: row tile rt, fragment row
  // g is dim 2g and row g+8 dim 2g+1, so each pair of values along d packs into one word
  unsigned char* stg = smem + F8Cfg::KV_OFF;
#pragma unroll
  for (int rt = 0; rt < 4; ++rt) {
    const float fin = small[F8PpSmall::FIN + 2 * wg + (rt >> 1)];
    const int d = 256 * wg + 64 * rt + 16 * wi + 2 * g;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int h = 8 * j + 2 * c4;
      const float L0 = ssum[h] + ssum[64 + h], L1 = ssum[h + 1] + ssum[64 + h + 1];
      const float f0 = L0 > 0.f ? fin / L0 : 0.f, f1 = L1 > 0.f ? fin / L1 : 0.f;
      *reinterpret_cast<u32*>(stg + h * WgCfg::STG_STRIDE + d * 2) = pack_bf16(o[32 * rt + 4 * j] * f0, o[32 * rt + 4 * j + 2] * f0);
      *reinterpret_cast<u32*>(stg + (h + 1) * WgCfg::STG_STRIDE + d * 2) = pack_bf16(o[32 * rt + 4 * j + 1] * f1, o[32 * rt + 4 * j + 3] * f1);
    }
  }
  __syncthreads();
  store_staged64(a, w, stg, tid, MLA_THREADS);
  // with no tile the sums are 0 and the lse -inf whatever the maxima hold
  if (tid < 64 && w.row0 + tid < w.rows_total) store_lse(a, w, w.row0 + tid, small[F8PpSmall::MAX + tid], ssum[tid] + ssum[64 + tid]);
  split_arrive(a, w, 64);
#else
  asm volatile("trap;");
#endif
}

}  // namespace mla

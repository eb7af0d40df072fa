// The ping-pong wgmma decode kernel (sm_90a), 128 heads: 64 query rows per CTA, 64-token tiles,
// two warpgroups that take turns owning the tiles.
//
// wgmma_r64 runs each tile's S = Q K^T, softmax and P V one after the other through warpgroup 0,
// so the tensor cores idle during the softmax and the next tile's S waits for this tile's P V.
// Here warpgroup w owns the tiles t with t % 2 == w: it loads them (stage w), computes their S and
// softmax, and publishes P, the row factors alpha and the running maxima; both warpgroups then add
// P V for their own 256 value columns, as in wgmma_r64. The aim: while one warpgroup runs a
// softmax, the other's S and both P V products keep the tensor cores busy.
//
// A desk review (not yet measured) says the default order does not get there: a warpgroup adds
// the other's tile u - 1 (which waits for that softmax) before it issues S(u), so per tile the
// chain is still P V + S + softmax, as in wgmma_r64; and PP_S_FIRST, which issues S(u) first,
// frees the other's stage only after its own softmax, so with two 72 KB stages the copy of the
// next tile lands late. Overlap needs a stage freed earlier (smaller sub-tiles, or TMA). Kept for
// the measurement that decides.
//
// P of tile t is written over the rope chunk (chunk 8) of t's own stage, which only S(t) reads:
// the kernel needs no more shared memory than wgmma_r64. The softmax state passes between the
// warpgroups in shared memory, one buffer each for alpha and the maxima (a tile's values are read
// by the other warpgroup before it publishes the next tile). The row sums are kept per warpgroup
// (its own tiles' P, every tile's alpha) and added in the epilogue.
//
// Over an fp8 cache (mla_decode_fp8_wgmma_pp) the owner copies the raw 656-byte entries into its
// stage (Fp8Stage's places) and expands them to the bf16 tile in place before its S, beside the
// other warpgroup's MMAs.
//
// Named barriers (besides 0): LOCAL_w (1 + w, 128 threads): warpgroup w's copies of its tile have
// landed; PUB_w (3 + w, 256): tile t of w is published (w arrives, the other waits); FREE_w (5 + w,
// 256): the other warpgroup finished P V of w's last tile, so stage w may be refilled (the other
// arrives, w waits). Every arrive has exactly one matching wait.
#pragma once
#include "mla_decode_wgmma.cuh"

namespace mla {

#ifndef PP_S_FIRST
#define PP_S_FIRST 0
#endif

// What the tile loop of one warpgroup needs from the prologue.
struct PpCtx {
  const Args& a;
  const Work& w;
  const PageMap& pm;
  unsigned char* smem;
  u32 sQ, sKV;
  int ntiles, lim0, lim1, R0, R1, c4, ld_row, ld_unit;
};

// FP8: warpgroup WG expands its own stage in place (Fp8Stage's raw entries -> the bf16 tile): thread
// wt -> token wt/2, quarters 2 (wt % 2) and 2 (wt % 2) + 1 of each 64-code chunk. Chunk c's codes
// lie in the upper half of chunk c's own bytes, so each chunk is read by the whole warpgroup
// before any of it is written (one chunk at a time: few registers beside O); the scales (in
// chunk 7) are read first.
template <int LOCAL>
__device__ __forceinline__ void expand_own_stage(unsigned char* base, int wt) {
  const int r = wt >> 1, q0 = 2 * (wt & 1);
  const float4 sc = *reinterpret_cast<const float4*>(base + Fp8Stage::SCALES + r * 16);
  const float scales[4] = {sc.x, sc.y, sc.z, sc.w};
#pragma unroll
  for (int ch = 0; ch < 8; ++ch) {
    const uint4 v0 = *reinterpret_cast<const uint4*>(base + Fp8Stage::codes(ch, r) + q0 * 16);
    const uint4 v1 = *reinterpret_cast<const uint4*>(base + Fp8Stage::codes(ch, r) + (q0 + 1) * 16);
    named_bar_sync(LOCAL, 128);
    Fp8Stage::put16(base, r, ch, q0, v0, scales[ch >> 1]);
    Fp8Stage::put16(base, r, ch, q0 + 1, v1, scales[ch >> 1]);
  }
}

// Warpgroup WG's tiles (and the other's P V); leaves its half of O and its row sums. WG is a
// template argument so that the barrier ids and the stage address are immediates. FP8: the
// stages receive raw fp8 entries, which the owner expands to bf16 before its S.
template <int WG, bool FP8>
__device__ __forceinline__ void pp_tiles(const PpCtx& c, TilePages pages, float (&o)[128], float& l0, float& l1) {
  // PP_S_FIRST (a development knob, MLAHOST_KERNEL_DEFINES=-DPP_S_FIRST=1): issue the own tile's S
  // before waiting for the other's tile, and add that tile's P V beside this softmax; the other's
  // stage is then freed only after this warpgroup's softmax
  constexpr bool S_FIRST = PP_S_FIRST != 0;
  constexpr int OTHER = 1 - WG, LOCAL = 1 + WG, PUB_MINE = 3 + WG, PUB_OTHER = 3 + OTHER, FREE_MINE = 5 + WG, FREE_OTHER = 5 + OTHER;
  float* salpha = reinterpret_cast<float*>(c.smem + WgCfg::P_OFF);
  float* smax = salpha + 64;
  const u32 my_stage = c.sKV + WG * WgCfg::TILE_BYTES;
  const int R0 = c.R0, R1 = c.R1, c4 = c.c4, ntiles = c.ntiles;
  float m0 = neg_inf(), m1 = neg_inf();
  const float sl2 = c.a.scale * 1.4426950408889634f;

  auto rescale = [&](float al0, float al1) {  // skipped when no row of the warp changed its maximum
    if (!__any_sync(0xffffffffu, al0 != 1.f || al1 != 1.f)) return;
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      o[4 * j] *= al0;
      o[4 * j + 1] *= al0;
      o[4 * j + 2] *= al1;
      o[4 * j + 3] *= al1;
    }
  };
  // O[:, 256 WG..] += P(t) V(t): P over the rope chunk of t's stage, V read MN-major from it
  auto issue_pv = [&](int t) {
    const u32 st = c.sKV + (t & 1) * WgCfg::TILE_BYTES;
    fence_acc128(o);  // keep the rescale above the wgmma fence
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      wgmma_m64n256k16_ss_tb(o, sw128_desc(st + 8 * 8192 + kk * 32, 16, 1024), sw128_desc(st + (4 * WG) * 8192 + kk * 2048, 8192, 1024), 1);
    wgmma_commit();
  };
  // the other warpgroup's tile t: take its published state, then add its P V (`published`: the
  // caller already waited for the publication)
  auto follow = [&](int t, bool published) {
    if (!published) named_bar_sync(PUB_OTHER, 256);
    wgmma_wait<0>();  // this warpgroup's previous P V has left o
    fence_acc128(o);
    const float al0 = salpha[R0], al1 = salpha[R1];
    m0 = smax[R0];
    m1 = smax[R1];
    l0 *= al0;
    l1 *= al1;
    rescale(al0, al1);
    issue_pv(t);
  };

  for (int u = WG; u < ntiles; u += 2) {
    if (u >= 2) {
      // stage WG is free once both P V of tile u - 2 are done: refill it with tile u (its pages
      // looked up beside the waits)
      pages = tile_pages_of(c.pm, c.w.kv_begin + u * 64, c.ld_row);
      wgmma_wait<0>();
      fence_acc128(o);
      named_bar_sync(FREE_MINE, 256);
      if constexpr (FP8) copy_fp8_tile(my_stage, c.a.kv, c.pm, pages, c.w.kv_begin + u * 64, c.w.kv_stop, true, c.ld_row, c.ld_unit);
      else copy_bf16_tile(my_stage, c.a.kv, c.pm, pages, c.w.kv_begin + u * 64, c.w.kv_stop, true, c.ld_row, c.ld_unit);
      cp_async_commit();
    }
    if (!S_FIRST && u >= 1) {
      follow(u - 1, false);
      wgmma_wait<0>();
      fence_acc128(o);
      if (u + 1 < ntiles) named_bar_arrive(FREE_OTHER, 256);  // the other refills its stage with u + 1
    }
    cp_async_wait<0>();
    if constexpr (FP8) {
      named_bar_sync(LOCAL, 128);  // every thread's copies have landed
      expand_own_stage<LOCAL>(c.smem + WgCfg::KV_OFF + WG * WgCfg::TILE_BYTES, (threadIdx.x & 127));
    }
    fence_proxy_async();  // the stage was written through the generic proxy; wgmma reads via the async proxy
    named_bar_sync(LOCAL, 128);

    // the stage and Q addresses are opaque to the compiler here, so that it builds the 36
    // descriptor pairs as they are issued instead of keeping them all live across the loop
    u32 q_at = c.sQ, k_at = my_stage;
    asm volatile("" : "+r"(q_at), "+r"(k_at));
    float s[32];
    wgmma_fence();
#pragma unroll
    for (int ch = 0; ch < 9; ++ch)
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        wgmma_m64n64k16_ss(s, sw128_desc(q_at + ch * 8192 + kk * 32, 16, 1024), sw128_desc(k_at + ch * 8192 + kk * 32, 16, 1024),
                           (ch | kk) ? 1 : 0);
    wgmma_commit();
    if (S_FIRST && u >= 1) named_bar_sync(PUB_OTHER, 256);  // the other's tile, while S runs
    wgmma_wait<0>();
    fence_acc32(s);
    // (no register of O is touched while a wgmma is in flight: ptxas would serialize them all)
    if (S_FIRST && u >= 1) follow(u - 1, true);  // its P V runs beside this softmax

    const RowStep rstep = softmax_rows64(s, c.w.kv_begin + u * 64, c.lim0, c.lim1, c4, sl2, sl2, m0, m1);
    const float b0 = rstep.b0, b1 = rstep.b1, al0 = rstep.al0, al1 = rstep.al1;
    unsigned char* pgen = c.smem + WgCfg::KV_OFF + WG * WgCfg::TILE_BYTES + 8 * 8192;  // S(u) has read the rope chunk
    // (the P loop and the epilogue as in wgmma_r64, which keeps them inline: shared helpers
    // reorder its SASS)
    float ps0 = 0.f, ps1 = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float p00 = ex2(fmaf(s[4 * j], sl2, -b0)), p01 = ex2(fmaf(s[4 * j + 1], sl2, -b0));
      const float p10 = ex2(fmaf(s[4 * j + 2], sl2, -b1)), p11 = ex2(fmaf(s[4 * j + 3], sl2, -b1));
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
      smax[R0] = m0;
      smax[R1] = m1;
    }
    fence_proxy_async();  // P written by st.shared, read next by both warpgroups' wgmma
    named_bar_arrive(PUB_MINE, 256);
    if (S_FIRST) {  // (the wait unconditional: ptxas does not tie it to the follow above)
      wgmma_wait<0>();
      fence_acc128(o);
      if (u >= 1 && u + 1 < ntiles) named_bar_arrive(FREE_OTHER, 256);
    }
    rescale(al0, al1);
    issue_pv(u);
  }
  // the last tile, when the other warpgroup owns it
  if (ntiles > 0 && ((ntiles - 1) & 1) != WG) follow(ntiles - 1, false);
  wgmma_wait<0>();
  fence_acc128(o);
}

template <bool FP8 = false>
__device__ __forceinline__ void wgmma_pp_decode(const Args& a, unsigned char* smem_raw) {
#ifdef MLA_HAS_WGMMA
  allow_dependent_grids();
  const WorkLoads work_loads = load_work(a);
  const u32 raw = smem_u32(smem_raw);
  unsigned char* smem = smem_raw + (((raw + 1023u) & ~1023u) - raw);
  const u32 sbase = smem_u32(smem);
  const u32 sQ = sbase + WgCfg::Q_OFF, sKV = sbase + WgCfg::KV_OFF;
  // the row maxima (written by the tile loop) and each warpgroup's row sums; P_OFF is free (P
  // lives in the stages)
  const float* smax = reinterpret_cast<const float*>(smem + WgCfg::P_OFF) + 64;
  float* ssum = reinterpret_cast<float*>(smem + WgCfg::P_OFF) + 128;  // [2][64]

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, c4 = lane & 3;
  const int wg = warp >> 2, wi = warp & 3;
  const int R0 = 16 * wi + g, R1 = R0 + 8;
  const int b = blockIdx.z, row0 = blockIdx.x * 64, rows_total = a.q_len * a.heads;
  const PageMap pm(a, b);
  const int wt = tid & 127, ld_row = wt >> 3, ld_unit = wt & 7;

  // each warpgroup's first tile (tile wg) is looked up before the plan returns, as in wgmma_r64
  const TilePages pages = tile_pages_of(pm, blockIdx.y * a.chunk + wg * 64, ld_row);
  wait_for_prior_grids();  // the metadata above may be read early; q and the cache only after this
  load_q64(sQ, a, b, row0, rows_total, tid);
  cp_async_commit();  // group: this thread's part of Q
  Work w;
  if (!make_work(a, 64, work_loads, w)) {
    cp_async_wait<0>();
    return;
  }
  const int ntiles = w.kv_stop > w.kv_begin ? (w.kv_stop - w.kv_begin + 63) / 64 : 0;
  if (wg < ntiles) {
    if constexpr (FP8) copy_fp8_tile(sKV + wg * WgCfg::TILE_BYTES, a.kv, pm, pages, w.kv_begin + wg * 64, w.kv_stop, true, ld_row, ld_unit);
    else copy_bf16_tile(sKV + wg * WgCfg::TILE_BYTES, a.kv, pm, pages, w.kv_begin + wg * 64, w.kv_stop, true, ld_row, ld_unit);
  }
  cp_async_commit();  // group: the first own tile
  cp_async_wait<1>();
  fence_proxy_async();
  __syncthreads();  // Q is whole for both warpgroups' S

  float o[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) o[i] = 0.f;
  float l0 = 0.f, l1 = 0.f;
  const PpCtx ctx{a, w, pm, smem, sQ, sKV, ntiles, row_limit(a, w, R0), row_limit(a, w, R1), R0, R1, c4, ld_row, ld_unit};
  if (wg == 0) pp_tiles<0, FP8>(ctx, pages, o, l0, l1);
  else pp_tiles<1, FP8>(ctx, pages, o, l0, l1);
  cp_async_wait<0>();

  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  if (c4 == 0) {
    ssum[64 * wg + R0] = l0;
    ssum[64 * wg + R1] = l1;
  }
  __syncthreads();  // both row sums stored; every P V has left the stages
  const float L0 = ssum[R0] + ssum[64 + R0], L1 = ssum[R1] + ssum[64 + R1];
  const float inv0 = L0 > 0.f ? 1.f / L0 : 0.f, inv1 = L1 > 0.f ? 1.f / L1 : 0.f;
  // normalised O staged in the stages as bf16 and stored in whole lines, as in wgmma_r64
  unsigned char* stg = smem + WgCfg::KV_OFF;
#pragma unroll
  for (int j = 0; j < 32; ++j) {
    const int d = 256 * wg + 8 * j + 2 * c4;
    *reinterpret_cast<u32*>(stg + R0 * WgCfg::STG_STRIDE + d * 2) = pack_bf16(o[4 * j] * inv0, o[4 * j + 1] * inv0);
    *reinterpret_cast<u32*>(stg + R1 * WgCfg::STG_STRIDE + d * 2) = pack_bf16(o[4 * j + 2] * inv1, o[4 * j + 3] * inv1);
  }
  __syncthreads();
  const int nrows = imin(64, w.rows_total - w.row0);
  u16* dst = w.nsplit == 1 ? a.out + ((i64)w.b * w.rows_total + w.row0) * MLA_DV
                           : a.part_o + ((i64)w.slot * w.rows_total + w.row0) * MLA_DV;
  for (int v = tid; v < nrows * 64; v += MLA_THREADS) {
    const int rl = v >> 6, d = (v & 63) * 8;
    *reinterpret_cast<uint4*>(dst + (i64)rl * MLA_DV + d) = *reinterpret_cast<const uint4*>(stg + rl * WgCfg::STG_STRIDE + d * 2);
  }
  // with no tile, the sums are 0 and the lse -inf whatever the maxima hold
  if (tid < 64 && w.row0 + tid < w.rows_total) store_lse(a, w, w.row0 + tid, smax[tid], ssum[tid] + ssum[64 + tid]);
  split_arrive(a, w, 64);
#else
  asm volatile("trap;");
#endif
}

}  // namespace mla

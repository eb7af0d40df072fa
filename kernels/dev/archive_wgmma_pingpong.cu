// ARCHIVE (not compiled): ping-pong variant of the wgmma decode kernel, measured 2026 on an H200:
// correct, but ~30% slower than mla_decode_wgmma_r64 (268 vs 203 us at H=128, B=64, 4K) because with
// two 72 KB stages the owner can reload a stage only after both warpgroups finished PV on it, which
// exposes one load latency per tile. Kept as a starting point for a 3-stage / TMA version; it
// depends on the helpers, WgCfg and the generated wgmma wrappers of kernels/cuda/mla_decode.cu.
// Entry point used then:
//   extern "C" __global__ void __launch_bounds__(256, 1) mla_decode_wgmma_pp_r64(MLA_DECODE_ARGS)
//   { extern __shared__ __align__(16) unsigned char smem[]; MLA_MAKE_ARGS; mla::wgmma_pp_decode(a, smem); }

// ------------------------------------------------------------------------------------------------
// ping-pong wgmma kernel (sm_90a): same layouts as wgmma_decode, but tiles alternate between the
// two warpgroups: WG (t & 1) loads tile t into stage t & 1, computes S(t) and its softmax, and
// writes P(t) over the k_pe chunk of that stage; both WGs then add P(t) V(t) to their latent half.
// While one WG runs its softmax the other's QK is on the tensor cores. Named barriers:
//   1+w (128): inside WG w;  3+p (256): P/m/alpha of a parity-p tile ready (owner arrives);
//   5+p (256): the non-owner finished PV of the parity-p tile, so its stage may be reloaded.
// ------------------------------------------------------------------------------------------------
__device__ __forceinline__ void named_bar_arrive(int id, int n) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}

__device__ __forceinline__ void wgmma_pp_decode(const Args& a, unsigned char* smem_raw) {
#ifdef MLA_HAS_WGMMA
  Work w;
  if (!make_work(a, 64, w)) return;
  const u32 raw = smem_u32(smem_raw);
  unsigned char* smem = smem_raw + (((raw + 1023u) & ~1023u) - raw);
  const u32 sbase = smem_u32(smem);
  const u32 sQ = sbase + WgCfg::Q_OFF, sKV = sbase + WgCfg::KV_OFF;
  float* sm_ = reinterpret_cast<float*>(smem + WgCfg::P_OFF);  // [2 slots][64] running max after tile
  float* sa_ = sm_ + 128;                                      // [2 slots][64] alpha of tile
  float* sl_ = sa_ + 128;                                      // [2 WGs][64] partial row sums

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, wtid = tid & 127;
  const int g = lane >> 2, c4 = lane & 3;
  const int wg = warp >> 2, wi = warp & 3;
  const int R0 = 16 * wi + g, R1 = R0 + 8;
  const int ntiles = w.kv_stop > w.kv_begin ? (w.kv_stop - w.kv_begin + 63) / 64 : 0;

  // WG-local loader: token wtid/2, 16-byte chunks (wtid&1) + 2k (k < 36)
  const PageMap pm(a, w.b);
  auto tile_src = [&](int t) -> const u16* {
    const int pos = w.kv_begin + t * 64 + (wtid >> 1);
    return (t < ntiles && pos < w.kv_stop) ? a.kv + pm.slot(pm.page(pos), pos) * MLA_D : nullptr;
  };
  auto load_tile = [&](int t, const u16* src) {
    const bool valid = src != nullptr;
    if (!valid) src = a.kv;
    const u32 dst = sKV + (t & 1) * WgCfg::TILE_BYTES;
#pragma unroll
    for (int k = 0; k < 36; ++k) {
      const int c = (wtid & 1) + 2 * k;
      cp_async_16(dst + sw128_off(wtid >> 1, c), src + c * 8, valid);
    }
  };
  {  // Q by all threads: row tid/4, chunks tid%4 + 4k
    const int qr = tid >> 2, qs = tid & 3;
    const int r = w.row0 + qr;
    const bool ok = r < w.rows_total;
    const u16* src = ok ? a.q + ((i64)w.b * w.rows_total + r) * MLA_D : a.q;
#pragma unroll
    for (int k = 0; k < 18; ++k) {
      const int c = qs + 4 * k;
      cp_async_16(sQ + sw128_off(qr, c), src + c * 8, ok);
    }
  }
  if (wg < ntiles) load_tile(wg, tile_src(wg));
  cp_async_commit();
  cp_async_wait<0>();
  fence_proxy_async();
  __syncthreads();
  const u16* src_next = tile_src(wg + 2);

  float o[128];
#pragma unroll
  for (int i = 0; i < 128; ++i) o[i] = 0.f;
  float lw0 = 0.f, lw1 = 0.f;
  const int lim0 = row_limit(a, w, R0), lim1 = row_limit(a, w, R1);
  const float sl2 = a.scale * 1.4426950408889634f;

  // O += P(t) V(t) for this WG's latent half; P in the k_pe chunk of stage t&1
  auto issue_pv = [&](int t) {
    const u32 st = sKV + (t & 1) * WgCfg::TILE_BYTES;
    fence_acc128(o);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      wgmma_m64n256k16_ss_tb(o, sw128_desc(st + 8 * 8192 + kk * 32, 16, 1024),
                             sw128_desc(st + (4 * wg) * 8192 + kk * 2048, 8192, 1024), 1);
    wgmma_commit();
  };
  auto rescale = [&](float al0, float al1) {
#pragma unroll
    for (int j = 0; j < 32; ++j) {
      o[4 * j] *= al0;
      o[4 * j + 1] *= al0;
      o[4 * j + 2] *= al1;
      o[4 * j + 3] *= al1;
    }
  };
  // PV of the other WG's tile t once its P is ready (my QK, if any, ran during the wait)
  auto pv_other = [&](int t) {
    named_bar_sync(3 + (t & 1), 256);
    wgmma_wait<0>();
    fence_acc128(o);
    const float al0 = sa_[(t & 1) * 64 + R0], al1 = sa_[(t & 1) * 64 + R1];
    lw0 *= al0;
    lw1 *= al1;
    rescale(al0, al1);
    issue_pv(t);
  };

  for (int u = wg; u < ntiles; u += 2) {
    const int st = u & 1;  // == wg
    const u32 sK = sKV + st * WgCfg::TILE_BYTES;
    if (u >= 2) {
      wgmma_wait<0>();  // my PV(u-2) done
      fence_acc128(o);
      named_bar_sync(5 + st, 256);  // the other WG's PV(u-2) done: stage free
      load_tile(u, src_next);
      cp_async_commit();
      src_next = tile_src(u + 2);
      cp_async_wait<0>();
      fence_proxy_async();
      named_bar_sync(1 + wg, 128);
    }
    // S(u) = Q K(u)^T
    float s[32];
    wgmma_fence();
#pragma unroll
    for (int c = 0; c < 9; ++c)
#pragma unroll
      for (int kk = 0; kk < 4; ++kk)
        wgmma_m64n64k16_ss(s, sw128_desc(sQ + c * 8192 + kk * 32, 16, 1024),
                           sw128_desc(sK + c * 8192 + kk * 32, 16, 1024), (c | kk) ? 1 : 0);
    wgmma_commit();
    if (u >= 1) {
      pv_other(u - 1);  // also completes S(u); PV(u-1) runs during the softmax below
    } else {
      wgmma_wait<0>();
    }
    fence_acc32(s);

    // softmax(u) against the running max after tile u-1
    const float mp0 = (u >= 1) ? sm_[((u - 1) & 1) * 64 + R0] : neg_inf();
    const float mp1 = (u >= 1) ? sm_[((u - 1) & 1) * 64 + R1] : neg_inf();
    const int pos0 = w.kv_begin + u * 64;
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
    const float n0 = fmaxf(mp0, mx0), n1 = fmaxf(mp1, mx1);
    const float b0 = (n0 == neg_inf()) ? 0.f : n0, b1 = (n1 == neg_inf()) ? 0.f : n1;
    const float al0 = ex2(mp0 - b0), al1 = ex2(mp1 - b1);
    unsigned char* pg = smem + WgCfg::KV_OFF + st * WgCfg::TILE_BYTES + 8 * 8192;
    float ps0 = 0.f, ps1 = 0.f;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const float p00 = ex2(s[4 * j] - b0), p01 = ex2(s[4 * j + 1] - b0);
      const float p10 = ex2(s[4 * j + 2] - b1), p11 = ex2(s[4 * j + 3] - b1);
      ps0 += p00 + p01;
      ps1 += p10 + p11;
      *reinterpret_cast<u32*>(pg + R0 * 128 + ((j ^ (R0 & 7)) << 4) + c4 * 4) = pack_bf16(p00, p01);
      *reinterpret_cast<u32*>(pg + R1 * 128 + ((j ^ (R1 & 7)) << 4) + c4 * 4) = pack_bf16(p10, p11);
    }
    lw0 = lw0 * al0 + ps0;
    lw1 = lw1 * al1 + ps1;
    if (c4 == 0) {
      sm_[st * 64 + R0] = n0;
      sm_[st * 64 + R1] = n1;
      sa_[st * 64 + R0] = al0;
      sa_[st * 64 + R1] = al1;
    }
    fence_proxy_async();
    named_bar_sync(1 + wg, 128);      // my whole P(u) written
    named_bar_arrive(3 + st, 256);    // P(u), m(u), alpha(u) ready for the other WG

    wgmma_wait<0>();  // PV(u-1) done
    fence_acc128(o);
    if (u >= 1 && u + 1 < ntiles) named_bar_arrive(5 + ((u - 1) & 1), 256);  // stage of u-1 free
    rescale(al0, al1);
    issue_pv(u);
  }
  if (ntiles >= 1 && ((ntiles - 1) & 1) != wg) pv_other(ntiles - 1);
  wgmma_wait<0>();
  fence_acc128(o);

  lw0 += __shfl_xor_sync(0xffffffffu, lw0, 1);
  lw0 += __shfl_xor_sync(0xffffffffu, lw0, 2);
  lw1 += __shfl_xor_sync(0xffffffffu, lw1, 1);
  lw1 += __shfl_xor_sync(0xffffffffu, lw1, 2);
  if (c4 == 0) {
    sl_[wg * 64 + R0] = lw0;
    sl_[wg * 64 + R1] = lw1;
  }
  __syncthreads();
  const int lslot = ((ntiles - 1) & 1) * 64;
  const float L0 = sl_[R0] + sl_[64 + R0], L1 = sl_[R1] + sl_[64 + R1];
  const float inv0 = L0 > 0.f ? 1.f / L0 : 0.f, inv1 = L1 > 0.f ? 1.f / L1 : 0.f;
  const int r0 = w.row0 + R0, r1 = w.row0 + R1;
#pragma unroll
  for (int j = 0; j < 32; ++j) {
    const int d = 256 * wg + 8 * j + 2 * c4;
    if (r0 < w.rows_total) store_o2(a, w, r0, d, o[4 * j] * inv0, o[4 * j + 1] * inv0);
    if (r1 < w.rows_total) store_o2(a, w, r1, d, o[4 * j + 2] * inv1, o[4 * j + 3] * inv1);
  }
  if (tid < 64 && w.row0 + tid < w.rows_total) {
    const float m = ntiles >= 1 ? sm_[lslot + tid] : neg_inf();
    store_lse(a, w, w.row0 + tid, m, sl_[tid] + sl_[64 + tid]);
  }
#else
  asm volatile("trap;");
#endif
}


// Merging split-KV partials into the final output and LSE.
#pragma once
#include "mla_decode_common.cuh"
#include "util.cuh"  // block_sum, block_max

namespace mla {

// ------------------------------------------------------------------------------------------------
// combine: grid (q_len*H rows, B, Z slices of 512/Z latent dims; Z in {1, 2, 4, 8}), 256 threads.
// Every CTA computes the split weights of its row in shared memory. The threads form 2Z groups of
// 128/Z lanes (4 dims each); group g sums splits g, g+2Z, ...; a group's first 8 partials are
// loaded before the weights are known, so up to 16Z splits cost one round trip. The host picks Z
// from the split count (combine_slices), so that few splits do not leave most groups idle. The
// group sums are added in shared memory. Partials are bf16 (normalised, so within [-max|v|, max|v|])
// and accumulate in f32.
// ------------------------------------------------------------------------------------------------
#define MLA_MAX_SPLITS 1024
__device__ __forceinline__ int ld_acquire_gpu(const int* p) {
  int v;
  asm volatile("ld.acquire.gpu.global.b32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// sync (optional, see split_arrive below): start on the row group's arrivals instead of on the
// decode grid's end; the grid still ends only after the decode grid (the wait at the end).
__device__ __forceinline__ void combine(const u16* __restrict__ part_o, const float* __restrict__ part_lse,
                                        const int* __restrict__ split_offsets, u16* __restrict__ out,
                                        float* __restrict__ lse, int rows_total, int* __restrict__ sync) {
  constexpr int PREFETCH = 8;
  __shared__ float sw[MLA_MAX_SPLITS];
  __shared__ float red[32];
  __shared__ float4 acc_s[256];
  const int r = blockIdx.x, b = blockIdx.y, tid = threadIdx.x;
  const int lanes = 128 / gridDim.z, groups = 256 / lanes, grp = tid / lanes, sub = tid % lanes;
  allow_dependent_grids();
  const int s0 = split_offsets[b], ns = split_offsets[b + 1] - s0;
  if (ns <= 1) {  // written directly by the decode kernel; still end after the decode grid (the
    wait_for_prior_grids();  // kernels after the combine rely on its end for the decode grid's)
    return;
  }
  int* words = nullptr;    // this row group's arrivals and merges done
  if (sync != nullptr) {
    words = sync + 2 * ((i64)b * ((rows_total + 15) / 16) + r / 16);
    if (tid == 0)
      while (ld_acquire_gpu(words) < ns) {
      }
    __syncthreads();
  } else {
    wait_for_prior_grids();  // the partials below
  }
  // the grid may end only after the decode grid, so that what follows sees the decode's direct
  // outputs (single-split sequences) too
  auto finish = [&]() {
    if (words != nullptr) wait_for_prior_grids();
  };
  const int d = (MLA_DV / gridDim.z) * blockIdx.z + 4 * sub;
  const u16* po = part_o + ((i64)s0 * rows_total + r) * MLA_DV + d;
  const i64 sstride = (i64)rows_total * MLA_DV;
  auto load_part = [&](int s) {  // 4 bf16 -> f32
    const uint2 v = __ldcg(reinterpret_cast<const uint2*>(po + s * sstride));  // L2: written by a grid that may still run
    return make_float4(__uint_as_float(v.x << 16), __uint_as_float(v.x & 0xffff0000u), __uint_as_float(v.y << 16),
                       __uint_as_float(v.y & 0xffff0000u));
  };
  float4 pre[PREFETCH];  // partials of splits grp, grp + groups, ...: in flight during the lse phase
#pragma unroll
  for (int k = 0; k < PREFETCH; ++k)
    pre[k] = (grp + groups * k < ns) ? load_part(grp + groups * k) : make_float4(0.f, 0.f, 0.f, 0.f);
  // The last of the group's combine CTAs to pass the arrivals resets both words for the next
  // launch (whose decode CTAs arrive only after this grid has ended). Counted here, while the
  // partials are in flight, so that the atomic's round trip is not on the way to the grid's end.
  if (words != nullptr && tid == 0) {
    const int members = imin(16, rows_total - (r / 16) * 16) * gridDim.z;
    if (atomicAdd(words + 1, 1) == members - 1) words[0] = 0, words[1] = 0;
  }
  float mx = neg_inf();
  for (int s = tid; s < ns; s += 256) {
    const float v = __ldcg(part_lse + (i64)(s0 + s) * rows_total + r);
    sw[s] = v;
    mx = fmaxf(mx, v);
  }
  mx = util::block_max(mx, red);
  const i64 orow = ((i64)b * rows_total + r) * MLA_DV;
  if (mx == neg_inf()) {
    if (grp == 0) *reinterpret_cast<uint2*>(out + orow + d) = make_uint2(0u, 0u);
    if (tid == 0 && blockIdx.z == 0) lse[(i64)b * rows_total + r] = neg_inf();
    finish();
    return;
  }
  float ws = 0.f;
  for (int s = tid; s < ns; s += 256) {
    const float wt = ex2((sw[s] - mx) * 1.4426950408889634f);  // 0 for an empty split (-inf)
    sw[s] = wt;
    ws += wt;
  }
  ws = util::block_sum(ws, red);  // its barriers also publish sw[]
  float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
  for (int k = 0; k < PREFETCH; ++k) {
    const float wt = (grp + groups * k < ns) ? sw[grp + groups * k] : 0.f;
    acc.x += wt * pre[k].x;
    acc.y += wt * pre[k].y;
    acc.z += wt * pre[k].z;
    acc.w += wt * pre[k].w;
  }
#pragma unroll 4
  for (int s = grp + groups * PREFETCH; s < ns; s += groups) {
    const float wt = sw[s];
    const float4 v = load_part(s);
    acc.x += wt * v.x;
    acc.y += wt * v.y;
    acc.z += wt * v.z;
    acc.w += wt * v.w;
  }
  acc_s[tid] = acc;
  __syncthreads();
  if (tid < lanes) {
    for (int k = 1; k < groups; ++k) {
      const float4 v = acc_s[k * lanes + tid];
      acc.x += v.x;
      acc.y += v.y;
      acc.z += v.z;
      acc.w += v.w;
    }
    const float inv = 1.f / ws;
    *reinterpret_cast<uint2*>(out + orow + d) =
        make_uint2(pack_bf16(acc.x * inv, acc.y * inv), pack_bf16(acc.z * inv, acc.w * inv));
  }
  if (tid == 0 && blockIdx.z == 0) lse[(i64)b * rows_total + r] = mx + lg2(ws) * 0.6931471805599453f;
  finish();
}


// ------------------------------------------------------------------------------------------------
// Split arrivals (the wgmma kernels, when the host passes a.sync): a split CTA counts itself in
// the arrival word of every 16-row group it covers once its partials are stored, so the combine
// can start merging a group as soon as its last split arrives, instead of when the whole decode
// grid has ended and its writes are flushed (griddepcontrol.wait).
// sync: [B][16-row groups][2] ints (arrivals, merges done), zero before first use; the combine
// leaves them zero again (the last of a group's combine CTAs resets them).
// ------------------------------------------------------------------------------------------------
__device__ __forceinline__ void split_arrive(const Args& a, const Work& w, int rows_per_cta) {
  if (a.sync == nullptr || w.nsplit <= 1) return;
  // every thread's partial stores precede the barrier; the release by the counting threads then
  // makes them visible GPU-wide with the count (a fence per thread before the barrier instead:
  // 16 h 1x4K 7.3 us against 6.9)
  __syncthreads();
  const int groups = (imin(rows_per_cta, w.rows_total - w.row0) + 15) / 16;
  if ((int)threadIdx.x < groups) {
    const int g = w.row0 / 16 + threadIdx.x;
    int* word = a.sync + 2 * ((i64)w.b * ((w.rows_total + 15) / 16) + g);
    asm volatile("red.release.gpu.global.add.s32 [%0], 1;" ::"l"(word) : "memory");
  }
}

}  // namespace mla

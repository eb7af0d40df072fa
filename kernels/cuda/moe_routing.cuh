// moe_routing.cuh — the MoE routing and dispatch steps as device functions, so that moe.cu's
// kernels (moe_route, moe_align, and the fused small-batch router moe_route_small) share one
// implementation of each.
//
//  route_token  one warp: a token's experts and weights from its router logits, exactly as the
//               CPU engine chooses them (host/engine/src/cpu/moe.rs): method 0 greedy,
//               1 group_limited_greedy (softmax), 2 noaux_tc (sigmoid + correction bias for the
//               choice). Ties go to the lower index.
//  align_pairs  one CTA (any size): pairs p = t*k + j sorted by expert (positions within an
//               expert in arrival order), expert offsets, and the GEMM's tile list.
#pragma once
#include "util.cuh"

#define ROUTE_MAX_E 1024

// Best (value desc, index asc) among entries not yet taken; all lanes get the answer.
__device__ __forceinline__ int warp_argmax(const float* v, const bool* taken, int n) {
  float best = 0.f;
  int bi = -1;
  for (int i = threadIdx.x & 31; i < n; i += 32) {
    if (taken[i]) continue;
    if (bi < 0 || v[i] > best) { best = v[i]; bi = i; }
  }
  for (int o = 16; o > 0; o >>= 1) {
    float ob = __shfl_xor_sync(0xffffffffu, best, o);
    int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (oi >= 0 && (bi < 0 || ob > best || (ob == best && oi < bi))) { best = ob; bi = oi; }
  }
  return bi;
}

// One warp's shared scratch for route_token: n_exp entries of each array, 64 of the group ones.
struct RouteScratch {
  float* scores;
  float* choice;
  bool* taken;
  float* gscore;
  bool* gtaken;
  bool* gkeep;
  int* chosen;
};

struct RouteArgs {
  const float* bias;
  int n_exp, k, n_group, topk_group, method, norm_topk;
  float scaling;
};

// Token t's logits `l` (n_exp f32) to topk_ids / topk_w [t, k]. Called by all 32 lanes of a warp.
__device__ __forceinline__ void route_token(const float* l, int t, const RouteArgs& p, RouteScratch s, int* __restrict__ topk_ids,
                                            float* __restrict__ topk_w) {
  const int lane = threadIdx.x & 31, n_exp = p.n_exp, k = p.k, method = p.method;
  if (method == 2) {
    for (int i = lane; i < n_exp; i += 32) {
      float v = 1.f / (1.f + expf(-l[i]));
      s.scores[i] = v;
      s.choice[i] = p.bias ? v + p.bias[i] : v;
    }
  } else {
    float m = util::neg_inf();
    for (int i = lane; i < n_exp; i += 32) m = fmaxf(m, l[i]);
    m = util::warp_max(m);
    float sum = 0.f;
    for (int i = lane; i < n_exp; i += 32) sum += expf(l[i] - m);
    sum = util::warp_sum(sum);
    for (int i = lane; i < n_exp; i += 32) {
      float v = expf(l[i] - m) / sum;
      s.scores[i] = v;
      s.choice[i] = v;
    }
  }
  for (int i = lane; i < n_exp; i += 32) s.taken[i] = false;
  __syncwarp();
  int per_group = n_exp / p.n_group;
  if (method == 1 || method == 2) {
    // group scores: best single (1) or sum of the best two (2)
    for (int g = lane; g < p.n_group; g += 32) {
      float b1 = util::neg_inf(), b2 = util::neg_inf();
      for (int i = g * per_group; i < (g + 1) * per_group; i++) {
        float v = s.choice[i];
        if (v > b1) { b2 = b1; b1 = v; } else if (v > b2) { b2 = v; }
      }
      s.gscore[g] = method == 1 ? b1 : (per_group >= 2 ? b1 + b2 : b1);
      s.gtaken[g] = false;
      s.gkeep[g] = false;
    }
    __syncwarp();
    for (int r = 0; r < p.topk_group; r++) {
      int g = warp_argmax(s.gscore, s.gtaken, p.n_group);
      if (lane == 0) { s.gtaken[g] = true; s.gkeep[g] = true; }
      __syncwarp();
    }
    float fill = method == 1 ? 0.f : util::neg_inf();
    for (int i = lane; i < n_exp; i += 32)
      if (!s.gkeep[i / per_group]) s.choice[i] = fill;
    __syncwarp();
  }
  for (int r = 0; r < k; r++) {
    int e = warp_argmax(s.choice, s.taken, n_exp);
    if (lane == 0) { s.taken[e] = true; s.chosen[r] = e; }
    __syncwarp();
  }
  if (lane == 0) {
    float w[64], sum = 0.f;
    for (int r = 0; r < k; r++) {
      w[r] = method == 2 ? s.scores[s.chosen[r]] : s.choice[s.chosen[r]];
      sum += w[r];
    }
    for (int r = 0; r < k; r++) {
      float v = w[r];
      if (method == 2) {
        if (p.norm_topk) v /= sum + 1e-20f;
        v *= p.scaling;
      } else if (k > 1 && p.norm_topk) {
        v /= sum + 1e-20f;
      } else {
        v *= p.scaling;
      }
      topk_ids[(i64)t * k + r] = s.chosen[r];
      topk_w[(i64)t * k + r] = v;
    }
  }
  __syncwarp();
}

// Under expert parallelism a rank holds experts [e_first, e_first + e_local) only: tiles are made
// for those (their expert index local, as the weights are stacked) and the other pairs get
// pair_pos -1, which moe_combine skips (the ranks' partial sums are added afterwards). `counts`
// and `cursor`: n_exp ints of shared memory each. Every thread of the CTA calls it.
__device__ __forceinline__ void align_pairs(const int* __restrict__ topk_ids, int pairs, int n_exp, int* __restrict__ expert_offsets,
                                            int* __restrict__ sorted_pairs, int* __restrict__ pair_pos, int* __restrict__ tiles,
                                            int* __restrict__ num_tiles, int tile_rows, int e_first, int e_local, int* counts, int* cursor) {
  for (int e = threadIdx.x; e < n_exp; e += blockDim.x) counts[e] = 0;
  __syncthreads();
  for (int p = threadIdx.x; p < pairs; p += blockDim.x) atomicAdd(&counts[topk_ids[p]], 1);
  __syncthreads();
  if (threadIdx.x == 0) {
    int off = 0, nt = 0;
    for (int e = 0; e < n_exp; e++) {
      expert_offsets[e] = off;
      cursor[e] = off;
      bool local = e >= e_first && e < e_first + e_local;
      for (int s = 0; local && s < counts[e]; s += tile_rows) {
        tiles[3 * nt] = e - e_first;
        tiles[3 * nt + 1] = off + s;
        tiles[3 * nt + 2] = min(tile_rows, counts[e] - s);
        nt++;
      }
      off += counts[e];
    }
    expert_offsets[n_exp] = off;
    *num_tiles = nt;
  }
  __syncthreads();
  for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
    int e = topk_ids[p];
    int pos = atomicAdd(&cursor[e], 1);
    sorted_pairs[pos] = p;
    pair_pos[p] = (e >= e_first && e < e_first + e_local) ? pos : -1;
  }
}

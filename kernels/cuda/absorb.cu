// absorb.cu — the absorbed attention's per-head projections for a few tokens (decode), each one
// launch that reads its weights once, in place of cuBLAS's batched GEMMs (and, for the query, the
// separate rope launch):
//
//  absorb_query  out[t, h, :kv_lora] = q[t, h, :nope] · W_UK[h]   (W_UK[h] = kv_b rows
//                h*(nope+vd) .. +nope, each kv_lora wide: a K x N matrix), and the query's rope
//                part rotated into out[t, h, kv_lora ..] as rope.cu's rope_query does it. With
//                `cache` set, an extra row of CTAs writes the tokens' latents into the cache as
//                latent_cache_write does (cache_write.cuh): one launch fewer a layer.
//  absorb_value  out[t, h, :vd] = o[t, h, :kv_lora] · W_UV[h]^T   (W_UV[h] = kv_b rows
//                h*(nope+vd) + nope .. +vd: an N x K matrix).
//
// Why not mma: at <= 16 tokens the work is 2 x 16 x 128 x 512 MACs a head, and what costs is
// reading W once over many SMs with the whole slice in flight; f32 FMAs on the CUDA cores keep
// each weight layout's natural coalesced reads (W_UK's rows are output columns, W_UV's rows are
// dot products). f32 accumulation, bf16 out, as cuBLAS's bf16 GEMM with f32 compute.
//
// Both: at most ABSORB_TOKENS tokens, 128 threads; bf16 in and out.
#include "cache_write.cuh"

#define ABSORB_TOKENS 16
#define AQ_COLS 64      // absorb_query: output columns per CTA (16 threads x 4 columns)
#define AQ_KGROUPS 8    // its k rows interleaved over 8 thread groups, summed in order at the end
#define AQ_MAX_NOPE 128
#define AV_COLS 16      // absorb_value: output columns per CTA (4 warps x 4)
#define AV_MAX_K 512    // W_UV's inner width (kv_lora): two 16-byte loads a lane per row

// Grid (heads, kv_lora / AQ_COLS, + 1 when writing the cache: `cache` not null); rope and its pair
// layout as rope_query's; the cache write's arguments as latent_cache_write's.
extern "C" __global__ void __launch_bounds__(128) absorb_query(const u16* __restrict__ q, const u16* __restrict__ kv_b, u16* __restrict__ out,
                                                                const int* __restrict__ pos, const float* __restrict__ inv_freq,
                                                                float attn_factor, int tokens, int heads, int nope, int vd, int kv_lora,
                                                                int rope, int interleaved, const float* __restrict__ kv,
                                                                const float* __restrict__ norm_w, const i64* __restrict__ slots,
                                                                unsigned char* __restrict__ cache, float eps, int fp8) {
  // with a cache to write, row 0 of the grid writes it (dispatched first, so that it overlaps
  // the projection's CTAs) and the column tiles are rows 1 ..
  const int col_tiles = kv_lora / AQ_COLS, tile = (int)blockIdx.y - (cache != nullptr ? 1 : 0);
  if (tile >= 0 && (int)threadIdx.x < nope)  // this CTA's 64 columns of W_UK's rows (util::prefetch_weights_l2)
    util::prefetch_weights_l2(kv_b + ((i64)blockIdx.x * (nope + vd) + threadIdx.x) * kv_lora + tile * AQ_COLS, AQ_COLS * 2);
  util::await_prior_kernels();
  if (tile < 0) {  // the tokens' latent cache writes
    for (int t = blockIdx.x; t < tokens; t += gridDim.x)
      write_latent(t, kv, norm_w, pos, slots, inv_freq, attn_factor, cache, kv_lora, rope, interleaved, eps, fp8);
    return;
  }
  __shared__ float qs[ABSORB_TOKENS][AQ_MAX_NOPE];
  __shared__ float red[AQ_KGROUPS][8][AQ_COLS];
  const int h = blockIdx.x, n0 = tile * AQ_COLS, tid = threadIdx.x;
  const int qk = nope + rope, d = kv_lora + rope;
  // thread (kg, cq): columns n0 + 4 cq .. + 4 of W_UK's rows kg, kg + 8, ... (8-byte loads; a
  // half-warp reads one row's 128 bytes): the whole slice requested first, in one round trip
  const int cq = tid & 15, kg = tid >> 4;
  const u16* w = kv_b + (i64)h * (nope + vd) * kv_lora + n0 + cq * 4;
  constexpr int ROWS = AQ_MAX_NOPE / AQ_KGROUPS;
  uint2 wv[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; r++) {
    const int kk = kg + r * AQ_KGROUPS;
    wv[r] = kk < nope ? __ldg(reinterpret_cast<const uint2*>(w + (i64)kk * kv_lora)) : make_uint2(0u, 0u);
  }
  // the tokens' q_nope, every load in flight before the first store
  constexpr int QV = ABSORB_TOKENS * AQ_MAX_NOPE / 128;
  u16 qv[QV];
#pragma unroll
  for (int u = 0; u < QV; u++) {
    const int i = tid + u * 128, t = i / nope, kk = i - t * nope;
    qv[u] = t < tokens ? q[((i64)t * heads + h) * qk + kk] : (u16)0;
  }
#pragma unroll
  for (int u = 0; u < QV; u++) {
    const int i = tid + u * 128, t = i / nope, kk = i - t * nope;
    if (t < tokens) qs[t][kk] = util::bf16_to_f32(qv[u]);
  }
  // the rope part, spread over the head's CTAs
  const int half = rope / 2;
  for (int i = tile * blockDim.x + tid; i < tokens * half; i += blockDim.x * col_tiles) {
    const int t = i / half, j = i % half;
    const float angle = (float)pos[t] * inv_freq[j];
    const float c = (float)cos((double)angle) * attn_factor, s = (float)sin((double)angle) * attn_factor;
    const int a = interleaved ? 2 * j : j, b = interleaved ? 2 * j + 1 : j + half;
    const u16* src = q + ((i64)t * heads + h) * qk + nope;
    const float x0 = util::bf16_to_f32(src[a]), x1 = util::bf16_to_f32(src[b]);
    u16* dst = out + ((i64)t * heads + h) * d + kv_lora;
    dst[a] = util::f32_to_bf16(x0 * c - x1 * s);
    dst[b] = util::f32_to_bf16(x1 * c + x0 * s);
  }
  __syncthreads();
  for (int t0 = 0; t0 < tokens; t0 += 8) {
    float acc[8][4];
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int c = 0; c < 4; c++) acc[j][c] = 0.f;
#pragma unroll
    for (int r = 0; r < ROWS; r++) {
      const int kk = kg + r * AQ_KGROUPS;
      if (kk >= nope) break;
      const float w0 = util::bf16_to_f32(wv[r].x & 0xffffu), w1 = util::bf16_to_f32(wv[r].x >> 16);
      const float w2 = util::bf16_to_f32(wv[r].y & 0xffffu), w3 = util::bf16_to_f32(wv[r].y >> 16);
#pragma unroll
      for (int j = 0; j < 8; j++) {
        const float x = t0 + j < tokens ? qs[t0 + j][kk] : 0.f;
        acc[j][0] += x * w0;
        acc[j][1] += x * w1;
        acc[j][2] += x * w2;
        acc[j][3] += x * w3;
      }
    }
#pragma unroll
    for (int j = 0; j < 8; j++)
#pragma unroll
      for (int c = 0; c < 4; c++) red[kg][j][cq * 4 + c] = acc[j][c];
    __syncthreads();
    for (int i = tid; i < 8 * AQ_COLS; i += blockDim.x) {
      const int j = i / AQ_COLS, col = i % AQ_COLS;
      if (t0 + j >= tokens) continue;
      float v = 0.f;
#pragma unroll
      for (int g = 0; g < AQ_KGROUPS; g++) v += red[g][j][col];
      out[((i64)(t0 + j) * heads + h) * d + n0 + col] = util::f32_to_bf16(v);
    }
    __syncthreads();
  }
}

// Grid (heads, ceil(vd / AV_COLS)). Warp wp owns columns c0 + 4 wp .. + 4; lane l reads
// elements 8 l .. 8 l + 7 and 256 + 8 l .. of each column's row (16-byte loads).
extern "C" __global__ void __launch_bounds__(128, 3) absorb_value(const u16* __restrict__ o, const u16* __restrict__ kv_b, u16* __restrict__ out,
                                                                int tokens, int heads, int nope, int vd, int kv_lora) {
  if (threadIdx.x < AV_COLS && blockIdx.y * AV_COLS + threadIdx.x < vd)  // this CTA's W_UV rows
    util::prefetch_weights_l2(kv_b + ((i64)blockIdx.x * (nope + vd) + nope + blockIdx.y * AV_COLS + threadIdx.x) * kv_lora, kv_lora * 2);
  util::await_prior_kernels();
  __shared__ __align__(16) float os[ABSORB_TOKENS][AV_MAX_K];
  const int h = blockIdx.x, tid = threadIdx.x, lane = tid & 31, wp = tid >> 5;
  const int c0 = blockIdx.y * AV_COLS + wp * 4;
  // each column's row: every load in flight before the first use
  uint4 wv[4][2];
#pragma unroll
  for (int c = 0; c < 4; c++)
#pragma unroll
    for (int half = 0; half < 2; half++) {
      const int kk = half * 256 + lane * 8;
      const bool live = c0 + c < vd && kk < kv_lora;
      wv[c][half] = live ? __ldg(reinterpret_cast<const uint4*>(kv_b + ((i64)h * (nope + vd) + nope + c0 + c) * kv_lora + kk))
                         : make_uint4(0u, 0u, 0u, 0u);
    }
  // the tokens' o rows as f32 (16-byte loads, all in flight before the first store; rows are
  // 128-byte multiples as kv_lora % 64 == 0), zero past kv_lora
  constexpr int OV = ABSORB_TOKENS * AV_MAX_K / 8 / 128;
  const int row8 = kv_lora / 8;
  uint4 ov[OV];
#pragma unroll
  for (int u = 0; u < OV; u++) {
    const int i = tid + u * 128, t = i / row8, c = i - t * row8;
    ov[u] = t < tokens ? __ldg(reinterpret_cast<const uint4*>(o + ((i64)t * heads + h) * kv_lora) + c) : make_uint4(0u, 0u, 0u, 0u);
  }
#pragma unroll
  for (int u = 0; u < OV; u++) {
    const int i = tid + u * 128, t = i / row8, c = i - t * row8;
    if (t < tokens) {
      float4* dst = reinterpret_cast<float4*>(&os[t][8 * c]);
      dst[0] = make_float4(util::bf16_to_f32(ov[u].x & 0xffffu), util::bf16_to_f32(ov[u].x >> 16), util::bf16_to_f32(ov[u].y & 0xffffu),
                           util::bf16_to_f32(ov[u].y >> 16));
      dst[1] = make_float4(util::bf16_to_f32(ov[u].z & 0xffffu), util::bf16_to_f32(ov[u].z >> 16), util::bf16_to_f32(ov[u].w & 0xffffu),
                           util::bf16_to_f32(ov[u].w >> 16));
    }
  }
  for (int i = tid; i < tokens * (AV_MAX_K - kv_lora); i += blockDim.x) os[i / (AV_MAX_K - kv_lora)][kv_lora + i % (AV_MAX_K - kv_lora)] = 0.f;
  __syncthreads();
  for (int t0 = 0; t0 < tokens; t0 += 8) {
    float acc[4][8];
#pragma unroll
    for (int c = 0; c < 4; c++)
#pragma unroll
      for (int j = 0; j < 8; j++) acc[c][j] = 0.f;
#pragma unroll
    for (int half = 0; half < 2; half++) {
      const int kk = half * 256 + lane * 8;
#pragma unroll
      for (int j = 0; j < 8; j++) {
        if (t0 + j >= tokens) break;
        const float4 xa = *reinterpret_cast<const float4*>(&os[t0 + j][kk]);
        const float4 xb = *reinterpret_cast<const float4*>(&os[t0 + j][kk + 4]);
        const float x[8] = {xa.x, xa.y, xa.z, xa.w, xb.x, xb.y, xb.z, xb.w};
#pragma unroll
        for (int c = 0; c < 4; c++) {
          const u32 ww[4] = {wv[c][half].x, wv[c][half].y, wv[c][half].z, wv[c][half].w};
#pragma unroll
          for (int e = 0; e < 4; e++) {
            acc[c][j] += x[2 * e] * util::bf16_to_f32(ww[e] & 0xffffu);
            acc[c][j] += x[2 * e + 1] * util::bf16_to_f32(ww[e] >> 16);
          }
        }
      }
    }
#pragma unroll
    for (int c = 0; c < 4; c++)
#pragma unroll
      for (int j = 0; j < 8; j++) {
        if (t0 + j >= tokens) continue;  // uniform over the warp
        const float v = util::warp_sum(acc[c][j]);
        if (lane == c * 8 + j && c0 + c < vd) out[((i64)(t0 + j) * heads + h) * vd + c0 + c] = util::f32_to_bf16(v);
      }
  }
}

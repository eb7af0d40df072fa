// cache_write.cuh — one token's latent cache write (c_kv after its RMSNorm, k_pe after rope) as
// a device function: cache_write.cu's kernel runs it a CTA per token, and absorb.cu's
// absorb_query runs it in extra CTAs of its own grid (one launch fewer per layer). Layouts as
// cache_write.cu describes them. Every thread of a 128-thread CTA calls it.
#pragma once
#include "util.cuh"

__device__ __forceinline__ void write_latent(int t, const float* __restrict__ kv, const float* __restrict__ norm_w, const int* __restrict__ pos,
                                             const i64* __restrict__ slots, const float* __restrict__ inv_freq, float attn_factor,
                                             unsigned char* __restrict__ cache, int kv_lora, int rope, int interleaved, float eps, int fp8) {
  __shared__ float scratch[32];
  __shared__ float normed[1024];
  __shared__ float group_amax[16];
  const float* row = kv + (i64)t * (kv_lora + rope);
  float ss = 0.f;
  for (int i = threadIdx.x; i < kv_lora; i += blockDim.x) ss += row[i] * row[i];
  float inv = rsqrtf(util::block_sum(ss, scratch) / kv_lora + eps);
  for (int i = threadIdx.x; i < kv_lora; i += blockDim.x) normed[i] = row[i] * inv * norm_w[i];
  // rope on k_pe
  int half = rope / 2;
  float pe[2];
  float p = (float)pos[t];
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    float angle = p * inv_freq[i];
    float c = (float)cos((double)angle) * attn_factor, s = (float)sin((double)angle) * attn_factor;
    int a = interleaved ? 2 * i : i, b = interleaved ? 2 * i + 1 : i + half;
    float x0 = row[kv_lora + a], x1 = row[kv_lora + b];
    pe[0] = x0 * c - x1 * s;
    pe[1] = x1 * c + x0 * s;
    normed[kv_lora + a] = pe[0];
    normed[kv_lora + b] = pe[1];
  }
  __syncthreads();
  i64 slot = slots[t];
  if (!fp8) {
    u16* dst = (u16*)cache + slot * (kv_lora + rope);
    for (int i = threadIdx.x; i < kv_lora + rope; i += blockDim.x) dst[i] = util::f32_to_bf16(normed[i]);
    return;
  }
  int groups = (kv_lora + 127) / 128;
  unsigned char* dst = cache + slot * fp8_token_bytes(kv_lora, rope);
  // amax per group of 128 channels: one warp per group, warps loop over groups
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int g = warp; g < groups; g += blockDim.x / 32) {
    float m = 0.f;
    for (int i = g * 128 + lane; i < min(kv_lora, g * 128 + 128); i += 32) m = fmaxf(m, fabsf(normed[i]));
    m = util::warp_max(m);
    if (lane == 0) group_amax[g] = m;
  }
  __syncthreads();
  float* scales = (float*)(dst + kv_lora);
  for (int g = threadIdx.x; g < groups; g += blockDim.x) {
    float s = group_amax[g] > 0.f ? group_amax[g] / 448.f : 1.f;
    scales[g] = s;
  }
  for (int i = threadIdx.x; i < kv_lora; i += blockDim.x) {
    float s = group_amax[i / 128] > 0.f ? group_amax[i / 128] / 448.f : 1.f;
    dst[i] = util::f32_to_e4m3(normed[i] / s);
  }
  u16* pe_dst = (u16*)(dst + kv_lora + groups * 4);
  for (int i = threadIdx.x; i < rope; i += blockDim.x) pe_dst[i] = util::f32_to_bf16(normed[kv_lora + i]);
}

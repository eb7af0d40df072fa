// mla_prefill.cu — paged MLA attention for any latent width, absorbed form, on CUDA cores.
//
// Used for prefill/extend chunks and decode of models whose latent is not 512 + 64 (the tiled
// kernels in mla_decode.cu are specialised to DeepSeek's 576), and as the fp8-cache path.
// Each new token t (sequence token_seq[t], position token_pos[t]) attends cache positions
// 0 ..= token_pos[t] of its sequence:
//   s_j = scale * dot(q[t, h, 0:D], latent_j[0:D]),  out[t, h] = sum_j softmax(s)_j latent_j[0:kv_lora]
// D = kv_lora + rope; kv_lora <= 512 and D <= 1024. Grid (heads, T), 128 threads: each warp
// takes every 4th position with its own online softmax; the 4 are merged at the end.
#include "util.cuh"

#define PF_WARPS 4
#define PF_MAX_PER_LANE 16  // kv_lora / 32

__device__ __forceinline__ float cache_val(const unsigned char* entry, int i, int kv_lora, int rope, int fp8) {
  if (!fp8) return util::bf16_to_f32(((const u16*)entry)[i]);
  int groups = (kv_lora + 127) / 128;
  if (i < kv_lora) return util::e4m3_to_f32(entry[i]) * ((const float*)(entry + kv_lora))[i / 128];
  return util::bf16_to_f32(((const u16*)(entry + kv_lora + groups * 4))[i - kv_lora]);
}

extern "C" __global__ void __launch_bounds__(128) mla_attention_generic(
    const u16* __restrict__ q, const unsigned char* __restrict__ cache, const int* __restrict__ block_tables,
    const int* __restrict__ token_seq, const int* __restrict__ token_pos, u16* __restrict__ out, float* __restrict__ lse,
    int heads, int kv_lora, int rope, int page_size, int max_pages, float scale, int fp8) {
  __shared__ float qs[1024];
  __shared__ float wm[PF_WARPS], wl[PF_WARPS];
  __shared__ float wacc[PF_WARPS][512];
  int h = blockIdx.x, t = blockIdx.y;
  int d = kv_lora + rope;
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const u16* qr = q + ((i64)t * heads + h) * d;
  for (int i = threadIdx.x; i < d; i += blockDim.x) qs[i] = util::bf16_to_f32(qr[i]);
  __syncthreads();
  int seq = token_seq[t], pos = token_pos[t];
  const int* bt = block_tables + (i64)seq * max_pages;
  i64 entry_bytes = fp8 ? fp8_token_bytes(kv_lora, rope) : (i64)d * 2;
  float m = util::neg_inf(), l = 0.f;
  float acc[PF_MAX_PER_LANE];
#pragma unroll
  for (int k = 0; k < PF_MAX_PER_LANE; k++) acc[k] = 0.f;
  for (int j = warp; j <= pos; j += PF_WARPS) {
    i64 slot = (i64)bt[j / page_size] * page_size + j % page_size;
    const unsigned char* entry = cache + slot * entry_bytes;
    float part = 0.f;
    for (int i = lane; i < d; i += 32) part += qs[i] * cache_val(entry, i, kv_lora, rope, fp8);
    float s = util::warp_sum(part) * scale;
    float m_new = fmaxf(m, s);
    float corr = __expf(m - m_new), p = __expf(s - m_new);
    l = l * corr + p;
#pragma unroll
    for (int k = 0; k < PF_MAX_PER_LANE; k++) {
      int i = lane + 32 * k;
      if (i < kv_lora) acc[k] = acc[k] * corr + p * cache_val(entry, i, kv_lora, rope, fp8);
    }
    m = m_new;
  }
  if (lane == 0) { wm[warp] = m; wl[warp] = l; }
#pragma unroll
  for (int k = 0; k < PF_MAX_PER_LANE; k++) {
    int i = lane + 32 * k;
    if (i < kv_lora) wacc[warp][i] = acc[k];
  }
  __syncthreads();
  float gm = util::neg_inf();
  for (int w = 0; w < PF_WARPS; w++) gm = fmaxf(gm, wm[w]);
  float gl = 0.f, f[PF_WARPS];
  for (int w = 0; w < PF_WARPS; w++) {
    f[w] = wm[w] == util::neg_inf() ? 0.f : __expf(wm[w] - gm);
    gl += wl[w] * f[w];
  }
  u16* o = out + ((i64)t * heads + h) * kv_lora;
  for (int i = threadIdx.x; i < kv_lora; i += blockDim.x) {
    float v = 0.f;
    for (int w = 0; w < PF_WARPS; w++) v += wacc[w][i] * f[w];
    o[i] = util::f32_to_bf16(gl > 0.f ? v / gl : 0.f);
  }
  if (lse && threadIdx.x == 0) lse[(i64)t * heads + h] = gl > 0.f ? gm + logf(gl) : util::neg_inf();
}

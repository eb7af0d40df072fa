// rope.cu — YaRN rotary embedding of the queries' rope part, written into the absorbed query.
//
// q: [T, heads, q_stride_in] bf16 (nope then rope per head); out: [T, heads, out_stride] bf16;
// the rotated rope part goes to out[t, h, out_offset .. out_offset + rope].
// angle = f32(pos * inv_freq[i]); cos/sin in double then rounded, times attn_factor — the same
// arithmetic as the CPU engine (host/engine/src/rope.rs).
// interleaved: pairs (2i, 2i+1); otherwise halves (i, i + rope/2).
#include "util.cuh"

__device__ __forceinline__ void rope_pair_idx(int i, int half, int interleaved, int* a, int* b) {
  if (interleaved) { *a = 2 * i; *b = 2 * i + 1; }
  else { *a = i; *b = i + half; }
}

extern "C" __global__ void rope_query(const u16* __restrict__ q, u16* __restrict__ out, const int* __restrict__ pos,
                                      const float* __restrict__ inv_freq, float attn_factor, int heads, int q_stride_in,
                                      int rope_offset_in, int out_stride, int out_offset, int rope, int interleaved) {
  util::await_prior_kernels();
  int t = blockIdx.x;
  int half = rope / 2;
  float p = (float)pos[t];
  for (int k = threadIdx.x; k < heads * half; k += blockDim.x) {
    int h = k / half, i = k % half;
    float angle = p * inv_freq[i];
    float c = (float)cos((double)angle) * attn_factor, s = (float)sin((double)angle) * attn_factor;
    int a, b;
    rope_pair_idx(i, half, interleaved, &a, &b);
    const u16* src = q + ((i64)t * heads + h) * q_stride_in + rope_offset_in;
    float x0 = util::bf16_to_f32(src[a]), x1 = util::bf16_to_f32(src[b]);
    u16* dst = out + ((i64)t * heads + h) * out_stride + out_offset;
    dst[a] = util::f32_to_bf16(x0 * c - x1 * s);
    dst[b] = util::f32_to_bf16(x1 * c + x0 * s);
  }
}

// cache_write.cu — the latent cache write: c_kv after its RMSNorm, k_pe after rope.
//
// kv: [T, kv_lora + rope] f32 (output of kv_a_proj_with_mqa); slots[t] = page * page_size + offset.
// fp8 = 0: cache is bf16 [slots, kv_lora + rope].
// fp8 = 1: cache entries are fp8_token_bytes(kv_lora, rope) bytes:
//   [kv_lora x e4m3][ceil(kv_lora/128) x f32 scale][rope x bf16], scale = amax(group)/448.
// One block (128 threads) per token.
#include "cache_write.cuh"

extern "C" __global__ void __launch_bounds__(128) latent_cache_write(const float* __restrict__ kv, const float* __restrict__ norm_w,
                                                                     const int* __restrict__ pos, const i64* __restrict__ slots,
                                                                     const float* __restrict__ inv_freq, float attn_factor,
                                                                     unsigned char* __restrict__ cache, int kv_lora, int rope,
                                                                     int interleaved, float eps, int fp8) {
  util::await_prior_kernels();
  write_latent(blockIdx.x, kv, norm_w, pos, slots, inv_freq, attn_factor, cache, kv_lora, rope, interleaved, eps, fp8);
}

// norm.cu — RMSNorm over rows, with the residual add fused in.
//
// rmsnorm_residual: for each output row r (source row rows[r], or r when rows is null):
//   if delta: x[src] += delta[src]           (f32 residual stream, updated in place)
//   out[r] = x[src] / rms(x[src]) * weight   (bf16, and f32 when out_f32 is not null)
// One block per row; dim up to any size (strided loop).
#include "util.cuh"

extern "C" __global__ void __launch_bounds__(256) rmsnorm_residual(float* __restrict__ x, const float* __restrict__ delta,
                                                                   const float* __restrict__ weight, u16* __restrict__ out,
                                                                   float* __restrict__ out_f32, const int* __restrict__ rows,
                                                                   int dim, float eps) {
  util::await_prior_kernels();
  __shared__ float scratch[32];
  int r = blockIdx.x;
  int src = rows ? rows[r] : r;
  float* xr = x + (i64)src * dim;
  float ss = 0.f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    float v = xr[i];
    if (delta) {
      v += delta[(i64)src * dim + i];
      xr[i] = v;
    }
    ss += v * v;
  }
  float inv = rsqrtf(util::block_sum(ss, scratch) / dim + eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    float v = xr[i] * inv * weight[i];
    out[(i64)r * dim + i] = util::f32_to_bf16(v);
    if (out_f32) out_f32[(i64)r * dim + i] = v;
  }
}

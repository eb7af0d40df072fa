// activation.cu — SiLU-and-mul of a stacked [gate | up] projection, the embedding lookup, the
// emulated ranks' slot sum, and the element-wise cast and add of the data-parallel MoE exchange.
#include "util.cuh"

// gate_up: [rows, 2 * inter] bf16 (gate first); out: [rows, inter] bf16 = silu(gate) * up.
extern "C" __global__ void silu_mul(const u16* __restrict__ gate_up, u16* __restrict__ out, int rows, int inter) {
  util::await_prior_kernels();
  i64 n = (i64)rows * inter;
  for (i64 k = blockIdx.x * (i64)blockDim.x + threadIdx.x; k < n; k += (i64)gridDim.x * blockDim.x) {
    i64 r = k / inter, i = k % inter;
    float g = util::bf16_to_f32(gate_up[r * 2 * inter + i]);
    float u = util::bf16_to_f32(gate_up[r * 2 * inter + inter + i]);
    out[k] = util::f32_to_bf16(g / (1.f + __expf(-g)) * u);
  }
}

// x[t] = embed[tokens[t]] widened to f32; one block per token.
extern "C" __global__ void embedding(const int* __restrict__ tokens, const u16* __restrict__ table, float* __restrict__ x, int dim) {
  util::await_prior_kernels();
  int t = blockIdx.x;
  const u16* row = table + (i64)tokens[t] * dim;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) x[(i64)t * dim + i] = util::bf16_to_f32(row[i]);
}

// out[i] = sum over s of slots[s * stride + i], s in order (so every rank adds in the same order
// and holds the same bits): the emulated ranks' all-reduce (stride n) and reduce-scatter (stride
// world * n, from the rank's own slot) on one GPU.
extern "C" __global__ void sum_slots(const float* __restrict__ slots, float* __restrict__ out, int world, int n, int stride) {
  for (i64 k = blockIdx.x * (i64)blockDim.x + threadIdx.x; k < n; k += (i64)gridDim.x * blockDim.x) {
    float s = slots[k];
    for (int r = 1; r < world; ++r) s += slots[(i64)r * stride + k];
    out[k] = s;
  }
}

// dst[i] = bf16(src[i]): under data-parallel attention, the MoE input gathered from every
// attention group (f32) as the bf16 expert GEMMs read it.
extern "C" __global__ void f32_to_bf16_rows(const float* __restrict__ src, u16* __restrict__ dst, int n) {
  util::await_prior_kernels();
  for (i64 k = blockIdx.x * (i64)blockDim.x + threadIdx.x; k < n; k += (i64)gridDim.x * blockDim.x) dst[k] = util::f32_to_bf16(src[k]);
}

// dst[i] += src[i]: a group's rows of the routed experts' output added into its residual.
extern "C" __global__ void add_f32(float* __restrict__ dst, const float* __restrict__ src, int n) {
  util::await_prior_kernels();
  for (i64 k = blockIdx.x * (i64)blockDim.x + threadIdx.x; k < n; k += (i64)gridDim.x * blockDim.x) dst[k] += src[k];
}

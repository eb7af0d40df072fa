// bf16_stream.cu — bf16 GEMMs of a few rows per weight (decode), written to read each weight byte
// once at HBM speed: weights go from global memory straight into mma.sync fragments (16-byte
// streaming loads, D k blocks ahead, no shared memory), and only the few activation rows are
// staged in shared memory, one 128-wide k block at a time.
//
//  moe_gemm_stream  moe.cu's grouped expert GEMM, C[p, n] = A[row(p), :k] · W[e(p), n, :k]^T,
//                   over moe_align's tiles of <= 16 rows; 64 output columns per CTA (8 warps of
//                   8), so a batch-1 step's six experts still spread over every SM.
//  linear_stream    a dense linear of <= 16 rows, C[m, n] (mode) A[m, :k] · W[n, :k]^T, the k
//                   blocks split over blockIdx.y: splits write f32 partials and the last CTA of
//                   a column tile to arrive (a counter per tile, reset by that CTA) sums them in
//                   split order and writes C, so one launch does it all. Modes: 0 bf16, 1 f32,
//                   2 f32 accumulate (C += result). Optionally two linears of the same input in
//                   one launch (a layer's query and latent projections): W2's rows follow W's
//                   as columns n1 .. n of one product, written to C2 in mode2.
//
// Both can end in SiLU-and-mul (`glu_inter` > 0, for a stacked [gate | up] weight of 2 x inter
// rows): each CTA's 64 columns are then 32 gate rows and the 32 up rows that pair with them, and
// it writes silu(gate) * up (bf16, [rows, inter]), gate and up rounded to bf16 first as the
// unfused path stores them, so the separate silu_mul launch goes.
//
// Why not moe_gemm_skinny (cp.async of 128 weight rows into 4 smem stages): its CTAs of 128
// columns leave SMs idle at batch 1 (V2-Lite's down projection: 16 column tiles x 6 experts = 96
// CTAs on 132 SMs), and every weight byte makes a round trip through shared memory.
//
// The layout (as fp8_skinny.cu): within a 64-wide k chunk, thread (g = lane / 4, cq = lane % 4)
// holds elements cq*16 .. cq*16+15 of its weight row (two 16-byte loads); m16n8k16 step s of the
// chunk takes elements 4s .. 4s+3 of those as the fragment's k pairs (2cq, 2cq+1) and (2cq+8,
// 2cq+9). The activations are read with the same permutation of k, and a dot product does not
// care about the order of its terms. k must be a multiple of 8 (the tail of the last block is
// zero-filled); rows past the tile's and columns past n are neither read nor written.
#include "util.cuh"

#define STREAM_ROWS 16
#define STREAM_LDA 136  // bf16 per staged activation row: 272 bytes, so rows g and g + 1 of a
                        // 16-byte read hit disjoint banks

__device__ __forceinline__ uint4 stream16(const u16* p) {
  uint4 r;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n" : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w) : "l"(p));
  return r;
}

__device__ __forceinline__ void stream_mma(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// The weight rows of one product: rows 0 .. n1 of w1, then those of w2 (none when n1 = n); with
// glu_inter > 0, w1's stacked [gate | up] rows permuted so that each 64 columns are 32 gates and
// their 32 ups (column 64 b + c: gate (or, c >= 32, up) 32 b + c % 32).
struct StreamW {
  const u16* w1;
  const u16* w2;
  int n1;
  int glu_inter;
  __device__ __forceinline__ const u16* row(int col, int k) const {
    if (glu_inter > 0) {
      const int c = col & 63, o = (col >> 6) * 32 + (c & 31);
      return w1 + (i64)(c < 32 ? o : glu_inter + o) * k;
    }
    return col < n1 ? w1 + (i64)col * k : w2 + (i64)(col - n1) * k;
  }
};

__device__ __forceinline__ float silu_mul_bf16(float gate, float up) {
  const float g = util::bf16_to_f32(util::f32_to_bf16(gate)), u = util::bf16_to_f32(util::f32_to_bf16(up));
  return g / (1.f + __expf(-g)) * u;
}

// The CTA's 16 x 64 accumulators (NJ = 1; its 32 gates, then their 32 ups) as silu(gate) * up:
// row r (< rows) to out + out_row(r) * inter + blockIdx.x * 32 .. + 32, bf16.
template <typename RowOf>
__device__ __forceinline__ void glu_store(const float (&acc)[1][4], u16* __restrict__ out, int rows, int inter, RowOf out_row) {
  __shared__ float prod[STREAM_ROWS][72];  // (a stride of 72: 2-way bank conflicts on the stores)
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, cq = lane & 3;
#pragma unroll
  for (int half = 0; half < 2; half++)
#pragma unroll
    for (int q = 0; q < 2; q++) prod[g + 8 * half][warp * 8 + 2 * cq + q] = acc[0][2 * half + q];
  __syncthreads();
  for (int idx = tid; idx < STREAM_ROWS * 32; idx += blockDim.x) {
    const int r = idx >> 5, o = idx & 31;
    if (r < rows) out[out_row(r) * inter + blockIdx.x * 32 + o] = util::f32_to_bf16(silu_mul_bf16(prod[r][o], prod[r][o + 32]));
  }
}

// One CTA: 16 activation rows of `a` ([rows, k] row-major) against weight rows wcol0 + warp * 8
// * NJ .. of `wt` (n rows of k), over k blocks kb0 .. kb1 (128 wide), f32 sums in `acc` (the
// m16n8 accumulator of each of the warp's NJ column tiles). Thread tid stages row tid / 16, whose
// source row is `asrc` (-1: zeros). D k blocks of weights in flight per thread (16 * D * NJ
// registers).
template <int NJ, int D>
__device__ __forceinline__ void stream_rows(const u16* __restrict__ a, int asrc, const StreamW& wt, int wcol0, int n, int k, int kb0, int kb1,
                                            float (&acc)[NJ][4]) {
  __shared__ __align__(16) u16 as[2][STREAM_ROWS][STREAM_LDA];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, cq = lane & 3;
  const int wcol = wcol0 + warp * NJ * 8;
  const int nk = kb1 - kb0;
  // thread tid stages row tid / 16, elements (tid % 16) * 8 .. + 8 of each k block
  const int ar = tid >> 4, ac = (tid & 15) * 8;
  uint4 anext = make_uint4(0u, 0u, 0u, 0u);
  auto a_fetch = [&](int i) {
    const int kc = (kb0 + i) * 128 + ac;
    anext = (asrc >= 0 && kc < k) ? __ldg(reinterpret_cast<const uint4*>(a + (i64)asrc * k + kc)) : make_uint4(0u, 0u, 0u, 0u);
  };
  auto a_store = [&](int buf) { *reinterpret_cast<uint4*>(&as[buf][ar][ac]) = anext; };
  // q = 2 h + half: chunk h's elements cq*16 + half*8 .. + 8
  uint4 wb[D][NJ][4];
  auto w_fetch = [&](uint4 (&dst)[NJ][4], int i) {
#pragma unroll
    for (int j = 0; j < NJ; j++) {
      const int col = wcol + j * 8 + g;
#pragma unroll
      for (int q = 0; q < 4; q++) {
        const int kc = (kb0 + i) * 128 + (q >> 1) * 64 + cq * 16 + (q & 1) * 8;
        dst[j][q] = (i < nk && col < n && kc < k) ? stream16(wt.row(col, k) + kc) : make_uint4(0u, 0u, 0u, 0u);
      }
    }
  };
  auto compute = [&](const uint4 (&wv)[NJ][4], int buf) {
#pragma unroll
    for (int h = 0; h < 2; h++) {
      const u16* lo = &as[buf][g][h * 64 + cq * 16];
      const u16* hi = &as[buf][g + 8][h * 64 + cq * 16];
      const uint4 l0 = *reinterpret_cast<const uint4*>(lo), l1 = *reinterpret_cast<const uint4*>(lo + 8);
      const uint4 h0 = *reinterpret_cast<const uint4*>(hi), h1 = *reinterpret_cast<const uint4*>(hi + 8);
      const u32 lw[8] = {l0.x, l0.y, l0.z, l0.w, l1.x, l1.y, l1.z, l1.w};
      const u32 hw[8] = {h0.x, h0.y, h0.z, h0.w, h1.x, h1.y, h1.z, h1.w};
#pragma unroll
      for (int j = 0; j < NJ; j++) {
        const uint4 b0 = wv[j][2 * h], b1 = wv[j][2 * h + 1];
        const u32 bw[8] = {b0.x, b0.y, b0.z, b0.w, b1.x, b1.y, b1.z, b1.w};
#pragma unroll
        for (int s = 0; s < 4; s++) stream_mma(acc[j], lw[2 * s], hw[2 * s], lw[2 * s + 1], hw[2 * s + 1], bw[2 * s], bw[2 * s + 1]);
      }
    }
  };
#pragma unroll
  for (int j = 0; j < NJ; j++)
#pragma unroll
    for (int q = 0; q < 4; q++) acc[j][q] = 0.f;
  if (nk <= 0) return;
  a_fetch(0);
  a_store(0);
  if (nk > 1) a_fetch(1);
#pragma unroll
  for (int d = 0; d < D; d++) w_fetch(wb[d], d);
  __syncthreads();
  for (int it = 0; it < nk; it += D) {
#pragma unroll
    for (int d = 0; d < D; d++) {
      const int i2 = it + d;
      if (i2 < nk) {
        const int buf = i2 & 1;
        compute(wb[d], buf);
        w_fetch(wb[d], i2 + D);
        // the other buffer was last read in step i2 - 1, before the barrier that ended it
        if (i2 + 1 < nk) a_store(buf ^ 1);
        if (i2 + 2 < nk) a_fetch(i2 + 2);
        __syncthreads();
      }
    }
  }
}

// Grid (ceil(n / 64), max tiles); 256 threads. Arguments as moe_gemm's; with glu_inter > 0 (n =
// 2 glu_inter, a multiple of 64), c is silu(gate) * up, bf16 [pairs, glu_inter].
extern "C" __global__ void __launch_bounds__(256, 2) moe_gemm_stream(const u16* __restrict__ a, const int* __restrict__ a_rows, int a_div,
                                                                     const u16* __restrict__ w, const int* __restrict__ tiles,
                                                                     const int* __restrict__ num_tiles, void* __restrict__ c, int c_f32,
                                                                     int n, int k, int glu_inter) {
  util::await_prior_kernels();
  constexpr int NJ = 1, D = 4, COLS = 64 * NJ;
  __shared__ int arow[STREAM_ROWS];
  const int tile = blockIdx.y;
  if (tile >= *num_tiles) return;
  const int e = tiles[3 * tile], start = tiles[3 * tile + 1], rows = tiles[3 * tile + 2];
  const int tid = threadIdx.x;
  if (tid < STREAM_ROWS) arow[tid] = tid < rows ? (a_rows ? a_rows[start + tid] / a_div : start + tid) : -1;
  __syncthreads();
  float acc[NJ][4];
  const int n0 = blockIdx.x * COLS;
  const StreamW wt{w + (i64)e * n * k, nullptr, n, glu_inter};
  stream_rows<NJ, D>(a, arow[tid >> 4], wt, n0, n, k, 0, (k + 127) / 128, acc);
  if (glu_inter > 0) {
    glu_store(acc, (u16*)c, rows, glu_inter, [&](int r) { return (i64)(start + r); });
    return;
  }
  const int lane = tid & 31, warp = tid >> 5, g = lane >> 2, cq = lane & 3;
#pragma unroll
  for (int j = 0; j < NJ; j++)
#pragma unroll
    for (int half = 0; half < 2; half++) {
      const int r = g + 8 * half;
      if (r >= rows) continue;
      const i64 base = (i64)(start + r) * n;
#pragma unroll
      for (int q = 0; q < 2; q++) {
        const int col = n0 + warp * NJ * 8 + j * 8 + 2 * cq + q;
        if (col >= n) continue;
        const float v = acc[j][2 * half + q];
        if (c_f32) ((float*)c)[base + col] = v;
        else ((u16*)c)[base + col] = util::f32_to_bf16(v);
      }
    }
}

// Grid (ceil(n / 64), splits); 256 threads; m <= 16, k a multiple of 8, `kb_per_split` k blocks
// per split. Columns 0 .. n1 are W's ([n1, k]) into C ([m, n1], mode), n1 .. n W2's ([n - n1, k])
// into C2 ([m, n - n1], mode2). With glu_inter > 0 (n = n1 = 2 glu_inter, a multiple of 64), C is
// silu(gate) * up, bf16 [m, glu_inter]. With splits, `part` holds [splits, m, n] f32 and
// `counters` one zeroed u32 per column tile.
extern "C" __global__ void __launch_bounds__(256, 2) linear_stream(const u16* __restrict__ a, const u16* __restrict__ w, void* __restrict__ c,
                                                                   const u16* __restrict__ w2, void* __restrict__ c2, float* __restrict__ part,
                                                                   u32* __restrict__ counters, int mode, int mode2, int m, int n1, int n, int k,
                                                                   int kb_per_split, int glu_inter) {
  if (threadIdx.x < 64) {  // this CTA's weight rows, first two k blocks (util::prefetch_weights_l2;
    // the ramp is what it hides: a whole large layer would overflow L2 and evict the kernel ahead's)
    const int col = blockIdx.x * 64 + threadIdx.x, e0 = blockIdx.y * kb_per_split * 128, e1 = min(e0 + min(kb_per_split, 2) * 128, k);
    if (col < n && e1 > e0) util::prefetch_weights_l2(StreamW{w, w2, n1, glu_inter}.row(col, k) + e0, (unsigned)(e1 - e0) * 2);
  }
  util::await_prior_kernels();
  constexpr int NJ = 1, D = 4, COLS = 64 * NJ;
  __shared__ int last;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, cq = lane & 3;
  const int kbs = (k + 127) / 128, kb0 = blockIdx.y * kb_per_split, kb1 = min(kbs, kb0 + kb_per_split);
  const int n0 = blockIdx.x * COLS;
  float acc[NJ][4];
  const StreamW wt{w, w2, n1, glu_inter};
  stream_rows<NJ, D>(a, (tid >> 4) < m ? tid >> 4 : -1, wt, n0, n, k, kb0, kb1, acc);
  const bool split = gridDim.y > 1;
  if (glu_inter > 0 && !split) {
    glu_store(acc, (u16*)c, m, glu_inter, [](int r) { return (i64)r; });
    return;
  }
  // element (r, col) of the product into its output
  auto emit = [&](int r, int col, float v) {
    const bool first = col < n1;
    const int md = first ? mode : mode2;
    const i64 idx = first ? (i64)r * n1 + col : (i64)r * (n - n1) + (col - n1);
    util::store_out(first ? c : c2, idx, md, v);
  };
#pragma unroll
  for (int j = 0; j < NJ; j++)
#pragma unroll
    for (int half = 0; half < 2; half++) {
      const int r = g + 8 * half;
      if (r >= m) continue;
#pragma unroll
      for (int q = 0; q < 2; q++) {
        const int col = n0 + warp * NJ * 8 + j * 8 + 2 * cq + q;
        if (col >= n) continue;
        const float v = acc[j][2 * half + q];
        if (split) part[((i64)blockIdx.y * m + r) * n + col] = v;
        else emit(r, col, v);
      }
    }
  if (!split) return;
  // the last split of this column tile to arrive sums the partials in split order and resets
  // the tile's counter for the next launch
  if (!util::last_split_arrived(counters + blockIdx.x, gridDim.y, &last)) return;
  const int splits = gridDim.y;
  const i64 stride = (i64)m * n;
  if (glu_inter > 0) {  // gate (tile column o) and up (o + 32)
    for (int idx = tid; idx < m * 32; idx += blockDim.x) {
      const int r = idx >> 5, o = idx & 31;
      const float* pg = part + (i64)r * n + n0 + o;
      const float gate = util::split_sum(pg, splits, stride), up = util::split_sum(pg + 32, splits, stride);
      ((u16*)c)[(i64)r * glu_inter + blockIdx.x * 32 + o] = util::f32_to_bf16(silu_mul_bf16(gate, up));
    }
  } else {
    for (int idx = tid; idx < m * COLS; idx += blockDim.x) {
      const int r = idx / COLS, col = n0 + idx % COLS;
      if (col < n) emit(r, col, util::split_sum(part + (i64)r * n + col, splits, stride));
    }
  }
  if (tid == 0) counters[blockIdx.x] = 0u;
}

// Shared by the mla_decode kernels: types, inline-PTX helpers, arguments and per-CTA work.
// Included by mla_decode.cu (NVRTC: pass --include-path=<this directory>).
#pragma once

typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

#define MLA_D 576   // kv_lora_rank 512 + rope 64
#define MLA_DV 512  // latent value width
#define MLA_THREADS 256


namespace mla {


// ------------------------------------------------------------------------------------------------
// small helpers (inline PTX, so nothing depends on CUDA headers)
// ------------------------------------------------------------------------------------------------
__device__ __forceinline__ int imin(int a, int b) { return a < b ? a : b; }
__device__ __forceinline__ int imax(int a, int b) { return a > b ? a : b; }
__device__ __forceinline__ float neg_inf() { return __int_as_float(0xff800000u); }

__device__ __forceinline__ u32 smem_u32(const void* p) {
  u32 r;
  asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(r) : "l"(p));
  return r;
}
__device__ __forceinline__ float ex2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
__device__ __forceinline__ float lg2(float x) {
  float y;
  asm("lg2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}
// two floats -> packed bf16x2 (lo in the low half), round to nearest even
__device__ __forceinline__ u32 pack_bf16(float lo, float hi) {
  u32 r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
__device__ __forceinline__ u16 to_bf16(float x) {
  u16 r;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ void cp_async_16(u32 dst, const void* src, bool valid) {
  // src-size 0 zero-fills the 16 bytes and reads nothing
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
__device__ __forceinline__ void ldsm_x4(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void ldsm_x4_t(u32 addr, u32& r0, u32& r1, u32& r2, u32& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ void ldsm_x2(u32 addr, u32& r0, u32& r1) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n"
               : "=r"(r0), "=r"(r1)
               : "r"(addr)
               : "memory");
}
// D[16x8] += A[16x16] * B[16x8], bf16 in, f32 accumulate
__device__ __forceinline__ void mma_bf16(float* c, u32 a0, u32 a1, u32 a2, u32 a3, u32 b0, u32 b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Programmatic dependent launch (sm_90+). The host launches the decode kernels and the combine
// with programmatic stream serialisation on Hopper, so a kernel may start while the one before it
// is still running. Before wait_for_prior_grids() a kernel reads only the per-step metadata the
// host uploads (block table, sequence lengths, split offsets), never what a kernel writes (q, the
// cache, partials, outputs). Both are no-ops below sm_90 and in a launch without the attribute.
__device__ __forceinline__ void wait_for_prior_grids() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}
// lets the next kernel in the stream start its own metadata prologue now
__device__ __forceinline__ void allow_dependent_grids() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

#if defined(T16_TRACE) || defined(R64_PROF)
// dev only: per-phase records of row tile 0, sequence 0, splits < 128, [split][warpgroup][16],
// read by the harness's --trace (globaltimer and clock64 marks, or summed cycles)
#define MLA_TRACE_PER_WG 16
#define MLA_TRACE_SLOTS (128 * 2 * MLA_TRACE_PER_WG)
extern "C" {
__device__ u64 mla_trace_gt[MLA_TRACE_SLOTS];
__device__ u64 mla_trace_clk[MLA_TRACE_SLOTS];
}
#endif

// Development only (MLAHOST_KERNEL_DEFINES="-DMLA_F8_TRACE"): where CTA (0,0,0)'s time goes,
// in clock64 cycles summed over its tiles: WG0's thread 0 in [0, 6) (landed wait, S and folds,
// softmax, P' and its arrive, the wait for the consumers, the prologue), consumer 0's thread 128
// in [8, 14) (its landed arrive, the P' wait, the rescale, P V, the loads, the prologue); [15]
// the tiles. gpu-check --bench prints it after one launch of each FP8-math kernel
// (mla_decode_f8mma.cuh).
#ifdef MLA_F8_TRACE
extern "C" {  // unmangled: the host looks it up by name
__device__ unsigned long long mla_f8_trace[16];
}
struct F8Trace {
  bool on;
  long long last;
  __device__ explicit F8Trace(int tid)
      : on(blockIdx.x == 0 && blockIdx.y == 0 && blockIdx.z == 0 && (tid == 0 || tid == 128)), last(clock64()) {}
  __device__ void mark(int i) {
    if (!on) return;
    const long long now = clock64();
    atomicAdd(&mla_f8_trace[i], (unsigned long long)(now - last));  // a reduction: no wait
    last = now;
  }
  __device__ void tiles(int n) {
    if (on) mla_f8_trace[15] = (unsigned long long)n;
  }
};
#else
struct F8Trace {
  __device__ explicit F8Trace(int) {}
  __device__ void mark(int) {}
  __device__ void tiles(int) {}
};
#endif

// The 64-row kernels' epilogue: each row's softmax sum over its quad of lanes (the quad holds the
// row's columns), then the row's sum and maximum into shared memory for the other warpgroups.
__device__ __forceinline__ void store_row_stats(float l0, float l1, float m0, float m1, int R0, int R1, int c4, float* sl, float* sm) {
  l0 += __shfl_xor_sync(0xffffffffu, l0, 1);
  l0 += __shfl_xor_sync(0xffffffffu, l0, 2);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 1);
  l1 += __shfl_xor_sync(0xffffffffu, l1, 2);
  if (c4 == 0) {
    sl[R0] = l0;
    sm[R0] = m0;
    sl[R1] = l1;
    sm[R1] = m1;
  }
}

// fp8 latent cache (see util.cuh): [512 e4m3][4 f32 scales][64 bf16 k_pe] = 656 bytes per token
#define MLA_FP8_BYTES 656
#define MLA_FP8_CHUNKS 41  // 16-byte chunks per token

// two e4m3 codes (low byte first) -> two f32
__device__ __forceinline__ float2 e4m3x2_to_f32x2(unsigned short v) {
#if __CUDA_ARCH__ >= 890
  u32 h2;
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(h2) : "h"(v));
  float lo, hi;
  asm("{ .reg .f16 a, b; mov.b32 {a, b}, %2; cvt.f32.f16 %0, a; cvt.f32.f16 %1, b; }" : "=f"(lo), "=f"(hi) : "r"(h2));
  return make_float2(lo, hi);
#else
  float r[2];
#pragma unroll
  for (int i = 0; i < 2; ++i) {
    const u32 b = (v >> (8 * i)) & 0xff, e = (b >> 3) & 15, m = b & 7;
    float x = e == 0 ? ldexpf((float)m, -9) : ldexpf((float)(8 + m), (int)e - 10);
    if (e == 15 && m == 7) x = __int_as_float(0x7fc00000);
    r[i] = (b & 0x80) ? -x : x;
  }
  return make_float2(r[0], r[1]);
#endif
}

// 16 e4m3 codes (a uint4, low byte first) times `sc` -> 16 bf16 in eight packed words
__device__ __forceinline__ void e4m3x16_to_bf16(uint4 v, float sc, u32 (&packed)[8]) {
  const u32 words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 lo = e4m3x2_to_f32x2((unsigned short)(words[i] & 0xffff));
    const float2 hi = e4m3x2_to_f32x2((unsigned short)(words[i] >> 16));
    packed[2 * i] = pack_bf16(lo.x * sc, lo.y * sc);
    packed[2 * i + 1] = pack_bf16(hi.x * sc, hi.y * sc);
  }
}

// ------------------------------------------------------------------------------------------------
// arguments and per-CTA work item
// ------------------------------------------------------------------------------------------------
struct Args {
  const u16* q;              // [B, q_len, H, 576] bf16
  const u16* kv;             // [num_pages, page_size, 576] bf16
  const int* block_table;    // [B, max_pages] physical page ids
  const int* seq_lens;       // [B] tokens in the cache, new ones included
  const int* split_offsets;  // [B+1] prefix sums of splits per sequence
  u16* out;                  // [B, q_len, H, 512] bf16
  float* lse;                // [B, q_len, H] f32
  u16* part_o;               // [slots, q_len*H, 512] bf16 (only touched when a sequence has >1 split)
  float* part_lse;           // [slots, q_len*H] f32
  int q_len, heads, page_size, max_pages, chunk;
  float scale;
  int* sync;                 // null, or the split-arrival words (mla_decode_combine.cuh: split_arrive)
};

struct Work {
  int b, split, nsplit, slot;
  int seq, kv_begin, kv_end, kv_stop;  // kv_stop: end of what any row of this CTA can see
  int rows_total, row0;
};

// The per-sequence values make_work needs, loaded on their own so that a kernel can issue them
// first and overlap their round trip with other loads.
struct WorkLoads {
  int split_begin, split_end, seq_len;
};
__device__ __forceinline__ WorkLoads load_work(const Args& a) {
  const int b = blockIdx.z;
  return WorkLoads{__ldg(a.split_offsets + b), __ldg(a.split_offsets + b + 1), __ldg(a.seq_lens + b)};
}

// returns false when this CTA has nothing to do (split beyond the sequence's split count)
__device__ __forceinline__ bool make_work(const Args& a, int rows_per_cta, const WorkLoads& l, Work& w) {
  w.b = blockIdx.z;
  w.split = blockIdx.y;
  w.nsplit = l.split_end - l.split_begin;
  if (w.split >= w.nsplit) return false;
  w.slot = l.split_begin + w.split;
  w.seq = imax(l.seq_len, 0);
  w.rows_total = a.q_len * a.heads;
  w.row0 = blockIdx.x * rows_per_cta;
  if (w.row0 >= w.rows_total) return false;
  w.kv_begin = w.split * a.chunk;
  w.kv_end = imin(w.seq, w.kv_begin + a.chunk);
  const int last_row = imin(w.row0 + rows_per_cta, w.rows_total) - 1;
  w.kv_stop = imin(w.kv_end, w.seq - a.q_len + last_row / a.heads + 1);
  return true;
}
__device__ __forceinline__ bool make_work(const Args& a, int rows_per_cta, Work& w) {
  return make_work(a, rows_per_cta, load_work(a), w);
}

// causal limit (exclusive) of one row; padding rows read what the CTA reads
__device__ __forceinline__ int row_limit(const Args& a, const Work& w, int local_row) {
  const int r = w.row0 + local_row;
  if (r >= w.rows_total) return w.kv_stop;
  return imin(w.kv_end, w.seq - a.q_len + r / a.heads + 1);
}

// One sequence's row of the block table. Page sizes are powers of two in practice, so positions
// split by shifts; the lookup is clamped into the row, so it may be issued before the position is
// known to be valid (before make_work's loads have returned).
struct PageMap {
  const int* row;
  int ps, sh, max_pages;
  __device__ __forceinline__ PageMap(const Args& a, int b)
      : row(a.block_table + (i64)b * a.max_pages),
        ps(a.page_size),
        sh((a.page_size & (a.page_size - 1)) == 0 ? __ffs(a.page_size) - 1 : -1),
        max_pages(a.max_pages) {}
  __device__ __forceinline__ int page(int pos) const {
    const int idx = sh >= 0 ? pos >> sh : pos / ps;
    return max_pages > 0 ? __ldg(row + imin(idx, max_pages - 1)) : 0;
  }
  // cache slot of `pos`, which lies in page `page`
  __device__ __forceinline__ i64 slot(int page, int pos) const {
    return (i64)page * ps + (sh >= 0 ? (pos & (ps - 1)) : pos % ps);
  }
};

// Online-softmax step of a 64-column S fragment as wgmma leaves it (this thread: rows R0 in
// s[4j + e], R1 in s[4j + 2 + e], columns 8j + 2c4 + e): positions at or past a row's limit are
// masked (only in the tile that reaches a limit), the row maxima reduced over the quad and scaled
// by rs0 / rs1 (> 0: softmax scale x log2 e, times any per-row scale) into the running maxima m0 /
// m1. Returns the exponent offsets b (m, or 0 for a row with nothing visible yet) and the factors
// alpha by which the row's earlier sums shrink.
struct RowStep {
  float b0, b1, al0, al1;
};
__device__ __forceinline__ RowStep softmax_rows64(float (&s)[32], int pos0, int lim0, int lim1, int c4, float rs0, float rs1,
                                                  float& m0, float& m1) {
  if (pos0 + 64 > imin(lim0, lim1)) {
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int p = pos0 + 8 * j + 2 * c4 + e;
        if (p >= lim0) s[4 * j + e] = neg_inf();
        if (p >= lim1) s[4 * j + 2 + e] = neg_inf();
      }
  }
  // two chains per row for instruction-level parallelism
  float mx0 = fmaxf(s[0], s[1]), mx1 = fmaxf(s[2], s[3]), my0 = fmaxf(s[4], s[5]), my1 = fmaxf(s[6], s[7]);
#pragma unroll
  for (int j = 2; j < 8; j += 2) {
    mx0 = fmaxf(mx0, fmaxf(s[4 * j], s[4 * j + 1]));
    mx1 = fmaxf(mx1, fmaxf(s[4 * j + 2], s[4 * j + 3]));
    my0 = fmaxf(my0, fmaxf(s[4 * j + 4], s[4 * j + 5]));
    my1 = fmaxf(my1, fmaxf(s[4 * j + 6], s[4 * j + 7]));
  }
  mx0 = fmaxf(mx0, my0);
  mx1 = fmaxf(mx1, my1);
  mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 1));
  mx0 = fmaxf(mx0, __shfl_xor_sync(0xffffffffu, mx0, 2));
  mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 1));
  mx1 = fmaxf(mx1, __shfl_xor_sync(0xffffffffu, mx1, 2));
  const float n0 = fmaxf(m0, mx0 * rs0), n1 = fmaxf(m1, mx1 * rs1);
  RowStep r;
  r.b0 = (n0 == neg_inf()) ? 0.f : n0;
  r.b1 = (n1 == neg_inf()) ? 0.f : n1;
  r.al0 = ex2(m0 - r.b0);
  r.al1 = ex2(m1 - r.b1);
  m0 = n0;
  m1 = n1;
  return r;
}

// final store of one row's value pair: the output or the split's partial (both bf16)
__device__ __forceinline__ void store_o2(const Args& a, const Work& w, int r, int d, float v0, float v1) {
  if (w.nsplit == 1) {
    *reinterpret_cast<u32*>(a.out + ((i64)w.b * w.rows_total + r) * MLA_DV + d) = pack_bf16(v0, v1);
  } else {
    *reinterpret_cast<u32*>(a.part_o + ((i64)w.slot * w.rows_total + r) * MLA_DV + d) = pack_bf16(v0, v1);
  }
}
__device__ __forceinline__ void store_lse(const Args& a, const Work& w, int r, float m2, float l) {
  const float v = (l > 0.f) ? (m2 + lg2(l)) * 0.6931471805599453f : neg_inf();
  if (w.nsplit == 1) a.lse[(i64)w.b * w.rows_total + r] = v;
  else a.part_lse[(i64)w.slot * w.rows_total + r] = v;
}


}  // namespace mla

// sampling.cu — token sampling on the GPU, one block of 1024 threads per logits row.
//
// sample_rows: logits [R, V] f32 (row-major), per-row SampleParams, a flat list of PenaltyEntry
// → token [R] i32, token_logprob [R] f32, top_ids [R, 20] i32, top_logprobs [R, 20] f32.
//
// Semantics (those of host/engine/src/sampling.rs and the engine loop that calls it):
//   * Penalties (apply_penalties): each entry of the row's list is one distinct token seen in
//     the prompt or the output, with its number of occurrences in the output. Repetition
//     (when != 1) applies to every entry: l > 0 ? l / rep : l * rep. Then entries with
//     output_count > 0 get l -= frequency * count + presence (f32, no FMA contraction). Token
//     ids outside [0, V) are ignored; ids must be distinct within a row. Penalized logits are
//     written to `work` (a scratch copy of the row); `logits` is never modified.
//   * Allow-sets (a grammar's mask; a row whose mask_row >= 0): bit i % 32 of word i / 32 of
//     the row's `mask_words` words says whether token i may be chosen. A disallowed token's
//     logit is -inf in the scratch row before penalties (which never raise it), exactly as
//     the host masks a sampler plugin's allow-set before `apply_penalties`. Logprobs stay
//     those of the raw row.
//   * Greedy (temperature == 0 or top_k == 1): argmax of the penalized logits, ties to the
//     lowest index (exactly `argmax`).
//   * Otherwise (`sample`): w_i = exp((l_i - max) / T) with 1/T in f32; top-k keeps the k
//     largest w (ties to the lower index) when 0 < k < V; min-p keeps w >= min_p * 1 (the best
//     weight is always the max token's, exp(0) = 1); top-p (< 1) keeps the smallest prefix of
//     the remaining candidates in (w desc, index asc) order whose f64 sum reaches
//     top_p * total. The token is drawn by inverse CDF over the kept weights in index order
//     at u * total (u drawn on the host). The CPU walks its candidates in another order, so the
//     same u gives a different token; the distribution is the same.
//   * Log-probabilities are of the model's own distribution: log_softmax of the RAW logits,
//     before penalties and temperature (as the engine loop and vLLM report them), with f64
//     accumulation. top_ids/top_logprobs hold the n = min(n_logprobs, 20, V) best, best first,
//     ties to the lower id (exactly `top_logprobs`); slots n.. of the row are not written.
//   * Non-finite values: NaN logits count as -inf (the CPU differs only when logits[0] is NaN).
//     A row whose penalized logits are all -inf yields token 0 (greedy or not); a row whose raw
//     logits are all -inf reports logprobs of -inf and top ids 0, 1, ... Every loop is bounded.
#include "util.cuh"

// Mirror of host/cuda/src/kernels/sampling.rs `RowParams` (48 bytes, all 4-byte fields).
struct SampleParams {
  float temperature;         // 0: greedy
  int top_k;                 // 0: off
  float top_p;               // 1: off
  float min_p;               // 0: off
  float presence_penalty;
  float frequency_penalty;
  float repetition_penalty;  // 1: off
  float u;                   // uniform in [0, 1)
  int n_logprobs;            // 0..=20
  int pen_offset;            // this row's entries in the flat penalty list
  int pen_count;
  int mask_row;              // -1: no allow-set
};

// Mirror of `PenaltyEntry` (8 bytes).
struct PenaltyEntry {
  int token;
  int output_count;  // occurrences in the generated tokens (0: seen in the prompt only)
};

#define SAMPLE_THREADS 1024
#define SAMPLE_MAX_TOP 20
#define SAMPLE_CAND_CAP 2048
#define SAMPLE_NPROBE 7
#define SAMPLE_INT_MAX 0x7fffffff
#define SAMPLE_FULL 0xffffffffu

namespace sampling {

__device__ __forceinline__ float sanitize(float x) { return x != x ? util::neg_inf() : x; }
__device__ __forceinline__ double neg_inf_d() { return __longlong_as_double((long long)0xfff0000000000000ULL); }

__device__ __forceinline__ double warp_sum_d(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(SAMPLE_FULL, v, o);
  return v;
}
__device__ __forceinline__ int warp_sum_i(int v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(SAMPLE_FULL, v, o);
  return v;
}
__device__ __forceinline__ int warp_max_i(int v) {
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(SAMPLE_FULL, v, o));
  return v;
}

// (v, i) comes before (bv, bi): larger value, or equal value and lower index. "None" is
// (-inf, INT_MAX), which every real element beats.
__device__ __forceinline__ bool better(float v, int i, float bv, int bi) { return v > bv || (v == bv && i < bi); }

// Shared scratch of the block-wide helpers.
struct Shared {
  float fv[32];
  int iv[32];
  int res[4];
  double dred[SAMPLE_NPROBE][32];
  double dtot[SAMPLE_NPROBE];
  double wsum[32];
  int wlast[32];
};

// Block-wide best (value, index); every thread gets the result.
__device__ __forceinline__ void block_best(float& v, int& i, Shared& sh) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  for (int o = 16; o > 0; o >>= 1) {
    float ov = __shfl_xor_sync(SAMPLE_FULL, v, o);
    int oi = __shfl_xor_sync(SAMPLE_FULL, i, o);
    if (better(ov, oi, v, i)) { v = ov; i = oi; }
  }
  __syncthreads();
  if (lane == 0) { sh.fv[warp] = v; sh.iv[warp] = i; }
  __syncthreads();
  v = lane < nw ? sh.fv[lane] : util::neg_inf();
  i = lane < nw ? sh.iv[lane] : SAMPLE_INT_MAX;
  for (int o = 16; o > 0; o >>= 1) {
    float ov = __shfl_xor_sync(SAMPLE_FULL, v, o);
    int oi = __shfl_xor_sync(SAMPLE_FULL, i, o);
    if (better(ov, oi, v, i)) { v = ov; i = oi; }
  }
}

// Block-wide sums of SAMPLE_NPROBE doubles, in a fixed order (every thread gets the same bits).
__device__ __forceinline__ void block_sum_multi(double* acc, Shared& sh) {
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
  for (int p = 0; p < SAMPLE_NPROBE; ++p) acc[p] = warp_sum_d(acc[p]);
  __syncthreads();
  if (lane == 0) {
#pragma unroll
    for (int p = 0; p < SAMPLE_NPROBE; ++p) sh.dred[p][warp] = acc[p];
  }
  __syncthreads();
  for (int p = warp; p < SAMPLE_NPROBE; p += nw) {
    double v = lane < nw ? sh.dred[p][lane] : 0.0;
    v = warp_sum_d(v);
    if (lane == 0) sh.dtot[p] = v;
  }
  __syncthreads();
#pragma unroll
  for (int p = 0; p < SAMPLE_NPROBE; ++p) acc[p] = sh.dtot[p];
}

__device__ __forceinline__ double block_sum_d(double v, Shared& sh) {
  double acc[SAMPLE_NPROBE];
  acc[0] = v;
#pragma unroll
  for (int p = 1; p < SAMPLE_NPROBE; ++p) acc[p] = 0.0;
  block_sum_multi(acc, sh);
  return acc[0];
}

// The row is split into one contiguous chunk per warp (a multiple of 32 long); lane l of a warp
// visits chunk_start + l, + 32, ... — coalesced, and index order is (warp, step, lane).
struct Chunks {
  int start, end;  // this warp's chunk [start, end)
  int lane, warp;
  __device__ Chunks(int vocab) {
    lane = threadIdx.x & 31;
    warp = threadIdx.x >> 5;
    int nw = blockDim.x >> 5;
    int cw = ((vocab + nw - 1) / nw + 31) & ~31;
    start = min(vocab, warp * cw);
    end = min(vocab, start + cw);
  }
};

// The index of the n-th (1-based) element, in index order, for which pred(i) holds; -1 when
// there are fewer. pred must give the same answer every time it is asked.
template <class Pred>
__device__ int find_nth(const Chunks& ch, Pred pred, int n, Shared& sh) {
  int lane = ch.lane, warp = ch.warp, nw = blockDim.x >> 5;
  int c = 0;
  for (int i = ch.start + lane; i < ch.end; i += 32) c += pred(i) ? 1 : 0;
  c = warp_sum_i(c);
  __syncthreads();
  if (lane == 0) sh.iv[warp] = c;
  __syncthreads();
  if (threadIdx.x == 0) {
    int before = 0, sel = -1;
    for (int w = 0; w < nw; ++w) {
      if (n > before && n <= before + sh.iv[w]) { sel = w; break; }
      before += sh.iv[w];
    }
    sh.res[0] = sel;
    sh.res[1] = n - before;
    sh.res[2] = -1;
  }
  __syncthreads();
  if (warp == sh.res[0]) {
    int rem = sh.res[1];
    int found = -1;
    for (int base = ch.start; base < ch.end; base += 32) {
      int i = base + lane;
      bool p = i < ch.end && pred(i);
      unsigned mask = __ballot_sync(SAMPLE_FULL, p);
      int pc = __popc(mask);
      if (rem <= pc) {
        for (int t = 1; t < rem; ++t) mask &= mask - 1;
        found = base + __ffs(mask) - 1;
        break;
      }
      rem -= pc;
    }
    if (lane == 0) sh.res[2] = found;
  }
  __syncthreads();
  int r = sh.res[2];
  __syncthreads();
  return r;
}

// Largest bit pattern t in [0, 0x3f800000] (weights are in [0, 1]) with F(t) >= target, where
// F(t) = block sum of contrib(i) over elements whose weight bits are >= t (non-increasing in t)
// and F(0) >= target is assumed. Also returns F(t + 1) in *above. 8-ary search: ~10 passes.
template <class Contrib>
__device__ unsigned search_threshold(const Chunks& ch, Contrib contrib, double target, double* above, Shared& sh) {
  unsigned lo = 0, hi = 0x3f800001u;
  double f_hi = 0.0;
  while (hi - lo > 1) {
    unsigned probe[SAMPLE_NPROBE];
    double acc[SAMPLE_NPROBE];
#pragma unroll
    for (int p = 0; p < SAMPLE_NPROBE; ++p) {
      probe[p] = lo + (unsigned)(((unsigned long long)(hi - lo) * (unsigned)(p + 1)) / (SAMPLE_NPROBE + 1));
      acc[p] = 0.0;
    }
    for (int i = ch.start + ch.lane; i < ch.end; i += 32) {
      unsigned b;
      double c = contrib(i, b);
#pragma unroll
      for (int p = 0; p < SAMPLE_NPROBE; ++p) acc[p] += b >= probe[p] ? c : 0.0;
    }
    block_sum_multi(acc, sh);
    unsigned nlo = lo, nhi = hi;
    double nf = f_hi;
#pragma unroll
    for (int p = 0; p < SAMPLE_NPROBE; ++p) {
      if (probe[p] >= nhi) continue;
      if (acc[p] >= target) {
        if (probe[p] > nlo) nlo = probe[p];
      } else {
        nhi = probe[p];
        nf = acc[p];
      }
    }
    lo = nlo;
    hi = nhi;
    f_hi = nf;
  }
  *above = f_hi;
  return lo;
}

}  // namespace sampling

extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_rows(const float* __restrict__ logits, float* work, const SampleParams* __restrict__ params,
                const PenaltyEntry* __restrict__ penalties, int n_penalties,
                const unsigned* __restrict__ allowed, int mask_words, int vocab, int* __restrict__ out_token,
                float* __restrict__ out_logprob, int* __restrict__ top_ids, float* __restrict__ top_logprobs) {
  using namespace sampling;
  __shared__ Shared sh;
  __shared__ float s_tmax[SAMPLE_THREADS];
  __shared__ float s_ckey[SAMPLE_CAND_CAP];
  __shared__ int s_cidx[SAMPLE_CAND_CAP];
  __shared__ int s_cnt;
  __shared__ float s_thr;

  const int r = blockIdx.x;
  const int tid = threadIdx.x;
  const SampleParams P = params[r];
  const float* x = logits + (i64)r * vocab;
  float* wk = work ? work + (i64)r * vocab : nullptr;
  const Chunks ch(vocab);

  int pen_begin = min(max(P.pen_offset, 0), n_penalties);
  int pen_end = min(pen_begin + max(P.pen_count, 0), n_penalties);
  const unsigned* mask = allowed != nullptr && P.mask_row >= 0 && mask_words > 0 ? allowed + (i64)P.mask_row * mask_words : nullptr;
  auto permitted = [&](int i) -> bool { return mask == nullptr || ((i >> 5) < mask_words && ((mask[i >> 5] >> (i & 31)) & 1u)); };
  // A masked row is sampled from the scratch copy, like a penalized one.
  const bool pen = wk != nullptr && (pen_end > pen_begin || mask != nullptr);

  // Pass 1: raw max and argmax (ties to the lowest index); the scratch copy when penalized.
  float bv = util::neg_inf();
  int bi = SAMPLE_INT_MAX;
  for (int i = ch.start + ch.lane; i < ch.end; i += 32) {
    float v = sanitize(x[i]);
    if (pen) wk[i] = permitted(i) ? v : util::neg_inf();
    if (better(v, i, bv, bi)) { bv = v; bi = i; }
  }
  s_tmax[tid] = bv;
  block_best(bv, bi, sh);
  const float m_raw = bv;
  const bool all_neg_inf = !(m_raw > util::neg_inf());

  // Pass 2: log-sum-exp of the raw logits (f64).
  double s = 0.0;
  if (!all_neg_inf) {
    for (int i = ch.start + ch.lane; i < ch.end; i += 32) s += exp((double)sanitize(x[i]) - (double)m_raw);
  }
  s = block_sum_d(s, sh);
  const double lse = all_neg_inf ? neg_inf_d() : (double)m_raw + log(s);
  auto logprob = [&](int i) -> float {
    return all_neg_inf ? util::neg_inf() : (float)((double)sanitize(x[i]) - lse);
  };
  auto key = [&](int i) -> float {  // the logprob as an order key: NaN ranks as -inf
    return sanitize(logprob(i));
  };

  // Penalties into the scratch row.
  if (pen) {
    __syncthreads();
    for (int e = pen_begin + tid; e < pen_end; e += blockDim.x) {
      PenaltyEntry pe = penalties[e];
      if (pe.token < 0 || pe.token >= vocab || !permitted(pe.token)) continue;
      float l = sanitize(x[pe.token]);
      float rep = P.repetition_penalty;
      if (rep != 1.f) l = l > 0.f ? l / rep : __fmul_rn(l, rep);
      if (pe.output_count > 0) {
        float sub = __fadd_rn(__fmul_rn(P.frequency_penalty, (float)pe.output_count), P.presence_penalty);
        l = __fsub_rn(l, sub);
      }
      wk[pe.token] = sanitize(l);
    }
    __syncthreads();
  }
  auto val = [&](int i) -> float { return pen ? wk[i] : sanitize(x[i]); };

  // Greedy: argmax of the penalized row.
  float m = m_raw;
  int token = bi;
  if (pen) {
    float pv = util::neg_inf();
    int pi = SAMPLE_INT_MAX;
    for (int i = ch.start + ch.lane; i < ch.end; i += 32) {
      float v = wk[i];
      if (better(v, i, pv, pi)) { pv = v; pi = i; }
    }
    block_best(pv, pi, sh);
    m = pv;
    token = pi;
  }
  if (token < 0 || token >= vocab) token = 0;

  const bool do_sample = P.temperature > 0.f && P.top_k != 1 && m > util::neg_inf();
  if (do_sample) {
    const float inv_t = 1.f / P.temperature;
    auto weight = [&](int i) -> float {
      float v = val(i);
      float w = v == m ? 1.f : expf((v - m) * inv_t);
      return w == w ? w : 0.f;  // in [0, 1]
    };
    // Thresholds, all "keep everything" until set: weight bits > b, or == b with index <= cut.
    unsigned kb = 0u, pb = 0u;
    int kcut = SAMPLE_INT_MAX, pcut = SAMPLE_INT_MAX;
    const float minp = P.min_p > 0.f ? __fmul_rn(P.min_p, 1.f) : 0.f;

    // Top-k: the k-th largest weight, then the lowest-index ties up to k.
    if (P.top_k > 0 && P.top_k < vocab) {
      double gt;
      auto count = [&](int i, unsigned& b) -> double {
        b = __float_as_uint(weight(i));
        return 1.0;
      };
      kb = search_threshold(ch, count, (double)P.top_k, &gt, sh);
      int need = P.top_k - (int)gt;
      int cut = find_nth(ch, [&](int i) { return __float_as_uint(weight(i)) == kb; }, need, sh);
      kcut = cut >= 0 ? cut : SAMPLE_INT_MAX;
    }
    auto keep1 = [&](int i, float w) -> bool {
      unsigned b = __float_as_uint(w);
      return (b > kb || (b == kb && i <= kcut)) && w >= minp;
    };

    // Top-p: the smallest (w desc, index asc) prefix of the candidates reaching top_p * total.
    if (P.top_p < 1.f) {
      double t = 0.0;
      for (int i = ch.start + ch.lane; i < ch.end; i += 32) {
        float w = weight(i);
        if (keep1(i, w)) t += (double)w;
      }
      const double total = block_sum_d(t, sh);
      const double target = (double)P.top_p * total;
      if (target > 0.0) {
        double s_gt;
        auto mass = [&](int i, unsigned& b) -> double {
          float w = weight(i);
          b = __float_as_uint(w);
          return keep1(i, w) ? (double)w : 0.0;
        };
        pb = search_threshold(ch, mass, target, &s_gt, sh);
        const double wc = (double)__uint_as_float(pb);
        if (wc > 0.0) {
          double jd = ceil((target - s_gt) / wc);
          int j = jd < 1.0 ? 1 : (jd > (double)vocab ? vocab : (int)jd);
          while (j > 1 && s_gt + (double)(j - 1) * wc >= target) --j;
          const unsigned pbv = pb;
          int cut = find_nth(ch, [&](int i) {
            float w = weight(i);
            return __float_as_uint(w) == pbv && keep1(i, w);
          }, j, sh);
          pcut = cut >= 0 ? cut : SAMPLE_INT_MAX;
        }
      }
    }
    auto keep = [&](int i, float w) -> bool {
      unsigned b = __float_as_uint(w);
      return keep1(i, w) && (b > pb || (b == pb && i <= pcut));
    };

    // Inverse CDF in index order: per-warp masses, then the chosen warp walks its chunk.
    double ws = 0.0;
    int last = -1;
    for (int i = ch.start + ch.lane; i < ch.end; i += 32) {
      float w = weight(i);
      if (keep(i, w)) {
        ws += (double)w;
        last = i;
      }
    }
    ws = warp_sum_d(ws);
    last = warp_max_i(last);
    __syncthreads();
    if (ch.lane == 0) {
      sh.wsum[ch.warp] = ws;
      sh.wlast[ch.warp] = last;
    }
    __syncthreads();
    if (tid == 0) {
      int nw = blockDim.x >> 5;
      double total = 0.0;
      int last_all = -1;
      for (int w = 0; w < nw; ++w) {
        total += sh.wsum[w];
        last_all = max(last_all, sh.wlast[w]);
      }
      double target = (double)P.u * total;
      double acc = 0.0;
      int sel = -1;
      for (int w = 0; w < nw; ++w) {
        if (sh.wsum[w] > 0.0 && target < acc + sh.wsum[w]) { sel = w; break; }
        acc += sh.wsum[w];
      }
      sh.res[0] = sel;
      sh.res[1] = last_all;
      sh.dtot[0] = target - acc;
    }
    __syncthreads();
    const int sel = sh.res[0];
    int picked = sh.res[1];  // fallback: the last kept token
    if (ch.warp == sel) {
      double rem = sh.dtot[0];
      int found = -1;
      for (int base = ch.start; base < ch.end; base += 32) {
        int i = base + ch.lane;
        double v = 0.0;
        if (i < ch.end) {
          float w = weight(i);
          if (keep(i, w)) v = (double)w;
        }
        double c = v;  // inclusive prefix over the lanes
        for (int o = 1; o < 32; o <<= 1) {
          double t = __shfl_up_sync(SAMPLE_FULL, c, o);
          if (ch.lane >= o) c += t;
        }
        unsigned mask = __ballot_sync(SAMPLE_FULL, v > 0.0 && rem < c);
        if (mask) {
          found = base + __ffs(mask) - 1;
          break;
        }
        rem -= __shfl_sync(SAMPLE_FULL, c, 31);
      }
      if (ch.lane == 0) sh.res[2] = found >= 0 ? found : sh.wlast[sel];
    }
    __syncthreads();
    if (sel >= 0) picked = sh.res[2];
    token = picked >= 0 && picked < vocab ? picked : token;
    __syncthreads();
  }

  if (tid == 0) {
    out_token[r] = token;
    out_logprob[r] = logprob(token);
  }

  // Top logprobs of the raw distribution.
  const int n_top = min(max(P.n_logprobs, 0), min(SAMPLE_MAX_TOP, vocab));
  int* ids = top_ids + (i64)r * SAMPLE_MAX_TOP;
  float* lps = top_logprobs + (i64)r * SAMPLE_MAX_TOP;
  if (n_top == 0) return;
  if (all_neg_inf) {
    if (tid < n_top) {
      ids[tid] = tid;
      lps[tid] = util::neg_inf();
    }
    return;
  }
  // Every one of the n best has a raw logit >= the n-th largest of the per-thread maxima, so
  // those with a logprob >= its logprob are candidates (usually a few dozen).
  if (tid == 0) {
    s_thr = util::neg_inf();
    s_cnt = 0;
  }
  __syncthreads();
  {
    float mine = s_tmax[tid];
    int gt = 0, ge = 0;
    for (int j = 0; j < (int)blockDim.x; ++j) {
      float o = s_tmax[j];
      gt += o > mine ? 1 : 0;
      ge += o >= mine ? 1 : 0;
    }
    if (gt < n_top && n_top <= ge) s_thr = mine;  // all writers write the same value
  }
  __syncthreads();
  const float thr = s_thr;
  const float key_thr = all_neg_inf ? util::neg_inf() : sanitize((float)((double)thr - lse));
  for (int i = ch.start + ch.lane; i < ch.end; i += 32) {
    float k = key(i);
    if (k >= key_thr) {
      int pos = atomicAdd(&s_cnt, 1);
      if (pos < SAMPLE_CAND_CAP) {
        s_ckey[pos] = k;
        s_cidx[pos] = i;
      }
    }
  }
  __syncthreads();
  const int cnt = s_cnt;
  if (cnt >= n_top && cnt <= SAMPLE_CAND_CAP) {
    for (int c = tid; c < cnt; c += blockDim.x) {
      float kc = s_ckey[c];
      int ic = s_cidx[c];
      int rank = 0;
      for (int d = 0; d < cnt; ++d) rank += better(s_ckey[d], s_cidx[d], kc, ic) ? 1 : 0;
      if (rank < n_top) {
        ids[rank] = ic;
        lps[rank] = logprob(ic);
      }
    }
    return;
  }
  // Fallback (heavy ties): n rounds, each the best element after the previous pick.
  float pk = __int_as_float(0x7f800000);
  int pi = -1;
  for (int t = 0; t < n_top; ++t) {
    float bk = util::neg_inf();
    int bidx = SAMPLE_INT_MAX;
    for (int i = ch.start + ch.lane; i < ch.end; i += 32) {
      float k = key(i);
      bool after = k < pk || (k == pk && i > pi);
      if (after && better(k, i, bk, bidx)) { bk = k; bidx = i; }
    }
    block_best(bk, bidx, sh);
    if (tid == 0) {
      bool ok = bidx >= 0 && bidx < vocab;
      ids[t] = ok ? bidx : -1;
      lps[t] = ok ? logprob(bidx) : util::neg_inf();
    }
    pk = bk;
    pi = bidx;
  }
}

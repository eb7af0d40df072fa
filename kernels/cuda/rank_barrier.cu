// Emulated ranks on ONE GPU whose collectives can be captured into CUDA graphs (a test backend,
// host/cuda/src/collective_graphs.rs): every rank runs on its own stream of the same context, so
// each can read and write the others' buffers directly. A collective is: publish this rank's
// buffer address in the group's table and meet the others (rank_meet), move or sum the data,
// meet again (so no rank touches its buffer while another still reads it). Every address is
// read from the table at run time, so a rank's graph never bakes in another rank's buffer.
#include "util.cuh"

// The group's shared words: [0] arrivals so far, [1] set when a rank gave up (a peer timed out
// or failed): the others stop waiting, and the step's output is not to be trusted.
// `epoch`: this rank's own count of meetings. A meeting ends when every rank has arrived
// epoch times (arrivals >= epoch * world), so the same words serve every meeting in turn.
extern "C" __global__ void rank_meet(unsigned long long* shared, unsigned long long* epoch, unsigned long long* table, int rank,
                                     unsigned long long ptr, int world) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  if (table) table[rank] = ptr;
  const unsigned long long target = (*epoch + 1) * (unsigned long long)world;
  *epoch += 1;
  __threadfence();  // this rank's data and table entry before its arrival
  atomicAdd(&shared[0], 1ull);
  long long start = clock64();
  while (atomicAdd(&shared[0], 0ull) < target) {
    if (atomicAdd(&shared[1], 0ull) != 0) return;
    if (clock64() - start > (1ll << 35)) {  // ~20 s: a peer is gone
      atomicExch(&shared[1], 1ull);
      return;
    }
    __nanosleep(200);
  }
  __threadfence();
}

// In place, every rank at once: rank r sums chunk r (elements [r n / world, (r + 1) n / world))
// over every rank's buffer, in rank order, and writes the sum into that chunk of every buffer.
// The chunks are disjoint, so no rank writes what another reads.
extern "C" __global__ void rank_all_reduce(const unsigned long long* table, int rank, int world, int n) {
  const i64 lo = (i64)n * rank / world, hi = (i64)n * (rank + 1) / world;
  for (i64 k = lo + blockIdx.x * (i64)blockDim.x + threadIdx.x; k < hi; k += (i64)gridDim.x * blockDim.x) {
    float s = reinterpret_cast<const float*>(table[0])[k];
    for (int r = 1; r < world; ++r) s += reinterpret_cast<const float*>(table[r])[k];
    for (int r = 0; r < world; ++r) reinterpret_cast<float*>(table[r])[k] = s;
  }
}

// In place: slot `rank` (n floats) of this rank's buffer copied into slot `rank` of every other.
extern "C" __global__ void rank_all_gather(const unsigned long long* table, int rank, int world, int n) {
  const float* src = reinterpret_cast<const float*>(table[rank]) + (i64)rank * n;
  for (i64 k = blockIdx.x * (i64)blockDim.x + threadIdx.x; k < n; k += (i64)gridDim.x * blockDim.x) {
    const float v = src[k];
    for (int r = 0; r < world; ++r)
      if (r != rank) reinterpret_cast<float*>(table[r])[(i64)rank * n + k] = v;
  }
}

// In place: slot `rank` of this rank's buffer becomes the sum, in rank order, of slot `rank` of
// every buffer (the other ranks read their own slots only).
extern "C" __global__ void rank_reduce_scatter(const unsigned long long* table, int rank, int world, int n) {
  for (i64 k = blockIdx.x * (i64)blockDim.x + threadIdx.x; k < n; k += (i64)gridDim.x * blockDim.x) {
    const i64 at = (i64)rank * n + k;
    float s = reinterpret_cast<const float*>(table[0])[at];
    for (int r = 1; r < world; ++r) s += reinterpret_cast<const float*>(table[r])[at];
    reinterpret_cast<float*>(table[rank])[at] = s;
  }
}

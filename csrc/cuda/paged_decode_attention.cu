// Paged decode attention for CUDA: one query token per sequence over the paged KV cache, GQA,
// fp16 / bf16 / fp32 storage with fp32 math, split over the context with a reduce.
//
// Compiled at run time by NVRTC (kernels/cuda_ops.py, one instantiation per dtype / head_dim /
// group), so this file includes nothing: conversions are bit operations and PTX, vector types
// and intrinsics are NVRTC builtins. `nvcc --ptx -DSWIFTSERVE_COMPILE_CHECK` builds the explicit
// instantiations at the end (the CI compile test).
//
// Cache layout [num_blocks, block_size, num_kv_heads, head_dim]; position pos of sequence s is in
// block block_tables[s][pos / block_size] at offset pos % block_size.
//
// Grid (num_partitions, num_kv_heads, num_seqs), kThreads threads. A thread block takes one KV
// head of one sequence and one partition of kPartition context tokens, for all GROUP query
// heads of that KV head, so each K/V row is read from memory once per group (GQA):
//   1. scores[h][t] = q_h . k_t * scale   8 lanes per token, 16 tokens per pass, lanes reduce
//   2. softmax over the partition         one warp per head: max, exp, sum
//   3. acc[h][:] += p[h][t] * v_t          one warp per token (4 at a time), lanes over head_dim
// With one partition the block writes the output; otherwise it writes (max, sum, acc) and
// paged_decode_attention_reduce merges the partitions:
//   out = sum_p e^(m_p - M) acc_p / sum_p e^(m_p - M) l_p,   M = max_p m_p

typedef unsigned short u16;
typedef unsigned int u32;

namespace swiftserve {

enum DType { kFloat16 = 0, kBFloat16 = 1, kFloat32 = 2 };

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kPartition = 256;      // context tokens per thread block
constexpr int kLanesPerToken = 8;    // phase 1: lanes sharing one token's dot products
constexpr int kTokensPerPass = kThreads / kLanesPerToken;

template <int DTYPE>
struct Storage {
  typedef u16 type;
};
template <>
struct Storage<kFloat32> {
  typedef float type;
};

__device__ __forceinline__ float to_float(u16 x, int dtype) {
  if (dtype == kBFloat16) return __uint_as_float(static_cast<u32>(x) << 16);
  float f;
  asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x));
  return f;
}

template <int DTYPE>
__device__ __forceinline__ float to_float(typename Storage<DTYPE>::type x) {
  if constexpr (DTYPE == kFloat32) {
    return x;
  } else {
    return to_float(x, DTYPE);
  }
}

template <int DTYPE>
__device__ __forceinline__ typename Storage<DTYPE>::type from_float(float f) {
  if constexpr (DTYPE == kFloat32) {
    return f;
  } else if constexpr (DTYPE == kBFloat16) {
    u32 bits = __float_as_uint(f);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<u16>((bits >> 16) | 0x40u);  // quiet NaN
    bits += 0x7fffu + ((bits >> 16) & 1u);  // round to nearest even
    return static_cast<u16>(bits >> 16);
  } else {
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
  }
}

// The widest aligned load for a run of bytes.
template <int BYTES>
struct Chunk;
template <>
struct Chunk<2> {
  typedef u16 type;
};
template <>
struct Chunk<4> {
  typedef u32 type;
};
template <>
struct Chunk<8> {
  typedef uint2 type;
};
template <>
struct Chunk<16> {
  typedef uint4 type;
};

// N consecutive elements at p (aligned to their size, at most 16 bytes) widened to fp32.
template <int DTYPE, int N>
__device__ __forceinline__ void load_floats(const typename Storage<DTYPE>::type* p, float (&out)[N]) {
  typedef typename Storage<DTYPE>::type T;
  constexpr int kBytes = N * static_cast<int>(sizeof(T));
  constexpr int kChunkBytes = kBytes < 16 ? kBytes : 16;
  constexpr int kPerChunk = kChunkBytes / static_cast<int>(sizeof(T));
  typedef typename Chunk<kChunkBytes>::type C;
#pragma unroll
  for (int c = 0; c < N / kPerChunk; ++c) {
    const C raw = reinterpret_cast<const C*>(p)[c];
    const T* elems = reinterpret_cast<const T*>(&raw);
#pragma unroll
    for (int i = 0; i < kPerChunk; ++i) out[c * kPerChunk + i] = to_float<DTYPE>(elems[i]);
  }
}

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, offset));
  return x;
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) x += __shfl_xor_sync(0xffffffffu, x, offset);
  return x;
}

struct DecodeParams {
  void* out;                  // [num_seqs, num_heads, head_dim], contiguous
  float* partial_out;         // [num_seqs, num_heads, num_partitions, head_dim]
  float* partial_max;         // [num_seqs, num_heads, num_partitions]
  float* partial_sum;         // [num_seqs, num_heads, num_partitions]
  const void* q;              // [num_seqs, num_heads, head_dim], strides below
  const void* k_cache;
  const void* v_cache;
  const int* block_tables;    // [num_seqs, max_blocks_per_seq]
  const int* context_lens;    // [num_seqs]
  long long q_stride_seq, q_stride_head;
  long long kv_stride_block, kv_stride_token, kv_stride_head;
  int num_heads, block_size, max_blocks_per_seq, num_partitions;
  int sliding_window;         // <= 0: none
  float scale;
};

template <int DTYPE, int HEAD_DIM, int GROUP>
__device__ __forceinline__ void decode_partition(const DecodeParams& p) {
  typedef typename Storage<DTYPE>::type T;
  static_assert(HEAD_DIM % 32 == 0 && HEAD_DIM <= 256, "head_dim: a multiple of 32 up to 256");
  constexpr int kDimsPerLaneQK = HEAD_DIM / kLanesPerToken;
  constexpr int kDimsPerLanePV = HEAD_DIM / 32;
  const float kNegInf = -__int_as_float(0x7f800000);

  __shared__ float scores[GROUP][kPartition];  // scores, then probabilities
  __shared__ float rows[GROUP][HEAD_DIM];      // scaled q (phase 1), then the output sum (phase 3)
  __shared__ float row_max[GROUP], row_sum[GROUP];

  const int part = blockIdx.x, kv_head = blockIdx.y, seq = blockIdx.z;
  const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
  const int ctx = p.context_lens[seq];
  const int start = p.sliding_window > 0 ? max(0, ctx - p.sliding_window) : 0;
  const int lo = start + part * kPartition;
  const int n = min(ctx, lo + kPartition) - lo;  // tokens of this partition, may be <= 0
  const int first_head = kv_head * GROUP;
  const long long row0 = (static_cast<long long>(seq) * p.num_heads + first_head);  // (seq, head) row index
  const bool split = p.num_partitions > 1;

  if (n <= 0) {  // past the context: an empty partition (or an empty context: zeros)
    if (split) {
      for (int h = tid; h < GROUP; h += kThreads) {
        p.partial_max[(row0 + h) * p.num_partitions + part] = kNegInf;
        p.partial_sum[(row0 + h) * p.num_partitions + part] = 0.0f;
      }
    } else {
      for (int i = tid; i < GROUP * HEAD_DIM; i += kThreads)
        static_cast<T*>(p.out)[row0 * HEAD_DIM + i] = from_float<DTYPE>(0.0f);
    }
    return;
  }

  const T* q = static_cast<const T*>(p.q) + seq * p.q_stride_seq;
  for (int i = tid; i < GROUP * HEAD_DIM; i += kThreads) {
    const int h = i / HEAD_DIM, d = i % HEAD_DIM;
    rows[h][d] = to_float<DTYPE>(q[(first_head + h) * p.q_stride_head + d]) * p.scale;
  }
  __syncthreads();

  const int* table = p.block_tables + static_cast<long long>(seq) * p.max_blocks_per_seq;
  const T* k_cache = static_cast<const T*>(p.k_cache) + kv_head * p.kv_stride_head;
  const T* v_cache = static_cast<const T*>(p.v_cache) + kv_head * p.kv_stride_head;
  auto row_offset = [&](int pos) {
    return static_cast<long long>(table[pos / p.block_size]) * p.kv_stride_block +
           static_cast<long long>(pos % p.block_size) * p.kv_stride_token;
  };

  // 1. Scores. Every thread runs the same trip count, so the shuffles see full warps.
  const int sub = tid % kLanesPerToken, slot = tid / kLanesPerToken;
  for (int t0 = 0; t0 < n; t0 += kTokensPerPass) {
    const int t = t0 + slot;
    float k[kDimsPerLaneQK];
    if (t < n) {
      load_floats<DTYPE, kDimsPerLaneQK>(k_cache + row_offset(lo + t) + sub * kDimsPerLaneQK, k);
    } else {
#pragma unroll
      for (int i = 0; i < kDimsPerLaneQK; ++i) k[i] = 0.0f;
    }
#pragma unroll
    for (int h = 0; h < GROUP; ++h) {
      float dot = 0.0f;
#pragma unroll
      for (int i = 0; i < kDimsPerLaneQK; ++i) dot += rows[h][sub * kDimsPerLaneQK + i] * k[i];
#pragma unroll
      for (int offset = kLanesPerToken / 2; offset > 0; offset /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
      if (t < n && sub == 0) scores[h][t] = dot;
    }
  }
  __syncthreads();

  // 2. Softmax over the partition, one warp per head; then clear rows for the output sums.
  for (int h = warp; h < GROUP; h += kWarps) {
    float m = kNegInf;
    for (int t = lane; t < n; t += 32) m = fmaxf(m, scores[h][t]);
    m = warp_max(m);
    float sum = 0.0f;
    for (int t = lane; t < n; t += 32) {
      const float e = __expf(scores[h][t] - m);
      scores[h][t] = e;
      sum += e;
    }
    sum = warp_sum(sum);
    if (lane == 0) {
      row_max[h] = m;
      row_sum[h] = sum;
    }
  }
  for (int i = tid; i < GROUP * HEAD_DIM; i += kThreads) rows[i / HEAD_DIM][i % HEAD_DIM] = 0.0f;
  __syncthreads();

  // 3. P V: warp w takes tokens w, w + kWarps, ...; lane l owns dims [l * kDimsPerLanePV, ...).
  float acc[GROUP][kDimsPerLanePV];
#pragma unroll
  for (int h = 0; h < GROUP; ++h)
#pragma unroll
    for (int i = 0; i < kDimsPerLanePV; ++i) acc[h][i] = 0.0f;
  for (int t = warp; t < n; t += kWarps) {
    float v[kDimsPerLanePV];
    load_floats<DTYPE, kDimsPerLanePV>(v_cache + row_offset(lo + t) + lane * kDimsPerLanePV, v);
#pragma unroll
    for (int h = 0; h < GROUP; ++h) {
      const float prob = scores[h][t];
#pragma unroll
      for (int i = 0; i < kDimsPerLanePV; ++i) acc[h][i] += prob * v[i];
    }
  }
#pragma unroll
  for (int h = 0; h < GROUP; ++h)
#pragma unroll
    for (int i = 0; i < kDimsPerLanePV; ++i) atomicAdd(&rows[h][lane * kDimsPerLanePV + i], acc[h][i]);
  __syncthreads();

  for (int i = tid; i < GROUP * HEAD_DIM; i += kThreads) {
    const int h = i / HEAD_DIM, d = i % HEAD_DIM;
    if (split) {
      p.partial_out[((row0 + h) * p.num_partitions + part) * HEAD_DIM + d] = rows[h][d];
    } else {
      static_cast<T*>(p.out)[(row0 + h) * HEAD_DIM + d] = from_float<DTYPE>(rows[h][d] / row_sum[h]);
    }
  }
  if (split && tid < GROUP) {
    p.partial_max[(row0 + tid) * p.num_partitions + part] = row_max[tid];
    p.partial_sum[(row0 + tid) * p.num_partitions + part] = row_sum[tid];
  }
}

// Merges the partitions of one (sequence, head): grid (num_heads, num_seqs), kThreads threads.
template <int DTYPE, int HEAD_DIM>
__device__ __forceinline__ void reduce_partitions(const DecodeParams& p) {
  typedef typename Storage<DTYPE>::type T;
  const long long row = static_cast<long long>(blockIdx.y) * p.num_heads + blockIdx.x;
  const float* maxes = p.partial_max + row * p.num_partitions;
  const float* sums = p.partial_sum + row * p.num_partitions;
  float global_max = -__int_as_float(0x7f800000);
  for (int i = 0; i < p.num_partitions; ++i)
    if (sums[i] > 0.0f) global_max = fmaxf(global_max, maxes[i]);
  float denom = 0.0f;
  for (int i = 0; i < p.num_partitions; ++i)
    if (sums[i] > 0.0f) denom += __expf(maxes[i] - global_max) * sums[i];
  const float inv = denom > 0.0f ? 1.0f / denom : 0.0f;
  for (int d = threadIdx.x; d < HEAD_DIM; d += kThreads) {
    float acc = 0.0f;
    for (int i = 0; i < p.num_partitions; ++i)
      if (sums[i] > 0.0f) acc += __expf(maxes[i] - global_max) * p.partial_out[(row * p.num_partitions + i) * HEAD_DIM + d];
    static_cast<T*>(p.out)[row * HEAD_DIM + d] = from_float<DTYPE>(acc * inv);
  }
}

}  // namespace swiftserve

// Kernel parameters, in the order kernels/cuda_ops.py passes them (pointers, strides, sizes).
#define SWIFTSERVE_DECODE_PARAMS                                                                     \
  void *out, float *partial_out, float *partial_max, float *partial_sum, const void *q,              \
      const void *k_cache, const void *v_cache, const int *block_tables, const int *context_lens,    \
      long long q_stride_seq, long long q_stride_head, long long kv_stride_block,                     \
      long long kv_stride_token, long long kv_stride_head, int num_heads, int block_size,             \
      int max_blocks_per_seq, int num_partitions, int sliding_window, float scale
#define SWIFTSERVE_DECODE_ARGS                                                                       \
  swiftserve::DecodeParams {                                                                         \
    out, partial_out, partial_max, partial_sum, q, k_cache, v_cache, block_tables, context_lens,     \
        q_stride_seq, q_stride_head, kv_stride_block, kv_stride_token, kv_stride_head, num_heads,    \
        block_size, max_blocks_per_seq, num_partitions, sliding_window, scale                        \
  }

template <int DTYPE, int HEAD_DIM, int GROUP>
__global__ void __launch_bounds__(swiftserve::kThreads) paged_decode_attention(SWIFTSERVE_DECODE_PARAMS) {
  swiftserve::decode_partition<DTYPE, HEAD_DIM, GROUP>(SWIFTSERVE_DECODE_ARGS);
}

template <int DTYPE, int HEAD_DIM>
__global__ void __launch_bounds__(swiftserve::kThreads) paged_decode_attention_reduce(SWIFTSERVE_DECODE_PARAMS) {
  swiftserve::reduce_partitions<DTYPE, HEAD_DIM>(SWIFTSERVE_DECODE_ARGS);
}

#ifdef SWIFTSERVE_COMPILE_CHECK
// The shapes the tests and SmolLM2 use, so `nvcc --ptx` type-checks every code path.
template __global__ void paged_decode_attention<swiftserve::kBFloat16, 64, 3>(SWIFTSERVE_DECODE_PARAMS);
template __global__ void paged_decode_attention<swiftserve::kFloat16, 128, 8>(SWIFTSERVE_DECODE_PARAMS);
template __global__ void paged_decode_attention<swiftserve::kFloat32, 64, 1>(SWIFTSERVE_DECODE_PARAMS);
template __global__ void paged_decode_attention<swiftserve::kBFloat16, 256, 4>(SWIFTSERVE_DECODE_PARAMS);
template __global__ void paged_decode_attention_reduce<swiftserve::kBFloat16, 64>(SWIFTSERVE_DECODE_PARAMS);
template __global__ void paged_decode_attention_reduce<swiftserve::kFloat16, 128>(SWIFTSERVE_DECODE_PARAMS);
template __global__ void paged_decode_attention_reduce<swiftserve::kFloat32, 256>(SWIFTSERVE_DECODE_PARAMS);
#endif

// Paged attention on the CPU: decode (one query token per sequence) and varlen causal prefill,
// both over the paged KV cache. Raw pointers, element strides, no torch.
//
// Cache layout (flash-attn's): k_cache, v_cache [num_blocks, block_size, num_kv_heads, head_dim];
// the token at position `pos` of sequence s lives at block block_tables[s][pos / block_size],
// offset pos % block_size.
//
// Both kernels are built from one piece, RowAttention: a handful of query rows (the query heads
// of one KV-head group, times a few query tokens for prefill) walks a range of cached tokens in
// chunks of up to 16 tokens that sit in one block. Each K and V row is read once per chunk and
// used by every query row (GQA sharing); scores of a chunk form one 16-lane vector per row, so
// the online softmax (running max m, running sum l, rescaled accumulator) is vectorized over
// tokens. Work items (decode: sequence and context part; prefill: sequence, KV head and query
// tile) are spread over OpenMP threads.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "cpu/vec.h"

namespace swiftserve::cpu {

constexpr int kMaxRows = 32;      // query rows that share one pass over the cache

inline int max_threads() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

// The paged cache of one layer. Strides in elements; K and V share the layout.
struct PagedKV {
  const void* k_cache;
  const void* v_cache;
  int64_t stride_block, stride_token, stride_head;
  const int32_t* block_tables;  // [num_seqs, block_table_stride]
  int64_t block_table_stride;
  int block_size;
};

struct DecodeArgs {
  void* out;  // [num_seqs, num_heads, head_dim] with the strides below
  int64_t out_stride_seq, out_stride_head;
  const void* q;  // [num_seqs, num_heads, head_dim]
  int64_t q_stride_seq, q_stride_head;
  PagedKV kv;
  const int32_t* context_lens;  // [num_seqs], tokens in the cache including the query's own
  int num_seqs, num_heads, num_kv_heads, head_dim;
  float scale;
  int sliding_window;  // <= 0: none
};

struct PrefillArgs {
  void* out;  // [num_tokens, num_heads, head_dim]
  int64_t out_stride_token, out_stride_head;
  const void* q;  // [num_tokens, num_heads, head_dim], each sequence's new tokens back to back
  int64_t q_stride_token, q_stride_head;
  PagedKV kv;
  const int32_t* query_start_loc;  // [num_seqs + 1]
  const int32_t* context_lens;     // [num_seqs], including the new tokens
  int num_seqs, num_heads, num_kv_heads, head_dim;
  float scale;
  int sliding_window;
};

// First key position a query at `pos` may see.
inline int window_start(int pos, int sliding_window) {
  return sliding_window > 0 ? std::max(0, pos - sliding_window + 1) : 0;
}

// Online-softmax attention of up to kMaxRows query rows over cached tokens of one KV head.
// Row r may see key positions [row_lo[r], row_hi[r]); keys outside score -inf.
template <class Isa, class T, int kHeadDim>
struct RowAttention {
  using vec = typename Isa::vec;
  static constexpr int kVecs = kHeadDim / kLanes;
  // P V keeps a block of rows' accumulators in registers: about half the register file.
  static constexpr int kRowBlock = std::max(1, Isa::kRegisterFile / 2 / kVecs);

  explicit RowAttention(float softmax_scale) : scale(softmax_scale) {}

  int num_rows = 0;
  float scale;
  alignas(64) T q[kMaxRows][kHeadDim];  // as given: scores are (q . k) * scale, like the reference
  alignas(64) float acc[kMaxRows][kHeadDim];
  float m[kMaxRows], l[kMaxRows];
  int row_lo[kMaxRows], row_hi[kMaxRows];

  void clear() { num_rows = 0; }

  void add_row(const T* q_row, int lo, int hi) {
    const int r = num_rows++;
    std::copy(q_row, q_row + kHeadDim, q[r]);
    for (int i = 0; i < kVecs; ++i) Isa::store(acc[r] + i * kLanes, Isa::zero());
    m[r] = kNegInf;
    l[r] = 0.0f;
    row_lo[r] = lo;
    row_hi[r] = hi;
  }

  // Keys at positions [lo, hi) of one sequence for heads[0 .. num_heads), where heads[h] serves KV
  // head first_kv_head + h. The KV heads are visited inside each chunk, so a block's K and V rows
  // are read front to back (the cache interleaves heads within a token).
  static void run(RowAttention* heads, int num_heads, int first_kv_head, const PagedKV& kv, const int32_t* block_table,
                  int lo, int hi) {
    const T* k_cache = static_cast<const T*>(kv.k_cache) + first_kv_head * kv.stride_head;
    const T* v_cache = static_cast<const T*>(kv.v_cache) + first_kv_head * kv.stride_head;
    auto chunk_at = [&](int pos, int* n) {  // offset of the chunk starting at pos; *n its tokens
      const int offset = pos % kv.block_size;
      *n = std::min({kLanes, kv.block_size - offset, hi - pos});
      return block_table[pos / kv.block_size] * kv.stride_block + offset * kv.stride_token;
    };
    for (int pos = lo; pos < hi;) {
      int n, next_n = 0;
      const int64_t base = chunk_at(pos, &n);
      const int64_t next = pos + n < hi ? chunk_at(pos + n, &next_n) : 0;
      for (int h = 0; h < num_heads; ++h) {
        // Blocks lie at random places, so the hardware prefetcher cannot guess the next one: each
        // head asks for its K and V rows of the next chunk, then computes this one.
        const int64_t head_next = next + h * kv.stride_head;
        for (int t = 0; t < next_n; ++t)
          for (int i = 0; i < kHeadDim; i += 64 / sizeof(T)) {
            __builtin_prefetch(k_cache + head_next + t * kv.stride_token + i, 0, 1);
            __builtin_prefetch(v_cache + head_next + t * kv.stride_token + i, 0, 1);
          }
        heads[h].chunk(k_cache + base + h * kv.stride_head, v_cache + base + h * kv.stride_head, kv.stride_token, pos, n);
      }
      pos += n;
    }
  }

  // Writes row r's attention output (zeros when it saw no key).
  void finish_row(int r, T* out) const {
    const vec inv = Isa::set1(l[r] > 0.0f ? 1.0f / l[r] : 0.0f);
    for (int i = 0; i < kVecs; ++i) Isa::store(out + i * kLanes, Isa::mul(Isa::load(acc[r] + i * kLanes), inv));
  }

 private:
  // n <= 16 consecutive tokens at positions pos0.. whose rows are k, k + stride_token, ...
  void chunk(const T* k, const T* v, int64_t stride_token, int pos0, int n) {
    alignas(64) float s[kMaxRows][kLanes];  // scores, then probabilities
    for (int r = 0; r < num_rows; ++r)
      Isa::store(s[r], Isa::mul(Isa::template dot16<kHeadDim>(q[r], k, stride_token, n), Isa::set1(scale)));
    float alpha[kMaxRows];  // rescales a row's accumulator for its new running max
    for (int r = 0; r < num_rows; ++r) {
      // Lanes of tokens past n or outside the row's key range are masked to -inf.
      const int first = std::clamp(row_lo[r] - pos0, 0, n), last = std::clamp(row_hi[r] - pos0, first, n);
      if (first == last) {  // the row sees none of these tokens: leave it as it is
        alpha[r] = 1.0f;
        Isa::store(s[r], Isa::zero());
        continue;
      }
      for (int t = 0; t < first; ++t) s[r][t] = kNegInf;
      for (int t = last; t < kLanes; ++t) s[r][t] = kNegInf;
      const vec scores = Isa::load(s[r]);
      const float m_new = std::max(m[r], Isa::reduce_max(scores));
      alpha[r] = m_new == m[r] ? 1.0f : std::exp(m[r] - m_new);  // 0 on the row's first chunk
      const vec p = Isa::exp(Isa::sub(scores, Isa::set1(m_new)));
      Isa::store(s[r], p);
      l[r] = l[r] * alpha[r] + Isa::reduce_add(p);
      m[r] = m_new;
    }
    // P V: V rows are read once per block of rows whose accumulators stay in registers. With one
    // block of rows (decode: a KV head's query group) bf16 V rows are widened in registers as
    // they are loaded; with several, they are widened once into v32 for all blocks.
    if (std::is_same_v<T, float> || num_rows <= kRowBlock) {
      pv_all(v, stride_token, n, s, alpha);
    } else {
      alignas(64) float v32[kLanes][kHeadDim];
      for (int t = 0; t < n; ++t)
        for (int i = 0; i < kVecs; ++i) Isa::store(v32[t] + i * kLanes, Isa::load(v + t * stride_token + i * kLanes));
      pv_all(v32[0], static_cast<int64_t>(kHeadDim), n, s, alpha);
    }
  }

  template <class V>
  void pv_all(const V* v_rows, int64_t v_stride, int n, const float (*s)[kLanes], const float* alpha) {
    int r = 0;
    for (; r + kRowBlock <= num_rows; r += kRowBlock) pv_rows<kRowBlock>(r, v_rows, v_stride, n, s, alpha);
    switch (num_rows - r) {  // the last, partial block
      case 0: break;
#define SWIFTSERVE_PV_TAIL(NB) \
  case NB:                     \
    if constexpr (NB < kRowBlock) pv_rows<NB>(r, v_rows, v_stride, n, s, alpha); \
    break;
      SWIFTSERVE_PV_TAIL(1) SWIFTSERVE_PV_TAIL(2) SWIFTSERVE_PV_TAIL(3) SWIFTSERVE_PV_TAIL(4) SWIFTSERVE_PV_TAIL(5)
      SWIFTSERVE_PV_TAIL(6) SWIFTSERVE_PV_TAIL(7) SWIFTSERVE_PV_TAIL(8) SWIFTSERVE_PV_TAIL(9) SWIFTSERVE_PV_TAIL(10)
      SWIFTSERVE_PV_TAIL(11) SWIFTSERVE_PV_TAIL(12) SWIFTSERVE_PV_TAIL(13) SWIFTSERVE_PV_TAIL(14) SWIFTSERVE_PV_TAIL(15)
#undef SWIFTSERVE_PV_TAIL
    }
  }

  // Rows [r0, r0 + kRows): acc = acc * alpha + sum_t p[t] v_t, accumulators held in registers.
  template <int kRows, class V>
  void pv_rows(int r0, const V* v_rows, int64_t v_stride, int n, const float (*p)[kLanes], const float* alpha) {
    vec out[kRows][kVecs];
    for (int j = 0; j < kRows; ++j) {
      const vec a = Isa::set1(alpha[r0 + j]);
      for (int i = 0; i < kVecs; ++i) out[j][i] = Isa::mul(Isa::load(acc[r0 + j] + i * kLanes), a);
    }
    // v_t is held whole while it fits next to the accumulators; else (AVX2, whose 16 registers
    // hold one row of 64 accumulators and little more) it is used a piece at a time by every row
    // as it is loaded: 1.2-1.4x faster there than spilling, and slower for Generic.
    constexpr bool kHoldVt = (kRows + 1) * kVecs + 1 <= Isa::kRegisterFile;
    for (int t = 0; t < n; ++t) {
      if constexpr (kHoldVt) {
        vec vt[kVecs];
        for (int i = 0; i < kVecs; ++i) vt[i] = Isa::load(v_rows + t * v_stride + i * kLanes);
        for (int j = 0; j < kRows; ++j) {
          const vec pt = Isa::set1(p[r0 + j][t]);
          for (int i = 0; i < kVecs; ++i) out[j][i] = Isa::fma(pt, vt[i], out[j][i]);
        }
      } else {
        vec pt[kRows];
        for (int j = 0; j < kRows; ++j) pt[j] = Isa::set1(p[r0 + j][t]);
        for (int i = 0; i < kVecs; ++i) {
          const vec vt = Isa::load(v_rows + t * v_stride + i * kLanes);
          for (int j = 0; j < kRows; ++j) out[j][i] = Isa::fma(pt[j], vt, out[j][i]);
        }
      }
    }
    for (int j = 0; j < kRows; ++j)
      for (int i = 0; i < kVecs; ++i) Isa::store(acc[r0 + j] + i * kLanes, out[j][i]);
  }
};

// ---------------------------------------------------------------------------------------------
// Decode. Work item = (sequence, context part), with all the sequence's KV heads. With few
// sequences the context is split into parts (flash-decoding) so both cores get work; the parts'
// partial results (m, l, acc) are merged in a second pass:
//
//   context of seq s:  [start ......................................... ctx)
//   parts:              |<- part 0 ->|<- part 1 ->|<- part 2 ->|<- p3 ->|
//   out = sum_p e^(m_p - M) acc_p / sum_p e^(m_p - M) l_p,   M = max_p m_p
// ---------------------------------------------------------------------------------------------

struct DecodePlan {
  int num_parts;  // per sequence
  int part_len;   // tokens per part
};

inline DecodePlan plan_decode(int num_items, int max_len, int num_threads) {
  constexpr int kMinPartLen = 128;  // below this the merge costs more than the parallelism gains
  const int wanted_items = 4 * num_threads;
  if (num_threads <= 1 || num_items >= wanted_items || max_len < 2 * kMinPartLen) return {1, std::max(max_len, 1)};
  int parts = std::min((wanted_items + num_items - 1) / num_items, max_len / kMinPartLen);
  const int part_len = (max_len + parts - 1) / parts;
  return {(max_len + part_len - 1) / part_len, part_len};
}

template <class Isa, class T, int kHeadDim>
void paged_decode_attention(const DecodeArgs& a) {
  const int group = a.num_heads / a.num_kv_heads;
  int max_len = 0;
  int64_t total_len = 0;
  for (int s = 0; s < a.num_seqs; ++s) {
    const int ctx = a.context_lens[s];
    const int len = ctx - window_start(ctx - 1, a.sliding_window);
    max_len = std::max(max_len, len);
    total_len += std::max(len, 0);
  }
  const int num_items = a.num_seqs;
  const DecodePlan plan = plan_decode(num_items, max_len, max_threads());
  const bool split = plan.num_parts > 1;
  // Partial results when split: [num_seqs, num_heads, num_parts] x (m, l, acc[head_dim]).
  const int64_t partial_size = kHeadDim + 2;
  std::vector<float> partials(split ? static_cast<size_t>(a.num_seqs) * a.num_heads * plan.num_parts * partial_size : 0);
  const bool parallel = total_len * a.num_kv_heads * kHeadDim >= (1 << 15);

#pragma omp parallel if (parallel)
  {
    std::vector<RowAttention<Isa, T, kHeadDim>> heads;  // one per KV head, per thread
    heads.reserve(a.num_kv_heads);
    for (int h = 0; h < a.num_kv_heads; ++h) heads.emplace_back(a.scale);
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < static_cast<int64_t>(num_items) * plan.num_parts; ++item) {
      const int part = static_cast<int>(item % plan.num_parts);
      const int seq = static_cast<int>(item / plan.num_parts);
      const int ctx = a.context_lens[seq];
      const int start = window_start(ctx - 1, a.sliding_window);
      const int lo = start + part * plan.part_len, hi = std::min(ctx, lo + plan.part_len);
      float* seq_partials = partials.data() + static_cast<int64_t>(seq) * a.num_heads * plan.num_parts * partial_size;
      if (split && lo >= hi) {  // an empty part: mark it so the merge skips it
        for (int head = 0; head < a.num_heads; ++head) {
          float* dst = seq_partials + (static_cast<int64_t>(head) * plan.num_parts + part) * partial_size;
          dst[0] = kNegInf;
          dst[1] = 0.0f;
        }
        continue;
      }
      const T* q = static_cast<const T*>(a.q) + seq * a.q_stride_seq;
      for (int kv_head = 0; kv_head < a.num_kv_heads; ++kv_head) {
        heads[kv_head].clear();
        for (int j = 0; j < group; ++j) heads[kv_head].add_row(q + (kv_head * group + j) * a.q_stride_head, lo, hi);
      }
      RowAttention<Isa, T, kHeadDim>::run(heads.data(), a.num_kv_heads, 0, a.kv,
                                          a.kv.block_tables + seq * a.kv.block_table_stride, lo, hi);
      for (int head = 0; head < a.num_heads; ++head) {
        const auto& att = heads[head / group];
        const int j = head % group;
        if (!split) {
          att.finish_row(j, static_cast<T*>(a.out) + seq * a.out_stride_seq + head * a.out_stride_head);
          continue;
        }
        float* dst = seq_partials + (static_cast<int64_t>(head) * plan.num_parts + part) * partial_size;
        dst[0] = att.m[j];
        dst[1] = att.l[j];
        std::copy(att.acc[j], att.acc[j] + kHeadDim, dst + 2);
      }
    }
    if (split) {
#pragma omp for schedule(static)
      for (int64_t row = 0; row < static_cast<int64_t>(a.num_seqs) * a.num_heads; ++row) {
        const float* part = partials.data() + row * plan.num_parts * partial_size;
        float global_max = kNegInf;
        for (int p = 0; p < plan.num_parts; ++p)
          if (part[p * partial_size + 1] > 0.0f) global_max = std::max(global_max, part[p * partial_size]);
        alignas(64) float merged[kHeadDim] = {};
        float denom = 0.0f;
        for (int p = 0; p < plan.num_parts; ++p) {
          const float* src = part + p * partial_size;
          if (src[1] <= 0.0f) continue;
          const float w = std::exp(src[0] - global_max);
          denom += w * src[1];
          for (int i = 0; i < kHeadDim; ++i) merged[i] += w * src[2 + i];
        }
        const float inv = denom > 0.0f ? 1.0f / denom : 0.0f;
        const int seq = static_cast<int>(row / a.num_heads), head = static_cast<int>(row % a.num_heads);
        T* out = static_cast<T*>(a.out) + seq * a.out_stride_seq + head * a.out_stride_head;
        for (int i = 0; i < kHeadDim; i += kLanes) Isa::store(out + i, Isa::mul(Isa::load(merged + i), Isa::set1(inv)));
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Prefill. Work item = (sequence, KV head, tile of query tokens); the tile's rows are
// tile_tokens x group query heads, so each K/V row read serves all of them. Query token t of a
// sequence with q_len new tokens and ctx cached tokens sits at position ctx - q_len + t and sees
// keys [window_start(pos), pos] (causal, bottom-right aligned).
// ---------------------------------------------------------------------------------------------

template <class Isa, class T, int kHeadDim>
void paged_prefill_attention(const PrefillArgs& a) {
  const int group = a.num_heads / a.num_kv_heads;
  const int tile = std::max(1, kMaxRows / group);
  // item_start[s]: the first work item of sequence s (items of one sequence: kv_heads x tiles).
  std::vector<int64_t> item_start(a.num_seqs + 1, 0);
  int64_t total_keys = 0;
  for (int s = 0; s < a.num_seqs; ++s) {
    const int q_len = a.query_start_loc[s + 1] - a.query_start_loc[s];
    item_start[s + 1] = item_start[s] + static_cast<int64_t>(a.num_kv_heads) * ((q_len + tile - 1) / tile);
    total_keys += static_cast<int64_t>(q_len) * a.context_lens[s];
  }
  const bool parallel = total_keys * a.num_heads * kHeadDim >= (1 << 16);

#pragma omp parallel for schedule(dynamic, 1) if (parallel)
  for (int64_t item = 0; item < item_start[a.num_seqs]; ++item) {
    const int seq = static_cast<int>(std::upper_bound(item_start.begin(), item_start.end(), item) - item_start.begin()) - 1;
    const int64_t local = item - item_start[seq];
    const int num_tiles = static_cast<int>((item_start[seq + 1] - item_start[seq]) / a.num_kv_heads);
    const int kv_head = static_cast<int>(local / num_tiles), tile_idx = static_cast<int>(local % num_tiles);
    const int begin = a.query_start_loc[seq], q_len = a.query_start_loc[seq + 1] - begin;
    const int ctx = a.context_lens[seq];
    const int t0 = tile_idx * tile, t1 = std::min(q_len, t0 + tile);
    RowAttention<Isa, T, kHeadDim> att(a.scale);
    int lo = ctx, hi = 0;
    for (int t = t0; t < t1; ++t) {
      const int pos = ctx - q_len + t;
      const int row_lo = window_start(pos, a.sliding_window);
      lo = std::min(lo, row_lo);
      hi = std::max(hi, pos + 1);
      const T* q = static_cast<const T*>(a.q) + (begin + t) * a.q_stride_token;
      for (int j = 0; j < group; ++j) att.add_row(q + (kv_head * group + j) * a.q_stride_head, row_lo, pos + 1);
    }
    RowAttention<Isa, T, kHeadDim>::run(&att, 1, kv_head, a.kv, a.kv.block_tables + seq * a.kv.block_table_stride,
                                        std::max(lo, 0), hi);
    int r = 0;
    for (int t = t0; t < t1; ++t)
      for (int j = 0; j < group; ++j, ++r)
        att.finish_row(r, static_cast<T*>(a.out) + (begin + t) * a.out_stride_token + (kv_head * group + j) * a.out_stride_head);
  }
}

}  // namespace swiftserve::cpu

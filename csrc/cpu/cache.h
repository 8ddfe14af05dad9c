// store_kv: copies each token's K and V rows [num_kv_heads, head_dim] into its cache slot
// (block_id * block_size + offset); slot -1 means "skip". Plain byte copies: the caller
// guarantees the cache and the inputs share a dtype.
#pragma once

#include <cstdint>
#include <cstring>

namespace swiftserve::cpu {

struct StoreKVArgs {
  const char* k;
  const char* v;
  char* k_cache;
  char* v_cache;
  int64_t k_stride_token, k_stride_head, v_stride_token, v_stride_head;  // in bytes
  int64_t cache_stride_block, cache_stride_token, cache_stride_head;     // in bytes, shared by K and V
  const int64_t* slot_mapping;  // [num_tokens]
  int64_t num_tokens;
  int num_kv_heads, block_size;
  int64_t row_bytes;  // head_dim * element size
};

inline void store_kv(const StoreKVArgs& a) {
#pragma omp parallel for schedule(static) if (a.num_tokens * a.num_kv_heads * a.row_bytes >= (1 << 18))
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    const int64_t slot = a.slot_mapping[t];
    if (slot < 0) continue;
    const int64_t dst = slot / a.block_size * a.cache_stride_block + slot % a.block_size * a.cache_stride_token;
    for (int h = 0; h < a.num_kv_heads; ++h) {
      std::memcpy(a.k_cache + dst + h * a.cache_stride_head, a.k + t * a.k_stride_token + h * a.k_stride_head,
                  a.row_bytes);
      std::memcpy(a.v_cache + dst + h * a.cache_stride_head, a.v + t * a.v_stride_token + h * a.v_stride_head,
                  a.row_bytes);
    }
  }
}

}  // namespace swiftserve::cpu

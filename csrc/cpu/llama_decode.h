// All decoder layers of a Llama-family model for one decode step, in one call.
//
// A decode step of a small model on a CPU is a read of the weights (bandwidth) plus ~12 kernel
// launches per layer; from Python each launch costs a few microseconds of wrapping and checking,
// ~2.5 ms per token for SmolLM2's 30 layers, a fifth of the step. This driver runs the same
// kernels in the same order on the same buffers as models/llama.py does op by op, so its result
// equals the op-by-op path exactly (tests/models/test_llama_fused_decode.py): it only removes the
// trips through Python. It takes single-token decodes of up to 32 sequences (MAX_TOKENS in
// kernels/cpp_llama_decode.py); prefill and larger batches stay on the op-by-op path, where
// Python's share is small and oneDNN's GEMM beats the small-M linear.
#pragma once

#include <cstdint>
#include <cstring>

#include "cpu/activation.h"
#include "cpu/cache.h"
#include "cpu/linear.h"
#include "cpu/norm.h"
#include "cpu/paged_attention.h"
#include "cpu/rotary.h"

namespace swiftserve::cpu {

// One layer's weights and KV cache, as addresses (rows contiguous, the model's dtype).
struct LlamaLayerPtrs {
  const void* input_norm;  // [hidden]
  const void* qkv;         // [q_size + 2 kv_size, hidden]
  const void* qkv_bias;    // [q_size + 2 kv_size] or nullptr
  const void* o_proj;      // [hidden, q_size]
  const void* post_norm;   // [hidden]
  const void* gate_up;     // [2 intermediate, hidden]
  const void* down;        // [hidden, intermediate]
  const void* k_cache;     // [num_blocks, block_size, num_kv_heads, head_dim]
  const void* v_cache;
};
constexpr int kLlamaLayerFields = sizeof(LlamaLayerPtrs) / sizeof(void*);

struct LlamaDecodeArgs {
  const LlamaLayerPtrs* layers;
  int num_layers;
  int hidden, num_heads, num_kv_heads, head_dim, intermediate, rot_dim;
  float eps, scale;
  int sliding_window;  // <= 0: none
  bool is_neox;
  // The step: m decode tokens, one per sequence.
  int64_t m;
  void* x;         // [m, hidden]: in, the embeddings; out, the last layer's output (before its add)
  void* residual;  // [m, hidden]: out, the residual stream the caller's final norm adds x to
  void* qkv;       // scratch [m, q_size + 2 kv_size]
  void* attn;      // scratch [m, q_size]
  void* gate_up;   // scratch [m, 2 intermediate]
  void* act;       // scratch [m, intermediate]
  const int64_t* positions;     // [m]
  const int64_t* slot_mapping;  // [m]
  const float* cos_sin_cache;   // [max_position, rot_dim]
  const int32_t* block_tables;  // [m, block_table_stride]
  int64_t block_table_stride;
  const int32_t* context_lens;  // [m]
  int block_size;
  int64_t cache_stride_block, cache_stride_token, cache_stride_head;  // elements, K and V alike
};

template <class Isa, class T>
void linear_into(void* out, const void* x, const void* w, const void* bias, int64_t m, int64_t n, int64_t k) {
  linear<Isa, T>(LinearArgs{out, x, w, bias, n, k, k, m, n, k});
}

template <class Isa, class T, int kHeadDim>
void llama_attention_block(const LlamaDecodeArgs& a, const LlamaLayerPtrs& l) {
  const int q_size = a.num_heads * a.head_dim, kv_size = a.num_kv_heads * a.head_dim;
  const int qkv_size = q_size + 2 * kv_size;
  T* qkv = static_cast<T*>(a.qkv);
  linear_into<Isa, T>(qkv, a.x, l.qkv, l.qkv_bias, a.m, qkv_size, a.hidden);
  rotary_embedding<Isa, T>(RotaryArgs{qkv, qkv + q_size, qkv_size, a.head_dim, qkv_size, a.head_dim, a.positions,
                                      a.cos_sin_cache, a.m, a.num_heads, a.num_kv_heads, a.rot_dim, a.is_neox});
  const int64_t e = sizeof(T);
  store_kv(StoreKVArgs{reinterpret_cast<const char*>(qkv + q_size), reinterpret_cast<const char*>(qkv + q_size + kv_size),
                       static_cast<char*>(const_cast<void*>(l.k_cache)), static_cast<char*>(const_cast<void*>(l.v_cache)),
                       qkv_size * e, a.head_dim * e, qkv_size * e, a.head_dim * e, a.cache_stride_block * e,
                       a.cache_stride_token * e, a.cache_stride_head * e, a.slot_mapping, a.m, a.num_kv_heads,
                       a.block_size, a.head_dim * e});
  const PagedKV kv{l.k_cache, l.v_cache, a.cache_stride_block, a.cache_stride_token, a.cache_stride_head,
                   a.block_tables, a.block_table_stride, a.block_size};
  paged_decode_attention<Isa, T, kHeadDim>(DecodeArgs{a.attn, q_size, a.head_dim, qkv, qkv_size, a.head_dim, kv,
                                                      a.context_lens, static_cast<int>(a.m), a.num_heads,
                                                      a.num_kv_heads, a.head_dim, a.scale, a.sliding_window});
  linear_into<Isa, T>(a.x, a.attn, l.o_proj, nullptr, a.m, a.hidden, q_size);
}

template <class Isa, class T>
void llama_mlp_block(const LlamaDecodeArgs& a, const LlamaLayerPtrs& l) {
  linear_into<Isa, T>(a.gate_up, a.x, l.gate_up, nullptr, a.m, 2 * a.intermediate, a.hidden);
  silu_and_mul<Isa, T>(SiluMulArgs{a.act, a.gate_up, a.intermediate, 2 * a.intermediate, a.m, a.intermediate});
  linear_into<Isa, T>(a.x, a.act, l.down, nullptr, a.m, a.hidden, a.intermediate);
}

// Layer 0 has no residual yet: it becomes the embeddings, and x their norm (as RMSNorm does
// when called without a residual); later layers add x into the residual first.
template <class Isa, class T>
void llama_norm(const LlamaDecodeArgs& a, const void* weight, bool first) {
  if (first) {
    std::memcpy(a.residual, a.x, a.m * a.hidden * sizeof(T));
    rms_norm<Isa, T>(NormArgs{a.x, nullptr, a.residual, weight, a.hidden, 0, a.hidden, a.m, a.hidden, a.eps});
  } else {
    fused_add_rms_norm<Isa, T>(
        NormArgs{a.x, a.residual, a.x, weight, a.hidden, a.hidden, a.hidden, a.m, a.hidden, a.eps});
  }
}

template <class Isa, class T, int kHeadDim>
void llama_decode_layers(const LlamaDecodeArgs& a) {
  for (int i = 0; i < a.num_layers; ++i) {
    const LlamaLayerPtrs& l = a.layers[i];
    llama_norm<Isa, T>(a, l.input_norm, i == 0);
    llama_attention_block<Isa, T, kHeadDim>(a, l);
    llama_norm<Isa, T>(a, l.post_norm, false);
    llama_mlp_block<Isa, T>(a, l);
  }
}

}  // namespace swiftserve::cpu

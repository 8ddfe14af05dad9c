// Rotary position embedding, in place on q [tokens, heads, head_dim] and k [tokens, kv_heads,
// head_dim] (strided views into a fused qkv tensor are fine). Only the first rot_dim features of
// a head rotate; cos_sin_cache [max_position, rot_dim] float32 holds cos in its first half and sin
// in the second. Math in fp32, one rounding to T per output, as the reference does.
//   neox: pairs (x[i], x[i + rot_dim / 2])    gpt-j: pairs (x[2i], x[2i + 1])
#pragma once

#include <cstdint>

#include "cpu/vec.h"

namespace swiftserve::cpu {

struct RotaryArgs {
  void* q;
  void* k;
  int64_t q_stride_token, q_stride_head, k_stride_token, k_stride_head;
  const int64_t* positions;  // [num_tokens], each in [0, max_position)
  const float* cos_sin_cache;
  int64_t num_tokens;
  int num_heads, num_kv_heads, rot_dim;
  bool is_neox;
};

template <class Isa, class T>
inline void rotate_head(T* x, const float* cos, const float* sin, int half, bool is_neox) {
  if (!is_neox) {
    for (int i = 0; i < half; ++i) {
      const float x1 = to_f32(x[2 * i]), x2 = to_f32(x[2 * i + 1]);
      store_f32(x + 2 * i, x1 * cos[i] - x2 * sin[i]);
      store_f32(x + 2 * i + 1, x2 * cos[i] + x1 * sin[i]);
    }
    return;
  }
  for (int i = 0; i < half; i += kLanes) {
    const int n = half - i < kLanes ? half - i : kLanes;
    const auto c = Isa::load_partial(cos + i, n), s = Isa::load_partial(sin + i, n);
    const auto x1 = Isa::load_partial(x + i, n), x2 = Isa::load_partial(x + half + i, n);
    Isa::store_partial(x + i, Isa::sub(Isa::mul(x1, c), Isa::mul(x2, s)), n);
    Isa::store_partial(x + half + i, Isa::add(Isa::mul(x2, c), Isa::mul(x1, s)), n);
  }
}

template <class Isa, class T>
void rotary_embedding(const RotaryArgs& a) {
  const int half = a.rot_dim / 2;
#pragma omp parallel for schedule(static) if (a.num_tokens * (a.num_heads + a.num_kv_heads) * a.rot_dim >= (1 << 16))
  for (int64_t t = 0; t < a.num_tokens; ++t) {
    const float* cos = a.cos_sin_cache + a.positions[t] * a.rot_dim;
    const float* sin = cos + half;
    T* q = static_cast<T*>(a.q) + t * a.q_stride_token;
    T* k = static_cast<T*>(a.k) + t * a.k_stride_token;
    for (int h = 0; h < a.num_heads; ++h) rotate_head<Isa>(q + h * a.q_stride_head, cos, sin, half, a.is_neox);
    for (int h = 0; h < a.num_kv_heads; ++h) rotate_head<Isa>(k + h * a.k_stride_head, cos, sin, half, a.is_neox);
  }
}

}  // namespace swiftserve::cpu

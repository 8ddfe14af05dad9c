// RMSNorm and the fused residual-add + RMSNorm, one row per work item. Rounding matches the torch
// reference in T: y = T(T(x * rsqrt(mean(x^2) + eps)) * w), and the fused op's residual sum is
// rounded to T before it is normalized.
#pragma once

#include <cmath>
#include <cstdint>

#include "cpu/vec.h"

namespace swiftserve::cpu {

struct NormArgs {
  void* out;              // [num_rows, hidden]: rms_norm's output; the fused op writes x here
  void* residual;         // fused op only: [num_rows, hidden], updated in place
  const void* x;          // [num_rows, hidden]
  const void* weight;     // [hidden]
  int64_t out_stride, residual_stride, x_stride;  // between rows, in elements
  int64_t num_rows;
  int hidden;
  float eps;
};

// y = T(x * inv_rms) * w, rounded like torch does it in T.
template <class Isa, class T>
inline void scale_row(T* out, const T* x, const T* w, int hidden, float inv_rms) {
  const auto inv = Isa::set1(inv_rms);
  int i = 0;
  for (; i + kLanes <= hidden; i += kLanes) {
    const auto y = Isa::round_to(Isa::mul(Isa::load(x + i), inv), static_cast<T*>(nullptr));
    Isa::store(out + i, Isa::mul(y, Isa::load(w + i)));
  }
  if (i < hidden) {
    const int n = hidden - i;
    const auto y = Isa::round_to(Isa::mul(Isa::load_partial(x + i, n), inv), static_cast<T*>(nullptr));
    Isa::store_partial(out + i, Isa::mul(y, Isa::load_partial(w + i, n)), n);
  }
}

template <class Isa, class T>
inline float sum_of_squares(const T* x, int hidden) {
  auto acc = Isa::zero();
  int i = 0;
  for (; i + kLanes <= hidden; i += kLanes) {
    const auto v = Isa::load(x + i);
    acc = Isa::fma(v, v, acc);
  }
  if (i < hidden) {
    const auto v = Isa::load_partial(x + i, hidden - i);
    acc = Isa::fma(v, v, acc);
  }
  return Isa::reduce_add(acc);
}

// Rows are cheap (hidden ~ 1k): only go parallel when there is enough of them.
inline bool worth_threads(int64_t num_rows, int hidden) { return num_rows * hidden >= (1 << 16); }

template <class Isa, class T>
void rms_norm(const NormArgs& a) {
  const T* w = static_cast<const T*>(a.weight);
#pragma omp parallel for schedule(static) if (worth_threads(a.num_rows, a.hidden))
  for (int64_t row = 0; row < a.num_rows; ++row) {
    const T* x = static_cast<const T*>(a.x) + row * a.x_stride;
    const float inv = 1.0f / std::sqrt(sum_of_squares<Isa>(x, a.hidden) / a.hidden + a.eps);
    scale_row<Isa>(static_cast<T*>(a.out) + row * a.out_stride, x, w, a.hidden, inv);
  }
}

// residual += x; out = rms_norm(residual). `out` may alias x.
template <class Isa, class T>
void fused_add_rms_norm(const NormArgs& a) {
  const T* w = static_cast<const T*>(a.weight);
#pragma omp parallel for schedule(static) if (worth_threads(a.num_rows, a.hidden))
  for (int64_t row = 0; row < a.num_rows; ++row) {
    const T* x = static_cast<const T*>(a.x) + row * a.x_stride;
    T* res = static_cast<T*>(a.residual) + row * a.residual_stride;
    auto acc = Isa::zero();
    int i = 0;
    for (; i + kLanes <= a.hidden; i += kLanes) {
      const auto sum = Isa::round_to(Isa::add(Isa::load(res + i), Isa::load(x + i)), static_cast<T*>(nullptr));
      Isa::store(res + i, sum);
      acc = Isa::fma(sum, sum, acc);
    }
    if (i < a.hidden) {
      const int n = a.hidden - i;
      const auto sum = Isa::round_to(Isa::add(Isa::load_partial(res + i, n), Isa::load_partial(x + i, n)),
                                     static_cast<T*>(nullptr));
      Isa::store_partial(res + i, sum, n);
      acc = Isa::fma(sum, sum, acc);
    }
    const float inv = 1.0f / std::sqrt(Isa::reduce_add(acc) / a.hidden + a.eps);
    scale_row<Isa>(static_cast<T*>(a.out) + row * a.out_stride, res, w, a.hidden, inv);
  }
}

}  // namespace swiftserve::cpu

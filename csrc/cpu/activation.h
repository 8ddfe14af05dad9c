// SwiGLU gate: out = silu(x[:, :d]) * x[:, d:], rounded like torch's two ops in T
// (silu rounded to T, then the product rounded to T).
#pragma once

#include <cstdint>

#include "cpu/vec.h"

namespace swiftserve::cpu {

struct SiluMulArgs {
  void* out;       // [num_rows, d]
  const void* x;   // [num_rows, 2 d]
  int64_t out_stride, x_stride;
  int64_t num_rows;
  int d;
};

template <class Isa>
inline typename Isa::vec silu(typename Isa::vec x) {
  const auto one = Isa::set1(1.0f);
  return Isa::div(x, Isa::add(one, Isa::exp(Isa::sub(Isa::zero(), x))));
}

template <class Isa, class T>
void silu_and_mul(const SiluMulArgs& a) {
  constexpr T* kT = nullptr;
#pragma omp parallel for schedule(static) if (a.num_rows * a.d >= (1 << 16))
  for (int64_t row = 0; row < a.num_rows; ++row) {
    const T* gate = static_cast<const T*>(a.x) + row * a.x_stride;
    const T* up = gate + a.d;
    T* out = static_cast<T*>(a.out) + row * a.out_stride;
    int i = 0;
    for (; i + kLanes <= a.d; i += kLanes)
      Isa::store(out + i, Isa::mul(Isa::round_to(silu<Isa>(Isa::load(gate + i)), kT), Isa::load(up + i)));
    if (i < a.d) {
      const int n = a.d - i;
      const auto g = Isa::round_to(silu<Isa>(Isa::load_partial(gate + i, n)), kT);
      Isa::store_partial(out + i, Isa::mul(g, Isa::load_partial(up + i, n)), n);
    }
  }
}

}  // namespace swiftserve::cpu

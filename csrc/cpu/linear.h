// Small-M linear layer: out[M, N] = x[M, K] @ weight[N, K]^T (+ bias), for the few-row matmuls
// of decoding (M = the number of sequences in the step). At small M a linear is a read of the
// whole weight matrix, so the kernel is built to stream the weights once at full memory bandwidth:
//   - threads split N into contiguous runs of weight rows (one long, prefetch-friendly read each);
//   - a tile pairs kW weight rows with 16 / kW rows of x (16 x 1, 8 x 2, 4 x 4), so each weight
//     chunk is loaded once per 16 / kW rows of x, and the tile's 16 sums are reduced together
//     (Isa::transpose_sum) instead of one horizontal sum each;
//   - bf16 with AVX512-BF16 multiplies bf16 pairs exactly and accumulates in fp32 (vdpbf16ps),
//     other types widen to fp32 and fma.
// The result is rounded to T once, from fp32, like torch's bf16 matmul.
#pragma once

#include <algorithm>
#include <cstdint>

#include "cpu/vec.h"

namespace swiftserve::cpu {

struct LinearArgs {
  void* out;             // [m, n]
  const void* x;         // [m, k]
  const void* weight;    // [n, k]
  const void* bias;      // [n] or nullptr
  int64_t out_stride, x_stride, weight_stride;
  int64_t m, n, k;
};

// One tile: kW weight rows against kLanes / kW rows of x, 16 dot products in all. Lane j * kW + t
// of the result is x_j . w_t over k elements. Each weight chunk is loaded once for all the x rows
// of the tile, so small batches (kW = 4: 4 rows of x) cost little more than one row. Every load
// also prefetches the line `prefetch` elements ahead (two tiles on): without it, tiles of fewer
// than 16 rows read a large weight at ~40 instead of ~60 GB/s on a 2-core Zen 4.
template <class Isa, class T, int kW>
typename Isa::vec dot_tile(const T* const (&xr)[kLanes / kW], const T* const (&wr)[kW], int64_t k,
                          int64_t prefetch) {
  constexpr int kX = kLanes / kW;
  typename Isa::vec acc[kLanes];
  for (int i = 0; i < kLanes; ++i) acc[i] = Isa::zero();
#if SWIFTSERVE_HAS_AVX512 && defined(__AVX512BF16__)
  if constexpr (std::is_same_v<Isa, Avx512> && std::is_same_v<T, bf16_t>) {
    auto step = [&](int64_t c, auto load) {
      __m512bh xv[kX];
      for (int j = 0; j < kX; ++j) xv[j] = (__m512bh)load(xr[j] + c);
      for (int t = 0; t < kW; ++t) {
        __builtin_prefetch(wr[t] + prefetch + c);
        const __m512bh wv = (__m512bh)load(wr[t] + c);
        for (int j = 0; j < kX; ++j) acc[j * kW + t] = _mm512_dpbf16_ps(acc[j * kW + t], xv[j], wv);
      }
    };
    int64_t c = 0;
    for (; c + 32 <= k; c += 32) step(c, [](const T* p) { return _mm512_loadu_si512(p); });
    if (c < k) {
      const __mmask32 mask = static_cast<__mmask32>((1ull << (k - c)) - 1ull);
      step(c, [mask](const T* p) { return _mm512_maskz_loadu_epi16(mask, p); });
    }
    return Isa::transpose_sum(acc);
  }
#endif
  auto step = [&](int64_t c, auto load) {
    typename Isa::vec xv[kX];
    for (int j = 0; j < kX; ++j) xv[j] = load(xr[j] + c);
    for (int t = 0; t < kW; ++t) {
      __builtin_prefetch(wr[t] + prefetch + c);
      const auto wv = load(wr[t] + c);
      for (int j = 0; j < kX; ++j) acc[j * kW + t] = Isa::fma(xv[j], wv, acc[j * kW + t]);
    }
  };
  int64_t c = 0;
  for (; c + kLanes <= k; c += kLanes) step(c, [](const T* p) { return Isa::load(p); });
  if (c < k) {
    const int n = static_cast<int>(k - c);
    step(c, [n](const T* p) { return Isa::load_partial(p, n); });
  }
  return Isa::transpose_sum(acc);
}

// Threads split N into contiguous runs of kW-row tiles; past the edges of x or the weight a tile
// repeats its last row, and those lanes are not stored.
template <class Isa, class T, int kW>
void linear_tiled(const LinearArgs& a) {
  constexpr int kX = kLanes / kW;
  const T* bias = static_cast<const T*>(a.bias);
  const int64_t tiles = (a.n + kW - 1) / kW;
#pragma omp parallel for schedule(static) if (tiles * a.k * a.m >= (1 << 15))
  for (int64_t tile = 0; tile < tiles; ++tile) {
    const int64_t n0 = tile * kW;
    const int rows_w = static_cast<int>(std::min<int64_t>(kW, a.n - n0));
    const T* wr[kW];
    for (int t = 0; t < kW; ++t)
      wr[t] = static_cast<const T*>(a.weight) + (n0 + std::min(t, rows_w - 1)) * a.weight_stride;
    for (int64_t i0 = 0; i0 < a.m; i0 += kX) {
      const int rows_x = static_cast<int>(std::min<int64_t>(kX, a.m - i0));
      const T* xr[kX];
      for (int j = 0; j < kX; ++j) xr[j] = static_cast<const T*>(a.x) + (i0 + std::min(j, rows_x - 1)) * a.x_stride;
      float y[kLanes];
      Isa::store(y, dot_tile<Isa, T, kW>(xr, wr, a.k, i0 == 0 ? 2 * kW * a.weight_stride : 0));
      for (int j = 0; j < rows_x; ++j) {
        T* out = static_cast<T*>(a.out) + (i0 + j) * a.out_stride + n0;
        for (int t = 0; t < rows_w; ++t) store_f32(out + t, y[j * kW + t] + (bias ? to_f32(bias[n0 + t]) : 0.0f));
      }
    }
  }
}

// One row of x: 16 weight rows per tile; two: 8; more: 4 weight rows by 4 rows of x.
template <class Isa, class T>
void linear(const LinearArgs& a) {
  if (a.m == 1) return linear_tiled<Isa, T, 16>(a);
  if (a.m == 2) return linear_tiled<Isa, T, 8>(a);
  linear_tiled<Isa, T, 4>(a);
}

}  // namespace swiftserve::cpu

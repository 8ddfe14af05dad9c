// Small-M linear layer: out[M, N] = x[M, K] @ weight[N, K]^T (+ bias), for the few-row matmuls
// of decoding (M = the number of sequences in the step). At small M a linear is a read of the
// whole weight matrix, so the kernel is built to stream the weights once at full memory bandwidth:
//   - threads split N into contiguous runs of weight rows (one long, prefetch-friendly read each);
//   - a tile pairs kW weight rows with 16 / kW rows of x (16 x 1, 8 x 2, 4 x 4), so each weight
//     chunk is loaded once per 16 / kW rows of x, and the tile's 16 sums are reduced together
//     (Isa::transpose_sum) instead of one horizontal sum each;
//   - bf16 with AVX512-BF16 multiplies bf16 pairs exactly and accumulates in fp32 (vdpbf16ps),
//     other types widen to fp32 and fma.
// AVX2 has 16 registers of 8 lanes, too few for a 16-sum tile of 16-lane vectors: its tiles hold
// 8 sums in 8 registers (8 x 1, 4 x 2, 2 x 4; Avx2Tile below).
// The result is rounded to T once, from fp32, like torch's bf16 matmul.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

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

// The 16-lane flavours' tile as linear_tiled takes it: y[j * kW + t] = x_j . w_t.
template <class Isa, class T, int kWRows>
struct LaneTile {
  static constexpr int kW = kWRows, kX = kLanes / kWRows;
  static int64_t prefetch_rows(int64_t) { return 2 * kW; }  // two tiles on
  static void run(const T* const (&xr)[kX], const T* const (&wr)[kW], int64_t k, int64_t prefetch, float* y) {
    Isa::store(y, dot_tile<Isa, T, kW>(xr, wr, k, prefetch));
  }
};

#if SWIFTSERVE_HAS_AVX2
// kW weight rows against kX rows of x, kW * kX = 8 sums in 8 registers; y[j * kW + t] = x_j . w_t.
// A step reads one cache line of each weight row (and prefetches the line `prefetch` elements on,
// unless that is 0) as 16-element pieces. With one row of x, long weight rows stream at the
// memory bandwidth on the hardware prefetcher alone, and software prefetch only costs (2-core
// Zen 3, medians of 25 rounds: 2048 x 8192 bf16 26.5 GB/s without, 21.4 one tile on, 20.0 two
// tiles on; level at k = 2048), while short rows, whose streams keep restarting, gain from it
// one tile on (k = 576: 13.7 against 11.3 GB/s; k = 1536: 20.8 against 18.8). With 2 and 4 rows
// of x, two tiles on gains.
// A bf16 piece is split in place into its even elements (shifted up) and its odd ones (masked),
// the same split for x and w, so pairs stay matched and no widening shuffle is needed; the even
// and odd products go to the same sum.
template <class T, int kWRows, int kXRows>
struct Avx2Tile {
  static constexpr int kW = kWRows, kX = kXRows;
  static int64_t prefetch_rows(int64_t k) {
    if constexpr (kX == 1) return k * static_cast<int64_t>(sizeof(T)) < 4096 ? kW : 0;
    return 2 * kW;
  }
  static_assert(kW * kX == 8, "one 8-lane register of sums");
  static constexpr int kStep = 64 / sizeof(T);  // elements of a row per cache line

  static void run(const T* const (&xr)[kX], const T* const (&wr)[kW], int64_t k, int64_t prefetch, float* y) {
    __m256 acc[8];
    for (auto& v : acc) v = _mm256_setzero_ps();
    int64_t c = 0;
    for (; c + kStep <= k; c += kStep) {
      if (prefetch != 0)
        for (int t = 0; t < kW; ++t) __builtin_prefetch(wr[t] + prefetch + c);
      for (int i = 0; i < kStep; i += 16) piece(acc, xr, wr, c + i);
    }
    if (c < k) tail(acc, xr, wr, c, static_cast<int>(k - c));
    _mm256_storeu_ps(y, Avx2::transpose_sum8(acc));
  }

 private:
  static void split(const float* p, __m256& a, __m256& b) {
    a = _mm256_loadu_ps(p);
    b = _mm256_loadu_ps(p + 8);
  }
  static void split(const bf16_t* p, __m256& even, __m256& odd) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    even = _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
    odd = _mm256_castsi256_ps(_mm256_and_si256(v, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
  }

  // 16 elements at offset c of every row. The side with fewer rows is held in registers and the
  // other streamed through two, so 8 sums + 4 held + 2 streamed fit in 16 registers at any shape.
  static void piece(__m256 (&acc)[8], const T* const (&xr)[kX], const T* const (&wr)[kW], int64_t c) {
    if constexpr (kX <= kW) {
      __m256 xa[kX], xb[kX];
      for (int j = 0; j < kX; ++j) split(xr[j] + c, xa[j], xb[j]);
      for (int t = 0; t < kW; ++t) {
        __m256 wa, wb;
        split(wr[t] + c, wa, wb);
        for (int j = 0; j < kX; ++j) acc[j * kW + t] = _mm256_fmadd_ps(xb[j], wb, _mm256_fmadd_ps(xa[j], wa, acc[j * kW + t]));
      }
    } else {
      __m256 wa[kW], wb[kW];
      for (int t = 0; t < kW; ++t) split(wr[t] + c, wa[t], wb[t]);
      for (int j = 0; j < kX; ++j) {
        __m256 xa, xb;
        split(xr[j] + c, xa, xb);
        for (int t = 0; t < kW; ++t) acc[j * kW + t] = _mm256_fmadd_ps(xb, wb[t], _mm256_fmadd_ps(xa, wa[t], acc[j * kW + t]));
      }
    }
  }

  // The last n < kStep elements, copied into zero-padded rows: nothing past a row's end is read.
  static void tail(__m256 (&acc)[8], const T* const (&xr)[kX], const T* const (&wr)[kW], int64_t c, int n) {
    T xbuf[kX][kStep] = {}, wbuf[kW][kStep] = {};
    const T* xp[kX];
    const T* wp[kW];
    for (int j = 0; j < kX; ++j) xp[j] = static_cast<const T*>(std::memcpy(xbuf[j], xr[j] + c, sizeof(T) * n));
    for (int t = 0; t < kW; ++t) wp[t] = static_cast<const T*>(std::memcpy(wbuf[t], wr[t] + c, sizeof(T) * n));
    for (int i = 0; i < n; i += 16) piece(acc, xp, wp, i);
  }
};
#endif

// Threads split N into contiguous runs of kW-row tiles; past the edges of x or the weight a tile
// repeats its last row, and those lanes are not stored.
template <class Tile, class T>
void linear_tiled(const LinearArgs& a) {
  constexpr int kW = Tile::kW, kX = Tile::kX;
  const T* bias = static_cast<const T*>(a.bias);
  const int64_t tiles = (a.n + kW - 1) / kW;
  const int64_t prefetch = Tile::prefetch_rows(a.k) * a.weight_stride;  // elements ahead, 0: none
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
      Tile::run(xr, wr, a.k, i0 == 0 ? prefetch : 0, y);
      for (int j = 0; j < rows_x; ++j) {
        T* out = static_cast<T*>(a.out) + (i0 + j) * a.out_stride + n0;
        for (int t = 0; t < rows_w; ++t) store_f32(out + t, y[j * kW + t] + (bias ? to_f32(bias[n0 + t]) : 0.0f));
      }
    }
  }
}

// One row of x: 16 weight rows per tile; two: 8; more: 4 weight rows by 4 rows of x (AVX2: 8, 4
// and 2 weight rows).
template <class Isa, class T>
void linear(const LinearArgs& a) {
#if SWIFTSERVE_HAS_AVX2
  if constexpr (std::is_same_v<Isa, Avx2>) {
    if (a.m == 1) return linear_tiled<Avx2Tile<T, 8, 1>, T>(a);
    if (a.m == 2) return linear_tiled<Avx2Tile<T, 4, 2>, T>(a);
    return linear_tiled<Avx2Tile<T, 2, 4>, T>(a);
  }
#endif
  if (a.m == 1) return linear_tiled<LaneTile<Isa, T, 16>, T>(a);
  if (a.m == 2) return linear_tiled<LaneTile<Isa, T, 8>, T>(a);
  linear_tiled<LaneTile<Isa, T, 4>, T>(a);
}

}  // namespace swiftserve::cpu

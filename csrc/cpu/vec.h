// 16-lane fp32 vector primitives the CPU kernels are written against, in three flavours:
//   Avx512  - intrinsics (built when the compiler targets AVX-512 F/BW/VL/DQ, e.g. -march=native)
//   Avx2    - intrinsics on a pair of 8-lane registers (built when the compiler targets AVX2 and
//             FMA but not AVX-512: Zen 1-3, Haswell to Comet Lake)
//   Generic - plain loops over float[16] that any C++17 compiler builds (and auto-vectorizes)
// A kernel is a template over the flavour, so all run the same algorithm and the generic one is
// testable on a native build (the `generic` flag of every _C kernel). Storage types: float, or
// bf16_t (raw bfloat16 bits, converted by shifts; stores round to nearest even like torch's
// .to(torch.bfloat16)).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__)
#define SWIFTSERVE_HAS_AVX512 1
#include <immintrin.h>
#else
#define SWIFTSERVE_HAS_AVX512 0
#endif
#if !SWIFTSERVE_HAS_AVX512 && defined(__AVX2__) && defined(__FMA__)
#define SWIFTSERVE_HAS_AVX2 1
#include <immintrin.h>
#else
#define SWIFTSERVE_HAS_AVX2 0
#endif

namespace swiftserve::cpu {

using bf16_t = uint16_t;  // bfloat16 bits: the upper half of an IEEE fp32

inline float bf16_to_f32(bf16_t x) {
  uint32_t bits = static_cast<uint32_t>(x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

inline bf16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof(bits));
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<bf16_t>((bits >> 16) | 0x40u);  // quiet NaN
  bits += 0x7fffu + ((bits >> 16) & 1u);  // round to nearest, ties to even
  return static_cast<bf16_t>(bits >> 16);
}

// Scalar element access for both storage types.
inline float to_f32(float x) { return x; }
inline float to_f32(bf16_t x) { return bf16_to_f32(x); }
inline void store_f32(float* p, float x) { *p = x; }
inline void store_f32(bf16_t* p, float x) { *p = f32_to_bf16(x); }

// Rounds fp32 to the storage type and back: reproduces the rounding of a torch op done in T.
inline float round_to(float x, float*) { return x; }
inline float round_to(float x, bf16_t*) { return bf16_to_f32(f32_to_bf16(x)); }

constexpr int kLanes = 16;
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

// Cephes expf, shared by the intrinsic flavours' exp: x = n ln2 + r (ln2 in two parts, so n ln2 is
// exact enough), then e^r = 1 + r + r^2 p(r), p by Horner from kExpPoly[0] (c0 r + c1, ...).
namespace exp_cephes {
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kExpPoly[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                               4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
}  // namespace exp_cephes

struct Generic {
  struct vec {
    float v[kLanes];
  };
  static constexpr const char* name = "generic";
  // 16-lane vectors the register file holds (sizes the kernels' register blocks). Here the
  // compiler's business: the AVX-512 count the kernels were first written for.
  static constexpr int kRegisterFile = 32;

  static vec set1(float x) {
    vec r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = x;
    return r;
  }
  static vec zero() { return set1(0.0f); }
  static vec load(const float* p) {
    vec r;
    std::memcpy(r.v, p, sizeof(r.v));
    return r;
  }
  static vec load(const bf16_t* p) {
    vec r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = bf16_to_f32(p[i]);
    return r;
  }
  // Lanes >= n read as `fill`.
  template <class T>
  static vec load_partial(const T* p, int n, float fill = 0.0f) {
    vec r = set1(fill);
    for (int i = 0; i < n; ++i) r.v[i] = cpu::to_f32(p[i]);
    return r;
  }
  static void store(float* p, const vec& a) { std::memcpy(p, a.v, sizeof(a.v)); }
  static void store(bf16_t* p, const vec& a) {
    for (int i = 0; i < kLanes; ++i) p[i] = f32_to_bf16(a.v[i]);
  }
  template <class T>
  static void store_partial(T* p, const vec& a, int n) {
    for (int i = 0; i < n; ++i) store_f32(p + i, a.v[i]);
  }
  static vec fma(const vec& a, const vec& b, const vec& c) {  // a * b + c
    vec r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = a.v[i] * b.v[i] + c.v[i];
    return r;
  }
#define SWIFTSERVE_GENERIC_BINOP(NAME, EXPR)          \
  static vec NAME(const vec& a, const vec& b) {       \
    vec r;                                            \
    for (int i = 0; i < kLanes; ++i) r.v[i] = (EXPR); \
    return r;                                         \
  }
  SWIFTSERVE_GENERIC_BINOP(add, a.v[i] + b.v[i])
  SWIFTSERVE_GENERIC_BINOP(sub, a.v[i] - b.v[i])
  SWIFTSERVE_GENERIC_BINOP(mul, a.v[i] * b.v[i])
  SWIFTSERVE_GENERIC_BINOP(div, a.v[i] / b.v[i])
  SWIFTSERVE_GENERIC_BINOP(max, a.v[i] > b.v[i] ? a.v[i] : b.v[i])
#undef SWIFTSERVE_GENERIC_BINOP
  static float reduce_add(const vec& a) {
    float s = 0.0f;
    for (int i = 0; i < kLanes; ++i) s += a.v[i];
    return s;
  }
  static float reduce_max(const vec& a) {
    float m = a.v[0];
    for (int i = 1; i < kLanes; ++i) m = a.v[i] > m ? a.v[i] : m;
    return m;
  }
  static vec exp(const vec& a) {
    vec r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = std::exp(a.v[i]);
    return r;
  }
  // Rounds every lane to T's precision (identity for float).
  static vec round_to(const vec& a, float*) { return a; }
  static vec round_to(const vec& a, bf16_t*) {
    vec r;
    for (int i = 0; i < kLanes; ++i) r.v[i] = cpu::round_to(a.v[i], static_cast<bf16_t*>(nullptr));
    return r;
  }

  // Lane t of the result = the sum of v[t]'s 16 lanes.
  static vec transpose_sum(const vec (&v)[kLanes]) {
    vec r;
    for (int t = 0; t < kLanes; ++t) r.v[t] = reduce_add(v[t]);
    return r;
  }

  // Lane t = q . k_t for the n <= 16 rows k_t = k + t * stride of kDim elements; lanes >= n are 0.
  template <int kDim, class T>
  static vec dot16(const T* q, const T* k, int64_t stride, int n) {
    vec r = zero();
    for (int t = 0; t < n; ++t) {
      float dot = 0.0f;
      for (int i = 0; i < kDim; ++i) dot += cpu::to_f32(q[i]) * cpu::to_f32(k[t * stride + i]);
      r.v[t] = dot;
    }
    return r;
  }

};

#if SWIFTSERVE_HAS_AVX512
struct Avx512 {
  using vec = __m512;
  static constexpr const char* name = "avx512";
  static constexpr int kRegisterFile = 32;  // zmm registers

  static vec set1(float x) { return _mm512_set1_ps(x); }
  static vec zero() { return _mm512_setzero_ps(); }
  static vec load(const float* p) { return _mm512_loadu_ps(p); }
  static vec load(const bf16_t* p) { return widen(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))); }
  static vec load_partial(const float* p, int n, float fill = 0.0f) {
    return _mm512_mask_loadu_ps(set1(fill), tail_mask(n), p);
  }
  static vec load_partial(const bf16_t* p, int n, float fill = 0.0f) {
    const __mmask16 m = tail_mask(n);
    return _mm512_mask_blend_ps(m, set1(fill), widen(_mm256_maskz_loadu_epi16(m, p)));
  }
  static void store(float* p, vec a) { _mm512_storeu_ps(p, a); }
  static void store(bf16_t* p, vec a) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), narrow(a)); }
  static void store_partial(float* p, vec a, int n) { _mm512_mask_storeu_ps(p, tail_mask(n), a); }
  static void store_partial(bf16_t* p, vec a, int n) { _mm256_mask_storeu_epi16(p, tail_mask(n), narrow(a)); }
  static vec fma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
  static vec add(vec a, vec b) { return _mm512_add_ps(a, b); }
  static vec sub(vec a, vec b) { return _mm512_sub_ps(a, b); }
  static vec mul(vec a, vec b) { return _mm512_mul_ps(a, b); }
  static vec div(vec a, vec b) { return _mm512_div_ps(a, b); }
  static vec max(vec a, vec b) { return _mm512_max_ps(a, b); }
  static float reduce_add(vec a) { return _mm512_reduce_add_ps(a); }
  static float reduce_max(vec a) { return _mm512_reduce_max_ps(a); }

  // exp(x) to ~1 ulp: x = n ln2 + r with |r| <= ln2 / 2, a degree-6 polynomial for e^r (Cephes
  // expf), then scalef by 2^n. Below -104 (and NaN) the result is exactly 0, so a -inf score
  // (a masked token) gets probability 0.
  static vec exp(vec x) {
    const __mmask16 live = _mm512_cmp_ps_mask(x, set1(-104.0f), _CMP_GE_OQ);
    x = _mm512_min_ps(x, set1(89.0f));
    const vec n = _mm512_roundscale_ps(_mm512_mul_ps(x, set1(exp_cephes::kLog2e)),
                                       _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    vec r = _mm512_fnmadd_ps(n, set1(exp_cephes::kLn2Hi), x);
    r = _mm512_fnmadd_ps(n, set1(exp_cephes::kLn2Lo), r);
    vec p = set1(exp_cephes::kExpPoly[0]);
    for (int i = 1; i < 6; ++i) p = fma(p, r, set1(exp_cephes::kExpPoly[i]));
    p = fma(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, set1(1.0f)));
    return _mm512_maskz_scalef_ps(live, p, n);
  }
  static vec round_to(vec a, float*) { return a; }
  static vec round_to(vec a, bf16_t*) { return widen(narrow(a)); }

  // Lane t = q . k_t for the n <= 16 rows k_t = k + t * stride of kDim elements; lanes >= n are 0.
  // Each row's products are summed in a vector, then the 16 vectors are reduced together
  // (transpose_sum) instead of one horizontal sum each.
  template <int kDim, class T>
  static vec dot16(const T* q, const T* k, int64_t stride, int n) {
    vec dots[kLanes];
#if defined(__AVX512BF16__)
    if constexpr (std::is_same_v<T, bf16_t> && kDim % 32 == 0) {
      // bf16 pairs multiplied exactly and summed in fp32 (vdpbf16ps): no widening, half the ops.
      __m512i qv[kDim / 32];
      for (int c = 0; c < kDim / 32; ++c) qv[c] = _mm512_loadu_si512(q + 32 * c);
      for (int t = 0; t < kLanes; ++t) {
        dots[t] = zero();
        if (t < n)
          for (int c = 0; c < kDim / 32; ++c)
            dots[t] = _mm512_dpbf16_ps(dots[t], (__m512bh)qv[c], (__m512bh)_mm512_loadu_si512(k + t * stride + 32 * c));
      }
      return transpose_sum(dots);
    }
#endif
    vec qv[kDim / kLanes];
    for (int c = 0; c < kDim / kLanes; ++c) qv[c] = load(q + kLanes * c);
    for (int t = 0; t < kLanes; ++t) {
      dots[t] = zero();
      if (t < n)
        for (int c = 0; c < kDim / kLanes; ++c) dots[t] = fma(qv[c], load(k + t * stride + kLanes * c), dots[t]);
    }
    return transpose_sum(dots);
  }

  // Lane t of the result = the sum of v[t]'s 16 lanes.
  //   unpack lo/hi + add:  pairs (v0, v1) -> per 128-bit lane [v0 v1 v0 v1] partial sums   (16 -> 8)
  //   shuffle_ps + add:    (v0v1, v2v3)   -> per 128-bit lane [v0 v1 v2 v3]                (8 -> 4)
  //   shuffle_f32x4 + add twice: the four 128-bit lanes summed, v_t landing in lane t      (4 -> 1)
  static vec transpose_sum(const vec (&v)[kLanes]) {
    vec pairs[8], quads[4], halves[2];
    for (int i = 0; i < 8; ++i)
      pairs[i] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * i], v[2 * i + 1]), _mm512_unpackhi_ps(v[2 * i], v[2 * i + 1]));
    for (int i = 0; i < 4; ++i)
      quads[i] = _mm512_add_ps(_mm512_shuffle_ps(pairs[2 * i], pairs[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                               _mm512_shuffle_ps(pairs[2 * i], pairs[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    for (int i = 0; i < 2; ++i)
      halves[i] = _mm512_add_ps(_mm512_shuffle_f32x4(quads[2 * i], quads[2 * i + 1], 0x88),
                                _mm512_shuffle_f32x4(quads[2 * i], quads[2 * i + 1], 0xdd));
    return _mm512_add_ps(_mm512_shuffle_f32x4(halves[0], halves[1], 0x88),
                         _mm512_shuffle_f32x4(halves[0], halves[1], 0xdd));
  }

 private:
  static __mmask16 tail_mask(int n) { return static_cast<__mmask16>((1u << n) - 1u); }
  static vec widen(__m256i bf16) {  // 16 bf16 -> 16 fp32: zero-extend, shift into the high half
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bf16), 16));
  }
  static __m256i narrow(vec a) {  // 16 fp32 -> 16 bf16, round to nearest even
#if defined(__AVX512BF16__)
    return (__m256i)_mm512_cvtneps_pbh(a);  // same 256 bits, bf16 lanes
#else
    const __m512i bits = _mm512_castps_si512(a);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
    __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    const __mmask16 nan = _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
    rounded = _mm512_mask_or_epi32(rounded, nan, bits, _mm512_set1_epi32(0x400000));
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(rounded, 16));
#endif
  }
};
#endif

#if SWIFTSERVE_HAS_AVX2
// The 16-lane contract on AVX2's 8-lane registers: a vec is lanes 0-7 (lo) and 8-15 (hi), and
// every operation is Avx512's done on both halves, so the kernels need no change. Results equal
// Avx512's up to the order of sums (reduce_add, transpose_sum, dot16).
struct Avx2 {
  struct vec {
    __m256 lo, hi;
  };
  static constexpr const char* name = "avx2";
  static constexpr int kRegisterFile = 8;  // 16 ymm registers, two per vec

  static vec set1(float x) { return {_mm256_set1_ps(x), _mm256_set1_ps(x)}; }
  static vec zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
  static vec load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
  static vec load(const bf16_t* p) { return {widen(load8(p)), widen(load8(p + 8))}; }
  // Lanes >= n read as `fill`. The n elements go through a stack buffer, so no byte past p + n is
  // touched (AVX2 has no 16-bit masked load, and masked-off lanes of vmaskmov are not guaranteed
  // to be fault-free everywhere); only the tail of a row pays for the copy.
  template <class T>
  static vec load_partial(const T* p, int n, float fill = 0.0f) {
    T buf[kLanes] = {};
    std::memcpy(buf, p, sizeof(T) * n);
    const vec v = load(buf);
    const __m256 f = _mm256_set1_ps(fill);
    return {_mm256_blendv_ps(f, v.lo, lane_mask(n)), _mm256_blendv_ps(f, v.hi, lane_mask(n - 8))};
  }
  static void store(float* p, vec a) {
    _mm256_storeu_ps(p, a.lo);
    _mm256_storeu_ps(p + 8, a.hi);
  }
  static void store(bf16_t* p, vec a) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), narrow(a)); }
  template <class T>
  static void store_partial(T* p, vec a, int n) {
    T buf[kLanes];
    store(buf, a);
    std::memcpy(p, buf, sizeof(T) * n);
  }
  static vec fma(vec a, vec b, vec c) {  // a * b + c
    return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)};
  }
  static vec add(vec a, vec b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
  static vec sub(vec a, vec b) { return {_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi)}; }
  static vec mul(vec a, vec b) { return {_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)}; }
  static vec div(vec a, vec b) { return {_mm256_div_ps(a.lo, b.lo), _mm256_div_ps(a.hi, b.hi)}; }
  static vec max(vec a, vec b) { return {_mm256_max_ps(a.lo, b.lo), _mm256_max_ps(a.hi, b.hi)}; }
  static float reduce_add(vec a) { return hsum(_mm256_add_ps(a.lo, a.hi)); }
  static float reduce_max(vec a) {
    const __m256 m8 = _mm256_max_ps(a.lo, a.hi);
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(m8), _mm256_extractf128_ps(m8, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
  }
  static vec exp(vec x) { return {exp8(x.lo), exp8(x.hi)}; }
  static vec round_to(vec a, float*) { return a; }
  static vec round_to(vec a, bf16_t*) {  // the bf16 bits kept in place: no pack and unpack
    const __m256i high = _mm256_set1_epi32(static_cast<int>(0xffff0000u));
    return {_mm256_castsi256_ps(_mm256_and_si256(round_bits(a.lo), high)),
            _mm256_castsi256_ps(_mm256_and_si256(round_bits(a.hi), high))};
  }

  // Lane t of the result = the sum of v[t]'s 16 lanes: each v[t] folded to 8 lanes, then two
  // 8-vector transposing sums.
  static vec transpose_sum(const vec (&v)[kLanes]) {
    __m256 folded[kLanes];
    for (int t = 0; t < kLanes; ++t) folded[t] = _mm256_add_ps(v[t].lo, v[t].hi);
    return {transpose_sum8(folded), transpose_sum8(folded + 8)};
  }

  // Lane t = q . k_t for the n <= 16 rows k_t = k + t * stride of kDim elements; lanes >= n are 0.
  // Each row is summed into one 8-lane accumulator (two chains, for the fma latency); q is
  // widened once. 16 ymm registers cannot hold Avx512's 16 row vectors and q, so the rows are
  // reduced 8 at a time.
  template <int kDim, class T>
  static vec dot16(const T* q, const T* k, int64_t stride, int n) {
    static_assert(kDim % kLanes == 0, "head sizes are whole vectors");
    __m256 qv[kDim / 8];
    for (int c = 0; c < kDim / 8; ++c) qv[c] = load8f(q + 8 * c);
    __m256 dots[kLanes];
    for (int t = 0; t < kLanes; ++t) {
      __m256 even = _mm256_setzero_ps(), odd = _mm256_setzero_ps();
      if (t < n) {
        const T* row = k + t * stride;
        for (int c = 0; c < kDim / 8; c += 2) {
          even = _mm256_fmadd_ps(qv[c], load8f(row + 8 * c), even);
          odd = _mm256_fmadd_ps(qv[c + 1], load8f(row + 8 * c + 8), odd);
        }
      }
      dots[t] = _mm256_add_ps(even, odd);
    }
    return {transpose_sum8(dots), transpose_sum8(dots + 8)};
  }

  // Lane t of the result = the sum of s[t]'s 8 lanes (t < 8).
  //   unpack lo/hi + add:  pairs (s0, s1)      -> per 128-bit half [s0 s1 s0 s1] partial sums
  //   shuffle_ps + add:    (s0s1, s2s3)        -> per 128-bit half [s0 s1 s2 s3]
  //   permute2f128 + add:  the two halves summed, s0..s3 in lanes 0-3 and s4..s7 in lanes 4-7
  static __m256 transpose_sum8(const __m256* s) {
    __m256 pairs[4], quads[2];
    for (int i = 0; i < 4; ++i)
      pairs[i] = _mm256_add_ps(_mm256_unpacklo_ps(s[2 * i], s[2 * i + 1]), _mm256_unpackhi_ps(s[2 * i], s[2 * i + 1]));
    for (int i = 0; i < 2; ++i)
      quads[i] = _mm256_add_ps(_mm256_shuffle_ps(pairs[2 * i], pairs[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                               _mm256_shuffle_ps(pairs[2 * i], pairs[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm256_add_ps(_mm256_permute2f128_ps(quads[0], quads[1], 0x20),
                         _mm256_permute2f128_ps(quads[0], quads[1], 0x31));
  }

  // exp(x) as Avx512::exp computes it: x = n ln2 + r with |r| <= ln2 / 2, Cephes' degree-6
  // polynomial p for e^r, times 2^n. AVX2 has no scalef, and over [-104, 89] n runs from -150 to
  // 128, beyond one normal float's exponent at both ends, so 2^n is applied in two halves: n / 2
  // added into p's exponent bits (exact: p 2^(n/2) stays normal), then one multiply by the normal
  // 2^(n - n/2), which rounds a subnormal result (x < -87.3) or overflows to inf (x > 88.7) once,
  // as scalef does. (Two float multiplies would not do: -ffast-math may reassociate them into
  // p * 2^n, which over- or underflows.) Below -104 (and NaN) the result is exactly 0, so a -inf
  // score (a masked token) gets probability 0.
  static __m256 exp8(__m256 x) {
    const __m256 live = _mm256_cmp_ps(x, _mm256_set1_ps(-104.0f), _CMP_GE_OQ);
    // Clamped into range (NaN becomes 89: min returns its second operand) so that the masked
    // lanes' integer exponents stay in range too.
    x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(89.0f)), _mm256_set1_ps(-104.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(exp_cephes::kLog2e)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(exp_cephes::kLn2Hi), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(exp_cephes::kLn2Lo), r);
    __m256 p = _mm256_set1_ps(exp_cephes::kExpPoly[0]);
    for (int i = 1; i < 6; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(exp_cephes::kExpPoly[i]));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i ni = _mm256_cvtps_epi32(n);
    const __m256i half = _mm256_srai_epi32(ni, 1);
    const __m256 p_half = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p), _mm256_slli_epi32(half, 23)));
    return _mm256_and_ps(_mm256_mul_ps(p_half, pow2(_mm256_sub_epi32(ni, half))), live);
  }

  // 8 bf16 -> 8 fp32 (zero-extend, shift into the high half) and 8 fp32 -> 8 fp32 as they are.
  static __m256 load8f(const float* p) { return _mm256_loadu_ps(p); }
  static __m256 load8f(const bf16_t* p) { return widen(load8(p)); }
  static __m256 widen(__m128i bf16) { return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(bf16), 16)); }

 private:
  static __m128i load8(const bf16_t* p) { return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)); }
  static __m256 lane_mask(int n) {  // all ones in lanes < n
    return _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
  }
  static __m256 pow2(__m256i n) {  // 2^n for a normal exponent n
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n, _mm256_set1_epi32(127)), 23));
  }
  static float hsum(__m256 a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
  }
  // fp32 bits with the bf16 of f32_to_bf16 in their high half: round to nearest even, NaN made
  // quiet (the same bits as the scalar conversion, integer compares so -ffast-math cannot fold
  // the NaN test away).
  static __m256i round_bits(__m256 a) {
    const __m256i bits = _mm256_castps_si256(a);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
    const __m256i rounded = _mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0x7fffffff)),
                                           _mm256_set1_epi32(0x7f800000));
    return _mm256_blendv_epi8(rounded, _mm256_or_si256(bits, _mm256_set1_epi32(0x400000)), nan);
  }
  static __m256i narrow(vec a) {  // 16 fp32 -> 16 bf16
    // packus works within 128-bit halves: [lo0-3 hi0-3 | lo4-7 hi4-7]; the permute restores the order.
    const __m256i packed = _mm256_packus_epi32(_mm256_srli_epi32(round_bits(a.lo), 16),
                                               _mm256_srli_epi32(round_bits(a.hi), 16));
    return _mm256_permute4x64_epi64(packed, _MM_SHUFFLE(3, 1, 2, 0));
  }
};
#endif

}  // namespace swiftserve::cpu

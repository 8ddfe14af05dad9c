// Applies grammar token bitmasks to float32 logits in place: every token whose bit is clear is set
// to -inf. One int32 word holds 32 tokens, bit j of word i token 32 * i + j (llguidance's and
// xgrammar's layout). Tokens past the mask's width are disallowed. Single-threaded on purpose: it
// runs between the forward and the sampler, while the OpenMP team may be busy with another
// engine's step, and a fork of that team costs more than the few microseconds a row takes here.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>

namespace swiftserve::cpu {

struct TokenBitmaskArgs {
  float* logits;              // [*, vocab_size]: rows[k] is masked with bitmask row k
  int64_t logits_stride;      // between logits rows, in elements
  const int32_t* bitmask;     // [num_rows, num_words]
  int64_t bitmask_stride;     // between bitmask rows, in words
  const int64_t* rows;        // [num_rows]: the logits row of each bitmask row
  int64_t num_rows;
  int64_t vocab_size;
  int64_t num_words;
};

inline void mask_word(float* out, uint32_t bits, int64_t count) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  if (bits == 0) {  // the common case in a grammar: nothing of these 32 is allowed
    std::fill(out, out + count, kNegInf);
    return;
  }
  for (int64_t j = 0; j < count; ++j)
    if (!((bits >> j) & 1u)) out[j] = kNegInf;
}

inline void mask_row(float* logits, const uint32_t* words, int64_t vocab_size, int64_t num_words) {
  const int64_t covered = std::min(vocab_size, num_words * 32);
  for (int64_t w = 0; w * 32 < covered; ++w) {
    if (words[w] == 0xFFFFFFFFu) continue;  // all 32 allowed
    mask_word(logits + w * 32, words[w], std::min<int64_t>(32, covered - w * 32));
  }
  std::fill(logits + covered, logits + vocab_size, -std::numeric_limits<float>::infinity());
}

inline void apply_token_bitmask(const TokenBitmaskArgs& a) {
  for (int64_t k = 0; k < a.num_rows; ++k) {
    const auto* words = reinterpret_cast<const uint32_t*>(a.bitmask + k * a.bitmask_stride);
    mask_row(a.logits + a.rows[k] * a.logits_stride, words, a.vocab_size, a.num_words);
  }
}

}  // namespace swiftserve::cpu

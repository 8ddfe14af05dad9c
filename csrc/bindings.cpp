// swiftserve._C: the one bindings file. Functions take tensors as integer addresses
// (tensor.data_ptr()) plus sizes and element strides, so the module needs no libtorch; the
// Python wrappers in kernels/cpp_ops.py check shapes, dtypes and devices before calling here,
// always by keyword: kernels/cpp_native.py builds its callers from the py::arg names below.
// Every kernel releases the GIL while it runs.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "cpu/activation.h"
#include "cpu/cache.h"
#include "cpu/chunk_reader.h"
#include "cpu/linear.h"
#include "cpu/llama_decode.h"
#include "cpu/norm.h"
#include "cpu/paged_attention.h"
#include "cpu/rotary.h"
#include "cpu/token_bitmask.h"

namespace py = pybind11;
using namespace swiftserve::cpu;

namespace {

template <class T>
struct Tag {
  using type = T;
};

template <class T>
T* ptr(uintptr_t address) {
  return reinterpret_cast<T*>(address);
}

// The flavour a kernel runs unless `generic` asks for the portable one (cpu/vec.h).
#if SWIFTSERVE_HAS_AVX512
using NativeIsa = Avx512;
#elif SWIFTSERVE_HAS_AVX2
using NativeIsa = Avx2;
#else
using NativeIsa = Generic;
#endif

// Calls fn(Tag<Isa>, Tag<T>) for the vector flavour and storage type asked for.
template <class Fn>
void dispatch(const std::string& dtype, bool generic, Fn&& fn) {
  auto with_isa = [&](auto isa) {
    if (dtype == "float32") {
      fn(isa, Tag<float>{});
    } else if (dtype == "bfloat16") {
      fn(isa, Tag<bf16_t>{});
    } else {
      throw py::value_error("swiftserve._C: unsupported dtype '" + dtype + "' (float32 or bfloat16)");
    }
  };
  if (!generic) return with_isa(Tag<NativeIsa>{});  // the portable build: Generic either way
  with_isa(Tag<Generic>{});
}

constexpr int kHeadDims[] = {32, 64, 80, 96, 128, 256};

template <class Fn>
void dispatch_head_dim(int head_dim, Fn&& fn) {
  switch (head_dim) {
    case 32: return fn(std::integral_constant<int, 32>{});
    case 64: return fn(std::integral_constant<int, 64>{});
    case 80: return fn(std::integral_constant<int, 80>{});
    case 96: return fn(std::integral_constant<int, 96>{});
    case 128: return fn(std::integral_constant<int, 128>{});
    case 256: return fn(std::integral_constant<int, 256>{});
    default: throw py::value_error("swiftserve._C: unsupported head_dim " + std::to_string(head_dim));
  }
}

void check_heads(int num_heads, int num_kv_heads) {
  if (num_kv_heads <= 0 || num_heads % num_kv_heads != 0)
    throw py::value_error("num_heads (" + std::to_string(num_heads) + ") must be a multiple of num_kv_heads (" +
                          std::to_string(num_kv_heads) + ")");
  if (num_heads / num_kv_heads > kMaxRows)
    throw py::value_error("swiftserve._C: at most " + std::to_string(kMaxRows) + " query heads per KV head");
}

// Every block a sequence's context needs must be listed and exist: a bad id would read out of
// bounds. O(total blocks), negligible next to the attention itself.
void check_paged(const PagedKV& kv, int64_t num_blocks, int64_t max_blocks_per_seq, const int32_t* context_lens,
                 int num_seqs) {
  if (kv.block_size <= 0) throw py::value_error("block_size must be positive");
  for (int s = 0; s < num_seqs; ++s) {
    const int64_t ctx = context_lens[s];
    if (ctx < 0 || ctx > max_blocks_per_seq * kv.block_size)
      throw py::value_error("context_lens[" + std::to_string(s) + "] = " + std::to_string(ctx) +
                            " is negative or exceeds the block table (" + std::to_string(max_blocks_per_seq) +
                            " blocks of " + std::to_string(kv.block_size) + ")");
    const int32_t* table = kv.block_tables + s * kv.block_table_stride;
    for (int64_t b = 0; b < (ctx + kv.block_size - 1) / kv.block_size; ++b)
      if (table[b] < 0 || table[b] >= num_blocks)
        throw py::value_error("block_tables[" + std::to_string(s) + "][" + std::to_string(b) + "] = " +
                              std::to_string(table[b]) + " is not a block of the cache (" + std::to_string(num_blocks) +
                              " blocks)");
  }
}

PagedKV make_paged(uintptr_t k_cache, uintptr_t v_cache, int64_t stride_block, int64_t stride_token,
                   int64_t stride_head, uintptr_t block_tables, int64_t block_table_stride, int block_size) {
  return PagedKV{ptr<const void>(k_cache), ptr<const void>(v_cache), stride_block, stride_token, stride_head,
                 ptr<const int32_t>(block_tables), block_table_stride, block_size};
}

void paged_decode_attention_py(uintptr_t out, int64_t out_stride_seq, int64_t out_stride_head, uintptr_t q,
                               int64_t q_stride_seq, int64_t q_stride_head, uintptr_t k_cache, uintptr_t v_cache,
                               int64_t num_blocks, int block_size, int64_t kv_stride_block, int64_t kv_stride_token,
                               int64_t kv_stride_head, uintptr_t block_tables, int64_t max_blocks_per_seq,
                               int64_t block_table_stride, uintptr_t context_lens, int num_seqs, int num_heads,
                               int num_kv_heads, int head_dim, float scale, int sliding_window,
                               const std::string& dtype, bool generic) {
  check_heads(num_heads, num_kv_heads);
  DecodeArgs args{ptr<void>(out), out_stride_seq, out_stride_head, ptr<const void>(q), q_stride_seq, q_stride_head,
                  make_paged(k_cache, v_cache, kv_stride_block, kv_stride_token, kv_stride_head, block_tables,
                             block_table_stride, block_size),
                  ptr<const int32_t>(context_lens), num_seqs, num_heads, num_kv_heads, head_dim, scale,
                  sliding_window};
  check_paged(args.kv, num_blocks, max_blocks_per_seq, args.context_lens, num_seqs);
  dispatch(dtype, generic, [&](auto isa, auto t) {
    dispatch_head_dim(head_dim, [&](auto d) {
      py::gil_scoped_release release;
      paged_decode_attention<typename decltype(isa)::type, typename decltype(t)::type, decltype(d)::value>(args);
    });
  });
}

void paged_prefill_attention_py(uintptr_t out, int64_t out_stride_token, int64_t out_stride_head, uintptr_t q,
                                int64_t q_stride_token, int64_t q_stride_head, uintptr_t k_cache, uintptr_t v_cache,
                                int64_t num_blocks, int block_size, int64_t kv_stride_block, int64_t kv_stride_token,
                                int64_t kv_stride_head, uintptr_t block_tables, int64_t max_blocks_per_seq,
                                int64_t block_table_stride, uintptr_t query_start_loc, uintptr_t context_lens,
                                int num_seqs, int num_tokens, int num_heads, int num_kv_heads, int head_dim,
                                float scale, int sliding_window, const std::string& dtype, bool generic) {
  check_heads(num_heads, num_kv_heads);
  PrefillArgs args{ptr<void>(out), out_stride_token, out_stride_head, ptr<const void>(q), q_stride_token,
                   q_stride_head,
                   make_paged(k_cache, v_cache, kv_stride_block, kv_stride_token, kv_stride_head, block_tables,
                              block_table_stride, block_size),
                   ptr<const int32_t>(query_start_loc), ptr<const int32_t>(context_lens), num_seqs, num_heads,
                   num_kv_heads, head_dim, scale, sliding_window};
  check_paged(args.kv, num_blocks, max_blocks_per_seq, args.context_lens, num_seqs);
  if (args.query_start_loc[0] != 0 || args.query_start_loc[num_seqs] != num_tokens)
    throw py::value_error("query_start_loc must start at 0 and end at the number of query tokens");
  for (int s = 0; s < num_seqs; ++s) {
    const int q_len = args.query_start_loc[s + 1] - args.query_start_loc[s];
    if (q_len < 0 || q_len > args.context_lens[s])
      throw py::value_error("sequence " + std::to_string(s) + " has " + std::to_string(q_len) +
                            " query tokens but context_lens " + std::to_string(args.context_lens[s]) +
                            " (query_start_loc must be non-decreasing, context_lens >= query length)");
  }
  dispatch(dtype, generic, [&](auto isa, auto t) {
    dispatch_head_dim(head_dim, [&](auto d) {
      py::gil_scoped_release release;
      paged_prefill_attention<typename decltype(isa)::type, typename decltype(t)::type, decltype(d)::value>(args);
    });
  });
}

NormArgs make_norm(uintptr_t out, int64_t out_stride, uintptr_t residual, int64_t residual_stride, uintptr_t x,
                   int64_t x_stride, uintptr_t weight, int64_t num_rows, int hidden, float eps) {
  if (hidden <= 0) throw py::value_error("hidden size must be positive");
  return NormArgs{ptr<void>(out), ptr<void>(residual), ptr<const void>(x), ptr<const void>(weight), out_stride,
                  residual_stride, x_stride, num_rows, hidden, eps};
}

void rms_norm_py(uintptr_t out, int64_t out_stride, uintptr_t x, int64_t x_stride, uintptr_t weight,
                 int64_t num_rows, int hidden, float eps, const std::string& dtype, bool generic) {
  const NormArgs args = make_norm(out, out_stride, 0, 0, x, x_stride, weight, num_rows, hidden, eps);
  dispatch(dtype, generic, [&](auto isa, auto t) {
    py::gil_scoped_release release;
    rms_norm<typename decltype(isa)::type, typename decltype(t)::type>(args);
  });
}

void fused_add_rms_norm_py(uintptr_t x, int64_t x_stride, uintptr_t residual, int64_t residual_stride,
                           uintptr_t weight, int64_t num_rows, int hidden, float eps, const std::string& dtype,
                           bool generic) {
  const NormArgs args = make_norm(x, x_stride, residual, residual_stride, x, x_stride, weight, num_rows, hidden, eps);
  dispatch(dtype, generic, [&](auto isa, auto t) {
    py::gil_scoped_release release;
    fused_add_rms_norm<typename decltype(isa)::type, typename decltype(t)::type>(args);
  });
}

void silu_and_mul_py(uintptr_t out, int64_t out_stride, uintptr_t x, int64_t x_stride, int64_t num_rows, int d,
                     const std::string& dtype, bool generic) {
  const SiluMulArgs args{ptr<void>(out), ptr<const void>(x), out_stride, x_stride, num_rows, d};
  dispatch(dtype, generic, [&](auto isa, auto t) {
    py::gil_scoped_release release;
    silu_and_mul<typename decltype(isa)::type, typename decltype(t)::type>(args);
  });
}

// Rotary reads row positions[t] of the cos/sin cache.
void check_positions(const int64_t* positions, int64_t num_tokens, int64_t max_position) {
  for (int64_t t = 0; t < num_tokens; ++t)
    if (positions[t] < 0 || positions[t] >= max_position)
      throw py::value_error("positions[" + std::to_string(t) + "] = " + std::to_string(positions[t]) +
                            " is outside the cos/sin cache (" + std::to_string(max_position) + " positions)");
}

void rotary_embedding_py(uintptr_t positions, uintptr_t q, int64_t q_stride_token, int64_t q_stride_head, uintptr_t k,
                         int64_t k_stride_token, int64_t k_stride_head, uintptr_t cos_sin_cache, int64_t max_position,
                         int64_t num_tokens, int num_heads, int num_kv_heads, int rot_dim, bool is_neox,
                         const std::string& dtype, bool generic) {
  if (rot_dim <= 0 || rot_dim % 2) throw py::value_error("rotary dim must be even and positive");
  const RotaryArgs args{ptr<void>(q), ptr<void>(k), q_stride_token, q_stride_head, k_stride_token, k_stride_head,
                        ptr<const int64_t>(positions), ptr<const float>(cos_sin_cache), num_tokens, num_heads,
                        num_kv_heads, rot_dim, is_neox};
  check_positions(args.positions, num_tokens, max_position);
  dispatch(dtype, generic, [&](auto isa, auto t) {
    py::gil_scoped_release release;
    rotary_embedding<typename decltype(isa)::type, typename decltype(t)::type>(args);
  });
}

void store_kv_py(uintptr_t k, int64_t k_stride_token, int64_t k_stride_head, uintptr_t v, int64_t v_stride_token,
                 int64_t v_stride_head, uintptr_t k_cache, uintptr_t v_cache, int64_t num_blocks, int block_size,
                 int64_t cache_stride_block, int64_t cache_stride_token, int64_t cache_stride_head,
                 uintptr_t slot_mapping, int64_t num_tokens, int num_kv_heads, int head_dim, int element_size) {
  const StoreKVArgs args{ptr<const char>(k), ptr<const char>(v), ptr<char>(k_cache), ptr<char>(v_cache),
                         k_stride_token * element_size, k_stride_head * element_size, v_stride_token * element_size,
                         v_stride_head * element_size, cache_stride_block * element_size,
                         cache_stride_token * element_size, cache_stride_head * element_size,
                         ptr<const int64_t>(slot_mapping), num_tokens, num_kv_heads, block_size,
                         static_cast<int64_t>(head_dim) * element_size};
  for (int64_t t = 0; t < num_tokens; ++t)
    if (args.slot_mapping[t] >= num_blocks * block_size)
      throw py::value_error("slot_mapping[" + std::to_string(t) + "] = " + std::to_string(args.slot_mapping[t]) +
                            " is past the cache (" + std::to_string(num_blocks * block_size) + " slots)");
  py::gil_scoped_release release;
  store_kv(args);
}

void linear_py(uintptr_t out, int64_t out_stride, uintptr_t x, int64_t x_stride, uintptr_t weight,
               int64_t weight_stride, uintptr_t bias, int64_t m, int64_t n, int64_t k, const std::string& dtype,
               bool generic) {
  if (m < 0 || n <= 0 || k <= 0) throw py::value_error("linear: m must be >= 0 and n, k positive");
  const LinearArgs args{ptr<void>(out), ptr<const void>(x), ptr<const void>(weight), ptr<const void>(bias),
                        out_stride, x_stride, weight_stride, m, n, k};
  dispatch(dtype, generic, [&](auto isa, auto t) {
    py::gil_scoped_release release;
    linear<typename decltype(isa)::type, typename decltype(t)::type>(args);
  });
}

// Checks what every layer shares once per step (the block tables, positions, slots); the
// caller (kernels/cpp_llama_decode.py) checks the weight table when it builds it.
void llama_decode_layers_py(uintptr_t layers, int num_layers, int hidden, int num_heads, int num_kv_heads,
                            int head_dim, int intermediate, int rot_dim, float eps, float scale, int sliding_window,
                            bool is_neox, int64_t m, uintptr_t x, uintptr_t residual, uintptr_t qkv, uintptr_t attn,
                            uintptr_t gate_up, uintptr_t act, uintptr_t positions, uintptr_t slot_mapping,
                            uintptr_t cos_sin_cache, int64_t max_position, uintptr_t block_tables,
                            int64_t max_blocks_per_seq, int64_t block_table_stride, uintptr_t context_lens,
                            int64_t num_blocks, int block_size, int64_t cache_stride_block,
                            int64_t cache_stride_token, int64_t cache_stride_head, const std::string& dtype,
                            bool generic) {
  check_heads(num_heads, num_kv_heads);
  if (num_layers <= 0 || m <= 0 || hidden <= 0 || intermediate <= 0)
    throw py::value_error("llama_decode_layers: layers, tokens, hidden and intermediate sizes must be positive");
  if (rot_dim <= 0 || rot_dim % 2 || rot_dim > head_dim)
    throw py::value_error("llama_decode_layers: rotary dim must be even, positive and <= head_dim");
  const LlamaDecodeArgs args{ptr<const LlamaLayerPtrs>(layers), num_layers, hidden, num_heads, num_kv_heads,
                             head_dim, intermediate, rot_dim, eps, scale, sliding_window, is_neox, m, ptr<void>(x),
                             ptr<void>(residual), ptr<void>(qkv), ptr<void>(attn), ptr<void>(gate_up), ptr<void>(act),
                             ptr<const int64_t>(positions), ptr<const int64_t>(slot_mapping),
                             ptr<const float>(cos_sin_cache), ptr<const int32_t>(block_tables), block_table_stride,
                             ptr<const int32_t>(context_lens), block_size, cache_stride_block, cache_stride_token,
                             cache_stride_head};
  const PagedKV kv{nullptr, nullptr, cache_stride_block, cache_stride_token, cache_stride_head, args.block_tables,
                   block_table_stride, block_size};
  check_paged(kv, num_blocks, max_blocks_per_seq, args.context_lens, static_cast<int>(m));
  check_positions(args.positions, m, max_position);
  for (int64_t t = 0; t < m; ++t) {
    if (args.slot_mapping[t] < 0 || args.slot_mapping[t] >= num_blocks * block_size)
      throw py::value_error("slot_mapping[" + std::to_string(t) + "] = " + std::to_string(args.slot_mapping[t]) +
                            " is not a slot of the cache (" + std::to_string(num_blocks * block_size) + " slots)");
    if (args.context_lens[t] < 1)
      throw py::value_error("context_lens[" + std::to_string(t) + "] must count the decoded token itself");
  }
  dispatch(dtype, generic, [&](auto isa, auto t) {
    dispatch_head_dim(head_dim, [&](auto d) {
      py::gil_scoped_release release;
      llama_decode_layers<typename decltype(isa)::type, typename decltype(t)::type, decltype(d)::value>(args);
    });
  });
}

// A probe of the vector layer itself, for tests (tests/kernels/test_cpp_vec.py): out[i] = op(x[i])
// for n float32 inputs, 16 lanes at a time through load / load_partial, the op and store /
// store_partial in T, so the bf16 rounding, exp's extremes and every tail length are checked
// directly instead of through a kernel's arithmetic.
template <class Isa, class T>
void vec_probe(T* out, const float* x, int64_t n, bool exp) {
  auto op = [exp](typename Isa::vec v) { return exp ? Isa::exp(v) : v; };
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes) Isa::store(out + i, op(Isa::load(x + i)));
  if (i < n) Isa::store_partial(out + i, op(Isa::load_partial(x + i, static_cast<int>(n - i))), static_cast<int>(n - i));
}

void vec_probe_py(uintptr_t out, uintptr_t x, int64_t n, const std::string& op, const std::string& dtype,
                  bool generic) {
  if (op != "copy" && op != "exp") throw py::value_error("vec_probe: op must be 'copy' or 'exp', got '" + op + "'");
  if (n < 0) throw py::value_error("vec_probe: n must be >= 0");
  dispatch(dtype, generic, [&](auto isa, auto t) {
    using T = typename decltype(t)::type;
    vec_probe<typename decltype(isa)::type, T>(ptr<T>(out), ptr<const float>(x), n, op == "exp");
  });
}

// rows are checked against num_logits_rows here, with the GIL, so no row can land past logits.
void apply_token_bitmask_py(uintptr_t logits, int64_t logits_stride, int64_t num_logits_rows, uintptr_t bitmask,
                            int64_t bitmask_stride, uintptr_t rows, int64_t num_rows, int64_t vocab_size,
                            int64_t num_words) {
  const TokenBitmaskArgs args{ptr<float>(logits), logits_stride, ptr<const int32_t>(bitmask), bitmask_stride,
                              ptr<const int64_t>(rows), num_rows, vocab_size, num_words};
  for (int64_t k = 0; k < num_rows; ++k)
    if (args.rows[k] < 0 || args.rows[k] >= num_logits_rows)
      throw py::value_error("rows[" + std::to_string(k) + "] = " + std::to_string(args.rows[k]) +
                            " is not a row of logits (" + std::to_string(num_logits_rows) + " rows)");
  py::gil_scoped_release release;
  apply_token_bitmask(args);
}

// A ReadError as the Python exception a file read raises: OSError with errno (its subclass, e.g.
// FileNotFoundError, picked by errno as Python's own I/O does) and filename; EOFError when the
// file ended before the range did.
[[noreturn]] void raise_read_error(const ReadError& e, const std::string& path) {
  if (e.error_number == 0) {
    PyErr_SetString(PyExc_EOFError, e.what());
    throw py::error_already_set();
  }
  py::object error = py::handle(PyExc_OSError)(e.error_number, std::string(e.what()) + ": " +
                                                                   std::strerror(e.error_number));
  error.attr("filename") = path;
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(error.ptr())), error.ptr());
  throw py::error_already_set();
}

// The lists are copied into vectors while the GIL is held; every read then runs without it.
// Bad arguments and ranges past the end of the file raise ValueError (std::invalid_argument).
void read_chunks_py(const std::string& path, const std::vector<int64_t>& file_offsets,
                    const std::vector<int64_t>& lengths, const std::vector<uintptr_t>& dst_ptrs, int num_threads,
                    bool direct, int64_t chunk_bytes) {
  if (file_offsets.size() != lengths.size() || lengths.size() != dst_ptrs.size())
    throw py::value_error("read_chunks: file_offsets, lengths and dst_ptrs must have one entry per chunk (got " +
                          std::to_string(file_offsets.size()) + ", " + std::to_string(lengths.size()) + ", " +
                          std::to_string(dst_ptrs.size()) + ")");
  std::vector<char*> dst(dst_ptrs.size());
  for (size_t i = 0; i < dst.size(); ++i) dst[i] = ptr<char>(dst_ptrs[i]);
  const ReadChunksArgs args{path.c_str(), file_offsets.data(), lengths.data(), dst.data(),
                            static_cast<int64_t>(dst.size()), num_threads, direct, chunk_bytes};
  try {
    py::gil_scoped_release release;
    read_chunks(args);
  } catch (const ReadError& e) {  // the GIL is held again here: release ended with its scope
    raise_read_error(e, path);
  }
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "swiftserve native CPU kernels (raw pointers; see swiftserve.kernels.cpp_ops for the torch API)";
  m.attr("isa") = NativeIsa::name;  // "avx512", "avx2" or "generic": what generic=False runs
#ifdef SWIFTSERVE_PORTABLE_BUILD
  m.attr("portable") = true;  // SWIFTSERVE_PORTABLE=1: built without -march=native
#else
  m.attr("portable") = false;
#endif
  py::list head_dims;
  for (int d : kHeadDims) head_dims.append(d);
  m.attr("head_dims") = head_dims;
  m.attr("max_group") = kMaxRows;
  m.def("num_threads", &max_threads, "OpenMP threads the kernels use");
  m.def("paged_decode_attention", &paged_decode_attention_py, py::arg("out"), py::arg("out_stride_seq"),
        py::arg("out_stride_head"), py::arg("q"), py::arg("q_stride_seq"), py::arg("q_stride_head"),
        py::arg("k_cache"), py::arg("v_cache"), py::arg("num_blocks"), py::arg("block_size"),
        py::arg("kv_stride_block"), py::arg("kv_stride_token"), py::arg("kv_stride_head"), py::arg("block_tables"),
        py::arg("max_blocks_per_seq"), py::arg("block_table_stride"), py::arg("context_lens"), py::arg("num_seqs"),
        py::arg("num_heads"), py::arg("num_kv_heads"), py::arg("head_dim"), py::arg("scale"),
        py::arg("sliding_window"), py::arg("dtype"), py::arg("generic") = false,
        "Paged decode attention (one query token per sequence).");
  m.def("paged_prefill_attention", &paged_prefill_attention_py, py::arg("out"), py::arg("out_stride_token"),
        py::arg("out_stride_head"), py::arg("q"), py::arg("q_stride_token"), py::arg("q_stride_head"),
        py::arg("k_cache"), py::arg("v_cache"), py::arg("num_blocks"), py::arg("block_size"),
        py::arg("kv_stride_block"), py::arg("kv_stride_token"), py::arg("kv_stride_head"), py::arg("block_tables"),
        py::arg("max_blocks_per_seq"), py::arg("block_table_stride"), py::arg("query_start_loc"),
        py::arg("context_lens"), py::arg("num_seqs"), py::arg("num_tokens"), py::arg("num_heads"),
        py::arg("num_kv_heads"), py::arg("head_dim"), py::arg("scale"), py::arg("sliding_window"), py::arg("dtype"),
        py::arg("generic") = false, "Varlen causal paged prefill attention.");
  m.def("rms_norm", &rms_norm_py, py::arg("out"), py::arg("out_stride"), py::arg("x"), py::arg("x_stride"),
        py::arg("weight"), py::arg("num_rows"), py::arg("hidden"), py::arg("eps"), py::arg("dtype"),
        py::arg("generic") = false, "out = rms_norm(x) * weight, row by row.");
  m.def("fused_add_rms_norm", &fused_add_rms_norm_py, py::arg("x"), py::arg("x_stride"), py::arg("residual"),
        py::arg("residual_stride"), py::arg("weight"), py::arg("num_rows"), py::arg("hidden"), py::arg("eps"),
        py::arg("dtype"), py::arg("generic") = false, "residual += x; x = rms_norm(residual) * weight, in place.");
  m.def("silu_and_mul", &silu_and_mul_py, py::arg("out"), py::arg("out_stride"), py::arg("x"), py::arg("x_stride"),
        py::arg("num_rows"), py::arg("d"), py::arg("dtype"), py::arg("generic") = false,
        "out = silu(x[:, :d]) * x[:, d:].");
  m.attr("llama_layer_fields") = kLlamaLayerFields;
  m.def("llama_decode_layers", &llama_decode_layers_py, py::arg("layers"), py::arg("num_layers"), py::arg("hidden"),
        py::arg("num_heads"), py::arg("num_kv_heads"), py::arg("head_dim"), py::arg("intermediate"),
        py::arg("rot_dim"), py::arg("eps"), py::arg("scale"), py::arg("sliding_window"), py::arg("is_neox"),
        py::arg("m"), py::arg("x"), py::arg("residual"), py::arg("qkv"), py::arg("attn"), py::arg("gate_up"),
        py::arg("act"), py::arg("positions"), py::arg("slot_mapping"), py::arg("cos_sin_cache"),
        py::arg("max_position"), py::arg("block_tables"), py::arg("max_blocks_per_seq"),
        py::arg("block_table_stride"), py::arg("context_lens"), py::arg("num_blocks"), py::arg("block_size"),
        py::arg("cache_stride_block"), py::arg("cache_stride_token"), py::arg("cache_stride_head"),
        py::arg("dtype"), py::arg("generic") = false,
        "Every decoder layer of a Llama-family model for m single-token decodes (see cpu/llama_decode.h).");
  m.def("linear", &linear_py, py::arg("out"), py::arg("out_stride"), py::arg("x"), py::arg("x_stride"),
        py::arg("weight"), py::arg("weight_stride"), py::arg("bias"), py::arg("m"), py::arg("n"), py::arg("k"),
        py::arg("dtype"), py::arg("generic") = false,
        "out[m, n] = x[m, k] @ weight[n, k]^T (+ bias; 0 = none), built for small m (decode).");
  m.def("rotary_embedding", &rotary_embedding_py, py::arg("positions"), py::arg("q"), py::arg("q_stride_token"),
        py::arg("q_stride_head"), py::arg("k"), py::arg("k_stride_token"), py::arg("k_stride_head"),
        py::arg("cos_sin_cache"), py::arg("max_position"), py::arg("num_tokens"), py::arg("num_heads"),
        py::arg("num_kv_heads"), py::arg("rot_dim"), py::arg("is_neox"), py::arg("dtype"),
        py::arg("generic") = false, "Rotates q and k in place by the cos/sin rows of positions (int64).");
  m.def("store_kv", &store_kv_py, py::arg("k"), py::arg("k_stride_token"), py::arg("k_stride_head"), py::arg("v"),
        py::arg("v_stride_token"), py::arg("v_stride_head"), py::arg("k_cache"), py::arg("v_cache"),
        py::arg("num_blocks"), py::arg("block_size"), py::arg("cache_stride_block"), py::arg("cache_stride_token"),
        py::arg("cache_stride_head"), py::arg("slot_mapping"), py::arg("num_tokens"), py::arg("num_kv_heads"),
        py::arg("head_dim"), py::arg("element_size"),
        "Copies k, v rows into the paged cache at slot_mapping (int64; -1 skips).");
  m.def("apply_token_bitmask", &apply_token_bitmask_py, py::arg("logits"), py::arg("logits_stride"),
        py::arg("num_logits_rows"), py::arg("bitmask"), py::arg("bitmask_stride"), py::arg("rows"),
        py::arg("num_rows"), py::arg("vocab_size"), py::arg("num_words"),
        "Sets logits[rows[k], t] (float32) to -inf where bit t of bitmask row k is clear (int32 words; "
        "tokens past num_words * 32 too; see cpu/token_bitmask.h).");
  m.def("vec_probe", &vec_probe_py, py::arg("out"), py::arg("x"), py::arg("n"), py::arg("op"), py::arg("dtype"),
        py::arg("generic") = false,
        "Tests only: out[i] = op(x[i]) ('copy' or 'exp') for n float32 x, through the vector flavour's "
        "loads, op and stores in dtype (partial ones for the tail).");
  m.attr("direct_align") = kDirectAlign;
  m.def("read_chunks", &read_chunks_py, py::arg("path"), py::arg("file_offsets"), py::arg("lengths"),
        py::arg("dst_ptrs"), py::arg("num_threads"), py::arg("direct"), py::arg("chunk_bytes"),
        "Reads lengths[i] bytes of path at file_offsets[i] to address dst_ptrs[i], with num_threads threads "
        "and preads of at most chunk_bytes (O_DIRECT when direct; see cpu/chunk_reader.h).");
}

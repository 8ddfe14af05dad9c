// read_chunks: several threads read byte ranges of one file straight into the caller's memory
// with pread (optionally O_DIRECT), so a loader places tensors where they live without a second
// copy and without Python in the loop. Like the kernel headers it includes no torch and no
// pybind11: raw pointers in, C++ exceptions out (bindings.cpp turns them into Python ones).
//
// Work split: every chunk is cut into pieces of at most chunk_bytes, the pieces are sorted by file
// offset, and each thread gets one contiguous run of them holding about 1/num_threads of the bytes
// (so a chunk much larger than the others still spreads over all threads). Each thread opens its
// own descriptor and reads its run front to back: the kernel keeps readahead state per open file
// and, seeing one sequential stream per descriptor, reads ahead in large asynchronous windows.
// Handing out pieces round-robin instead (thread t reads pieces t, t+T, ...) measured 40% slower
// cold with 2 threads here: every descriptor then sees gaps and readahead shrinks
// (benchmarks/read_bandwidth.py).
//
// O_DIRECT: the file offset, the destination and every pread length must be multiples of the
// block size (4 KiB covers every common device). Offsets and destinations are the caller's to
// align (checked here); a chunk's length need not be: its whole 4 KiB blocks are read directly
// and the tail is read as one whole block into a small aligned bounce buffer, of which only the
// tail is copied out, so nothing past the chunk's end in the destination is written.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace swiftserve::cpu {

constexpr int64_t kDirectAlign = 4096;
// Linux returns at most 0x7ffff000 bytes per read (pread_full loops); capping pieces at 1 GiB keeps
// the threads' shares even whatever chunk_bytes says.
constexpr int64_t kMaxPiece = int64_t{1} << 30;

struct ReadChunksArgs {
  const char* path;
  const int64_t* file_offsets;  // [num_chunks] bytes into the file
  const int64_t* lengths;       // [num_chunks] bytes to read
  char* const* dst;             // [num_chunks] where each chunk's first byte goes
  int64_t num_chunks;
  int num_threads;      // >= 1; at most one thread per piece is started
  bool direct;          // O_DIRECT: bypass (and do not fill) the page cache
  int64_t chunk_bytes;  // the largest single pread; a multiple of kDirectAlign when direct
};

// A failed read: errno (0 when the file ended before the range did), the file and the offset.
struct ReadError : std::runtime_error {
  int error_number;
  int64_t offset;
  ReadError(int error_number_, int64_t offset_, const std::string& what)
      : std::runtime_error(what), error_number(error_number_), offset(offset_) {}
};

namespace chunk_reader_detail {

struct Piece {
  int64_t offset;  // in the file
  int64_t length;
  char* dst;
  int64_t chunk;  // index of the chunk it belongs to, for error messages
};

inline std::string where(const ReadChunksArgs& a, int64_t offset, int64_t chunk) {
  return std::string("'") + a.path + "' at offset " + std::to_string(offset) + " (chunk " + std::to_string(chunk) +
         ")";
}

inline bool aligned(int64_t value) { return value % kDirectAlign == 0; }

// Everything that would make a read land out of bounds or fail with EINVAL under O_DIRECT,
// before any thread starts. File bounds are checked against fstat after open.
inline void check_args(const ReadChunksArgs& a) {
  if (a.num_chunks < 0) throw std::invalid_argument("read_chunks: num_chunks must be >= 0");
  if (a.num_threads < 1) throw std::invalid_argument("read_chunks: num_threads must be >= 1");
  if (a.chunk_bytes <= 0) throw std::invalid_argument("read_chunks: chunk_bytes must be positive");
  if (a.direct && !aligned(a.chunk_bytes))
    throw std::invalid_argument("read_chunks: chunk_bytes must be a multiple of 4096 with direct=True, got " +
                                std::to_string(a.chunk_bytes));
  for (int64_t i = 0; i < a.num_chunks; ++i) {
    const std::string chunk = "read_chunks: chunk " + std::to_string(i);
    if (a.file_offsets[i] < 0 || a.lengths[i] < 0)
      throw std::invalid_argument(chunk + " has a negative offset or length");
    if (a.lengths[i] > 0 && a.dst[i] == nullptr) throw std::invalid_argument(chunk + " has a null destination");
    if (!a.direct || a.lengths[i] == 0) continue;
    if (!aligned(a.file_offsets[i]))
      throw std::invalid_argument(chunk + ": direct=True needs a file offset that is a multiple of 4096, got " +
                                  std::to_string(a.file_offsets[i]));
    if (reinterpret_cast<uintptr_t>(a.dst[i]) % kDirectAlign != 0)
      throw std::invalid_argument(chunk + ": direct=True needs a destination address that is a multiple of 4096");
  }
}

inline void check_bounds(const ReadChunksArgs& a, int fd) {
  struct stat st {};
  if (fstat(fd, &st) != 0) throw ReadError(errno, 0, "cannot stat '" + std::string(a.path) + "'");
  for (int64_t i = 0; i < a.num_chunks; ++i)
    if (a.file_offsets[i] > st.st_size || a.lengths[i] > st.st_size - a.file_offsets[i])  // no overflow
      throw std::invalid_argument("read_chunks: chunk " + std::to_string(i) + " (bytes " +
                                  std::to_string(a.file_offsets[i]) + ".." +
                                  std::to_string(a.file_offsets[i] + a.lengths[i]) + ") runs past the end of '" +
                                  a.path + "' (" + std::to_string(st.st_size) + " bytes)");
}

inline std::vector<Piece> split(const ReadChunksArgs& a) {
  const int64_t step = std::min(a.chunk_bytes, kMaxPiece);  // both multiples of 4 KiB under direct
  std::vector<Piece> pieces;
  for (int64_t i = 0; i < a.num_chunks; ++i)
    for (int64_t done = 0; done < a.lengths[i]; done += step)
      pieces.push_back({a.file_offsets[i] + done, std::min(step, a.lengths[i] - done), a.dst[i] + done, i});
  // File order (chunks may come in any order): each thread's run is then one stretch of the file.
  std::stable_sort(pieces.begin(), pieces.end(), [](const Piece& x, const Piece& y) { return x.offset < y.offset; });
  return pieces;
}

inline int open_file(const ReadChunksArgs& a) {
  const int fd = open(a.path, O_RDONLY | O_CLOEXEC | (a.direct ? O_DIRECT : 0));
  if (fd >= 0) return fd;
  const int err = errno;
  std::string what = "cannot open '" + std::string(a.path) + "' for reading" + (a.direct ? " with O_DIRECT" : "");
  if (a.direct && err == EINVAL) what += " (its filesystem does not support O_DIRECT; read with direct=False)";
  throw ReadError(err, 0, what);
}

struct Fd {  // closes on every way out, exceptions included
  int fd;
  ~Fd() {
    if (fd >= 0) close(fd);
  }
};

struct FreeDeleter {
  void operator()(char* p) const { std::free(p); }
};

// Reads [offset, offset + length) into dst, looping over short reads (signals, the 2 GiB cap).
// Returns the bytes read, fewer than length only when the file ended.
inline int64_t pread_full(int fd, char* dst, int64_t length, int64_t offset, const ReadChunksArgs& a, int64_t chunk) {
  int64_t done = 0;
  while (done < length) {
    const ssize_t n = pread(fd, dst + done, static_cast<size_t>(length - done), offset + done);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw ReadError(errno, offset + done, "read failed in " + where(a, offset + done, chunk));
    }
    if (n == 0) break;
    done += n;
    // O_DIRECT ends a read short only at the end of the file, on a partial block; reading on from
    // that unaligned offset would fail with EINVAL, not return 0.
    if (a.direct && !aligned(done)) break;
  }
  return done;
}

class Worker {
 public:
  Worker(const ReadChunksArgs& a, int fd) : a_(a), fd_(fd) {
    if (!a.direct) {
      // Doubles the kernel's readahead window for this descriptor: each thread streams its
      // pieces front to back. Advice only: a failure changes nothing we rely on.
      posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
      return;
    }
    void* p = nullptr;
    if (posix_memalign(&p, kDirectAlign, kDirectAlign) != 0) throw std::bad_alloc();
    bounce_.reset(static_cast<char*>(p));
  }

  void read(const Piece& p) {
    const int64_t body = a_.direct ? p.length / kDirectAlign * kDirectAlign : p.length;
    const int64_t got = pread_full(fd_, p.dst, body, p.offset, a_, p.chunk);
    if (got < body) short_read(p.offset + got, p.chunk);
    const int64_t tail = p.length - body;
    if (tail == 0) return;
    // The tail block may be the file's last, partial one: O_DIRECT then returns what exists.
    const int64_t got_tail = pread_full(fd_, bounce_.get(), kDirectAlign, p.offset + body, a_, p.chunk);
    if (got_tail < tail) short_read(p.offset + body + got_tail, p.chunk);
    std::memcpy(p.dst + body, bounce_.get(), static_cast<size_t>(tail));
  }

 private:
  [[noreturn]] void short_read(int64_t offset, int64_t chunk) const {
    throw ReadError(0, offset, "unexpected end of file in " + where(a_, offset, chunk) + " (did the file shrink?)");
  }

  const ReadChunksArgs& a_;
  int fd_;
  std::unique_ptr<char, FreeDeleter> bounce_;
};

// Runs the threads; the first failure stops the others at their next piece and is rethrown.
class Pool {
 public:
  Pool(const ReadChunksArgs& a, const std::vector<Piece>& pieces) : a_(a), pieces_(pieces) {}

  void run(int first_fd) {
    const std::vector<size_t> starts = spans();
    const size_t num_threads = starts.size() - 1;
    std::vector<std::thread> threads;
    threads.reserve(num_threads);
    for (size_t t = 1; t < num_threads && !failed_.load(); ++t) {
      try {
        threads.emplace_back([this, &starts, t] { guarded(-1, starts[t], starts[t + 1]); });
      } catch (...) {  // no thread to start (resource limits): the started ones must still be joined
        fail(std::current_exception());
      }
    }
    // The calling thread reads the first run (all of it for num_threads=1, no thread started).
    if (num_threads > 0) guarded(first_fd, starts[0], starts[1]);
    for (auto& thread : threads) thread.join();
    if (error_) std::rethrow_exception(error_);
  }

 private:
  // starts[t]..starts[t + 1]: the pieces of thread t, cut where the running byte count crosses
  // t/T of the total; a thread whose share would be empty is not started.
  std::vector<size_t> spans() const {
    int64_t total = 0;
    for (const Piece& p : pieces_) total += p.length;
    const int64_t num_threads = std::min<int64_t>(a_.num_threads, static_cast<int64_t>(pieces_.size()));
    std::vector<size_t> starts{0};
    int64_t done = 0;
    for (size_t i = 0; i < pieces_.size(); ++i) {
      // Piece i opens thread k's run when the bytes before it reach k/T of the total.
      const int64_t k = static_cast<int64_t>(starts.size());
      if (i > 0 && k < num_threads && done * num_threads >= k * total) starts.push_back(i);
      done += pieces_[i].length;
    }
    starts.push_back(pieces_.size());
    return starts;
  }

  void guarded(int fd, size_t begin, size_t end) {
    try {
      Fd own{fd < 0 ? open_file(a_) : -1};
      Worker worker(a_, fd < 0 ? own.fd : fd);
      for (size_t i = begin; i < end && !failed_.load(std::memory_order_relaxed); ++i) worker.read(pieces_[i]);
    } catch (...) {
      fail(std::current_exception());
    }
  }

  void fail(std::exception_ptr error) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!error_) error_ = error;
    failed_.store(true);
  }

  const ReadChunksArgs& a_;
  const std::vector<Piece>& pieces_;
  std::atomic<bool> failed_{false};
  std::mutex mutex_;
  std::exception_ptr error_;
};

}  // namespace chunk_reader_detail

// Reads every chunk; on return all bytes are in place, or an exception says which read failed
// (the destinations may then hold part of the data).
inline void read_chunks(const ReadChunksArgs& a) {
  using namespace chunk_reader_detail;
  check_args(a);
  Fd fd{open_file(a)};  // opened even for no chunks: a missing file is an error either way
  check_bounds(a, fd.fd);
  const std::vector<Piece> pieces = split(a);
  Pool(a, pieces).run(fd.fd);
}

}  // namespace swiftserve::cpu

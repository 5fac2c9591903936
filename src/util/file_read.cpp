#include "util/file_read.h"

#include <unistd.h>
#include <xxhash.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <new>
#include <thread>

#include "util/bytes.h"
#include "util/checksum.h"

namespace ckpt::detail {
namespace {

constexpr std::size_t kBlock = 1u << 20;
// Below this a helper thread costs more than it saves.
constexpr std::size_t kThreadedHashMin = 1u << 20;

void read_block(int fd, std::uint64_t offset, std::byte* out, std::size_t size, const std::string& file) {
  while (size > 0) {
    const ssize_t n = ::pread(fd, out, size, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) fail(ErrorCode::io, file, "read of {} bytes at offset {} failed: {}", size, offset, std::strerror(errno));
    if (n == 0) fail(ErrorCode::format, file, "file ends before offset {} (truncated while open?)", offset);
    out += n;
    offset += static_cast<std::uint64_t>(n);
    size -= static_cast<std::size_t>(n);
  }
}

// A digest computed block by block.
class Running {
 public:
  Running(Digest kind, std::uint32_t crc) : kind_(kind), crc_(crc) {
    if (kind_ == Digest::xxh3_64) {
      state_ = XXH3_createState();
      if (!state_) throw std::bad_alloc();
      XXH3_64bits_reset(state_);
    }
  }
  ~Running() {
    if (state_) XXH3_freeState(state_);
  }
  Running(const Running&) = delete;
  Running& operator=(const Running&) = delete;
  void update(const std::byte* data, std::size_t size) {
    if (kind_ == Digest::xxh3_64) XXH3_64bits_update(state_, data, size);
    else crc_ = crc32(crc_, std::span<const std::byte>(data, size));
  }
  std::uint64_t value() const { return kind_ == Digest::xxh3_64 ? XXH3_64bits_digest(state_) : crc_; }

 private:
  Digest kind_;
  XXH3_state_t* state_ = nullptr;
  std::uint32_t crc_;
};

}  // namespace

std::optional<std::uint64_t> read_at(int fd, std::uint64_t offset, std::span<std::byte> out, Digest digest,
                                     const std::string& file, std::uint32_t crc) {
  if (digest == Digest::none) {
    read_block(fd, offset, out.data(), out.size(), file);
    return std::nullopt;
  }
  Running running(digest, crc);
  if (out.size() < kThreadedHashMin) {
    read_block(fd, offset, out.data(), out.size(), file);
    running.update(out.data(), out.size());
    return running.value();
  }
  // The reader publishes how many bytes are in place; the hasher follows, while they are still in
  // cache. SIZE_MAX means the reader gave up.
  constexpr std::size_t kAbort = SIZE_MAX;
  std::atomic<std::size_t> ready{0};
  std::thread hasher([&] {
    std::size_t done = 0;
    while (done < out.size()) {
      std::size_t available = ready.load(std::memory_order_acquire);
      while (available == done) {
        ready.wait(done, std::memory_order_acquire);
        available = ready.load(std::memory_order_acquire);
      }
      if (available == kAbort) return;
      running.update(out.data() + done, available - done);
      done = available;
    }
  });
  try {
    for (std::size_t done = 0; done < out.size();) {
      const std::size_t n = std::min(kBlock, out.size() - done);
      read_block(fd, offset + done, out.data() + done, n, file);
      done += n;
      ready.store(done, std::memory_order_release);
      ready.notify_one();
    }
  } catch (...) {
    ready.store(kAbort, std::memory_order_release);
    ready.notify_one();
    hasher.join();
    throw;
  }
  hasher.join();
  return running.value();
}

}  // namespace ckpt::detail

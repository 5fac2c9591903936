#include "util/file_read.h"

#include <unistd.h>
#include <xxhash.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <thread>

#include "util/bytes.h"

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

}  // namespace

std::optional<std::uint64_t> read_at(int fd, std::uint64_t offset, std::span<std::byte> out, bool hash,
                                     const std::string& file) {
  if (!hash) {
    read_block(fd, offset, out.data(), out.size(), file);
    return std::nullopt;
  }
  if (out.size() < kThreadedHashMin) {
    read_block(fd, offset, out.data(), out.size(), file);
    return XXH3_64bits(out.data(), out.size());
  }
  // The reader publishes how many bytes are in place; the hasher follows, while they are still in
  // cache. SIZE_MAX means the reader gave up.
  constexpr std::size_t kAbort = SIZE_MAX;
  std::atomic<std::size_t> ready{0};
  XXH3_state_t* state = XXH3_createState();
  XXH3_64bits_reset(state);
  std::thread hasher([&] {
    std::size_t done = 0;
    while (done < out.size()) {
      std::size_t available = ready.load(std::memory_order_acquire);
      while (available == done) {
        ready.wait(done, std::memory_order_acquire);
        available = ready.load(std::memory_order_acquire);
      }
      if (available == kAbort) return;
      XXH3_64bits_update(state, out.data() + done, available - done);
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
    XXH3_freeState(state);
    throw;
  }
  hasher.join();
  const std::uint64_t digest = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  return digest;
}

}  // namespace ckpt::detail

// Fuzz input as a file (a memfd), for readers that take a path.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "ckpt/io.h"

class MemfdInput {
 public:
  MemfdInput(const std::uint8_t* data, std::size_t size) : fd_(memfd_create("fuzz", MFD_CLOEXEC)) {
    ok_ = fd_ >= 0 && (size == 0 || ::write(fd_, data, size) == static_cast<ssize_t>(size));
  }
  ~MemfdInput() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool ok() const { return ok_; }
  std::string path() const { return "/proc/self/fd/" + std::to_string(fd_); }

 private:
  int fd_;
  bool ok_ = false;
};

// The whole of a reader target: the input as a file, opened with `open` and read in full; only
// ckpt::Error may come out (anything else, or a crash, is what the fuzzer looks for).
template <class Open>
int fuzz_reader(const std::uint8_t* data, std::size_t size, Open open) {
  MemfdInput input(data, size);
  if (!input.ok()) return 0;
  try {
    (void)open(input.path())->read_all();
  } catch (const ckpt::Error&) {
  }
  return 0;
}

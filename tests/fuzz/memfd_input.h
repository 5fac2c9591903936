// Fuzz input as a file (a memfd), for readers that take a path.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

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

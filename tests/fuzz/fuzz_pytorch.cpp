// libFuzzer target: the PyTorch reader (zip, restricted pickle, tensor views) on
// arbitrary files, fed through a memfd so the real file path is exercised.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "ckpt/pytorch.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const int fd = memfd_create("fuzz.pt", MFD_CLOEXEC);
  if (fd < 0) return 0;
  if (size > 0 && ::write(fd, data, size) != static_cast<ssize_t>(size)) {
    ::close(fd);
    return 0;
  }
  try {
    auto reader = ckpt::open_pytorch("/proc/self/fd/" + std::to_string(fd));
    (void)reader->read_all();
  } catch (const ckpt::Error&) {
  }
  ::close(fd);
  return 0;
}

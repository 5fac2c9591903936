// libFuzzer target: the NumPy reader (.npy headers, .npz entries and comments, Fortran order, byte order) on
// arbitrary files, fed through a memfd so the real file path is exercised.
#include <cstddef>
#include <cstdint>

#include "ckpt/numpy.h"
#include "memfd_input.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return fuzz_reader(data, size, [](const std::string& path) { return ckpt::open_numpy(path); });
}

// libFuzzer target: the NumPy reader (.npy headers, .npz entries and comments, Fortran order, byte order) on
// arbitrary files, held in memory (the same reader and byte path as for files).
#include <cstddef>
#include <cstdint>

#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return fuzz_format(data, size, "numpy");
}

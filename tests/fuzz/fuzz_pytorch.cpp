// libFuzzer target: the PyTorch reader (zip, restricted pickle, tensor views) on
// arbitrary files, held in memory (the same reader and byte path as for files).
#include <cstddef>
#include <cstdint>

#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return fuzz_format(data, size, "pytorch");
}

// libFuzzer target: the Boost archive reader (text, xml and binary listing passes, base64 decoding) on
// arbitrary files, held in memory (the same reader and byte path as for files).
#include <cstddef>
#include <cstdint>

#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return fuzz_format(data, size, "boost-text");
}

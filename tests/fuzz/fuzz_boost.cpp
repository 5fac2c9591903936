// libFuzzer target: the Boost archive reader (text, xml and binary listing passes, base64 decoding) on
// arbitrary files, fed through a memfd so the real file path is exercised.
#include <cstddef>
#include <cstdint>

#include "ckpt/boost_archive.h"
#include "memfd_input.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return fuzz_reader(data, size, [](const std::string& path) { return ckpt::open_boost(path); });
}

// libFuzzer target: the Flax msgpack reader (msgpack parsing, array payloads, chunked arrays, roles) on
// arbitrary files, fed through a memfd so the real file path is exercised.
#include <cstddef>
#include <cstdint>

#include "ckpt/flax.h"
#include "memfd_input.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return fuzz_reader(data, size, [](const std::string& path) { return ckpt::open_flax(path); });
}

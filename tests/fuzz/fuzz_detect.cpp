// libFuzzer target: format detection and whichever reader it picks, as ckpt::open_memory does it
// for a user (every format but sharded safetensors).
#include <cstddef>
#include <cstdint>
#include <span>

#include "ckpt/io.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    auto reader = ckpt::open_memory(std::as_bytes(std::span(data, size)), nullptr);
    (void)reader->read_all();
  } catch (const ckpt::Error&) {
  }
  return 0;
}

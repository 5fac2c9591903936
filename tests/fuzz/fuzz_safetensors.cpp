// libFuzzer target: the safetensors reader (header validation, roles convention, data reads) on
// arbitrary files, fed through a memfd so the real file path is exercised.
#include <cstddef>
#include <cstdint>

#include "ckpt/safetensors.h"
#include "memfd_input.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  MemfdInput input(data, size);
  if (!input.ok()) return 0;
  try {
    (void)ckpt::open_safetensors(input.path())->read_all();
  } catch (const ckpt::Error&) {
  }
  return 0;
}

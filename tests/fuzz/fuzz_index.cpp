// libFuzzer target: the ckpt-h5 index parser on arbitrary bytes. Build with
// -DCKPT_BUILD_FUZZERS=ON and clang (see tests/fuzz/README.md).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "ckpt/error.h"
#include "ckpt_h5/index.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    (void)ckpt::detail::ckpt_h5::parse_index(std::string_view(reinterpret_cast<const char*>(data), size),
                                             ckpt::ReadOptions{}, "fuzz");
  } catch (const ckpt::Error&) {
  }
  return 0;
}

// libFuzzer target: sharded safetensors. The input is an index and one shard: a 4-byte
// little-endian length, that many bytes of NAME.safetensors.index.json, then the bytes of
// shard "s.safetensors" (the only file beside the index). Sharded checkpoints are read from
// files, so both are written to a directory of this process first.
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <span>
#include <string>

#include "ckpt/io.h"
#include "fuzz_files.h"

namespace {
const std::filesystem::path& work_dir() { return fuzz_work_dir("sharded"); }
const auto put = fuzz_put;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 4) return 0;
  std::uint32_t n = 0;
  std::memcpy(&n, data, 4);
  if (n > size - 4) n = static_cast<std::uint32_t>(size - 4);
  const auto index = work_dir() / "m.safetensors.index.json";
  put(index, data + 4, n);
  put(work_dir() / "s.safetensors", data + 4 + n, size - 4 - n);
  try {
    auto reader = ckpt::open(index);
    (void)reader->read_all();
  } catch (const ckpt::Error&) {
  }
  return 0;
}

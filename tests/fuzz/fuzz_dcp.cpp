// libFuzzer target: PyTorch distributed checkpoints. The input is a directory of three files:
// two 4-byte little-endian lengths, then `.metadata`, `__0_0.distcp` (the first length, the second)
// and `__1_0.distcp` (the rest). Distributed checkpoints are read from a directory, so the files are
// written to one of this process first; the checkpoint is then listed, read whole and sliced.
#include <unistd.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "ckpt/io.h"
#include "fuzz_files.h"

namespace {
const std::filesystem::path& work_dir() { return fuzz_work_dir("dcp"); }
const auto put = fuzz_put;
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 8) return 0;
  std::uint32_t lengths[2];
  std::memcpy(lengths, data, 8);
  std::size_t at = 8;
  const std::size_t metadata = std::min<std::size_t>(lengths[0], size - at);
  put(work_dir() / ".metadata", data + at, metadata);
  at += metadata;
  const std::size_t first = std::min<std::size_t>(lengths[1], size - at);
  put(work_dir() / "__0_0.distcp", data + at, first);
  at += first;
  put(work_dir() / "__1_0.distcp", data + at, size - at);
  try {
    auto reader = ckpt::open(work_dir());
    (void)reader->read_all();
    for (std::size_t i = 0; i < reader->tensors().size(); ++i) {
      const auto& shape = reader->tensors()[i].shape;
      std::vector<std::uint64_t> offsets(shape.size()), sizes(shape.size());
      for (std::size_t k = 0; k < shape.size(); ++k) {
        offsets[k] = static_cast<std::uint64_t>(shape[k]) / 2;
        sizes[k] = static_cast<std::uint64_t>(shape[k]) - offsets[k];
      }
      (void)reader->read_slice(i, offsets, sizes);
    }
  } catch (const ckpt::Error&) {
  }
  return 0;
}

// libFuzzer target: the readers under every combination of ReadOptions a caller may set. The
// first 4 bytes choose zero-copy, writable views, verification, a model key, whether each
// tensor's file_span is asked for, and the slice read of each tensor; the rest is a checkpoint
// held in memory, its format detected.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "ckpt/io.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 4) return 0;
  const std::uint8_t flags = data[0], key = data[1], slice_a = data[2], slice_b = data[3];
  ckpt::ReadOptions options;
  options.zero_copy = (flags & 1) != 0;
  options.writable = (flags & 2) != 0;
  options.verify_checksums = (flags & 4) != 0;
  static const char* const kKeys[] = {"", "model", "state_dict", "model.module", "ema", "net.params"};
  options.model_key = kKeys[key % 6];
  try {
    auto reader = ckpt::open_memory(std::as_bytes(std::span(data + 4, size - 4)), nullptr, options);
    const auto& tensors = reader->tensors();
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      if (flags & 8) (void)reader->file_span(i);
      const auto& shape = tensors[i].shape;
      std::vector<std::uint64_t> offsets(shape.size(), 0), sizes(shape.begin(), shape.end());
      for (std::size_t d = 0; d < shape.size(); ++d) {
        const auto dim = static_cast<std::uint64_t>(shape[d]);
        if (dim == 0) continue;
        offsets[d] = (d % 2 ? slice_a : slice_b) % dim;
        sizes[d] = (flags & 16) ? dim - offsets[d] : std::min<std::uint64_t>(1 + (slice_a ^ slice_b) % dim, dim - offsets[d]);
      }
      try {
        (void)reader->read_slice(i, offsets, sizes);
        if (flags & 32) (void)reader->read(i);
      } catch (const ckpt::Error&) {
      }
    }
  } catch (const ckpt::Error&) {
  }
  return 0;
}

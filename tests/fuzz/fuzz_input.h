// The whole of a reader target: the input, as a checkpoint held in memory, opened as the format
// `format` (no detection: every input reaches that reader), listed, read in full and sliced; only
// ckpt::Error may come out (anything else, or a crash, is what the fuzzer looks for).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "ckpt/io.h"
#include "core/format_reader.h"

inline int fuzz_format(const std::uint8_t* data, std::size_t size, const char* format) {
  const ckpt::FormatHandler* handler = ckpt::find_format(format);
  if (handler == nullptr) __builtin_trap();
  try {
    const auto bytes = std::as_bytes(std::span(data, size));
    auto reader = ckpt::detail::make_reader(handler->open(ckpt::detail::ByteSource::from_memory(bytes, nullptr, "fuzz"), {}));
    (void)reader->read_all();
    // The first half of each tensor's first dimension, through the slice path.
    for (std::size_t i = 0; i < reader->tensors().size(); ++i) {
      const auto& shape = reader->tensors()[i].shape;
      std::vector<std::uint64_t> offsets(shape.size(), 0), sizes(shape.begin(), shape.end());
      if (!sizes.empty()) sizes[0] /= 2;
      (void)reader->read_slice(i, offsets, sizes);
    }
  } catch (const ckpt::Error&) {
  }
  return 0;
}

// The numpy folder's entry points for the rest of ckpt.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "core/format_reader.h"

namespace ckpt::detail::numpy {

// The .npy magic, or a zip whose first entry is a .npy.
bool sniff(std::span<const std::byte> head, std::uint64_t file_size);
std::unique_ptr<FormatReader> open_reader(std::shared_ptr<const ByteSource> source, const ReadOptions& options);

}  // namespace ckpt::detail::numpy

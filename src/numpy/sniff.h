// Content detection for NumPy files (used by the format registry): the .npy magic, or a zip
// whose first entry is a .npy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace ckpt::detail::numpy {

bool sniff(std::span<const std::byte> head, std::uint64_t file_size);

}  // namespace ckpt::detail::numpy

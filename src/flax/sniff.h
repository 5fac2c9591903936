// Content detection for Flax msgpack files (used by the format registry).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace ckpt::detail::flax {

bool sniff(std::span<const std::byte> head, std::uint64_t file_size);

}  // namespace ckpt::detail::flax

// Per-tensor checksums: XXH3-64 of the logical (little-endian, row-major) bytes, written as
// "xxh3-64:<16 lowercase hex digits>".
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

namespace ckpt::detail {

std::uint64_t xxh3_64(std::span<const std::byte> bytes) noexcept;
std::string format_checksum(std::uint64_t value);
// Parses "xxh3-64:..."; false if the text is not in that form.
bool parse_checksum(std::string_view text, std::uint64_t& value);

}  // namespace ckpt::detail

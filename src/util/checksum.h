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
// The CRC-32 of zip entries, continued over `bytes` (start with 0). libdeflate's, not zlib's:
// with carry-less multiplication it ran at 10-11 GB/s on the development VM against zlib 1.2.13's
// 4-5 GB/s, and .pt and .npz writers checksum every byte they write.
std::uint32_t crc32(std::uint32_t crc, std::span<const std::byte> bytes) noexcept;
std::string format_checksum(std::uint64_t value);
// A stored checksum "ALGORITHM:DIGITS" (format-spec/ckpt-h5.md §7): xxh3-64 with 16 hex digits
// of either case (the value is set); another algorithm, which this version cannot verify; or not
// of that form at all.
enum class ChecksumText { xxh3_64, unknown_algorithm, malformed };
ChecksumText parse_checksum(std::string_view text, std::uint64_t& value);

}  // namespace ckpt::detail

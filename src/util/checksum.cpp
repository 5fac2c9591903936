#include "util/checksum.h"

#include <libdeflate.h>
#include <xxhash.h>

#include <cctype>
#include <charconv>

#include <fmt/format.h>

namespace ckpt::detail {

std::uint64_t xxh3_64(std::span<const std::byte> bytes) noexcept {
  return XXH3_64bits(bytes.data(), bytes.size());
}

std::uint32_t crc32(std::uint32_t crc, std::span<const std::byte> bytes) noexcept {
  if (bytes.empty()) return crc;  // libdeflate returns 0 for a null buffer, which an empty span may have
  return libdeflate_crc32(crc, bytes.data(), bytes.size());
}

std::string format_checksum(std::uint64_t value) { return fmt::format("xxh3-64:{:016x}", value); }

ChecksumText parse_checksum(std::string_view text, std::uint64_t& value) {
  const auto colon = text.find(':');
  if (colon == std::string_view::npos || colon == 0) return ChecksumText::malformed;
  if (text.substr(0, colon) != "xxh3-64") return ChecksumText::unknown_algorithm;
  const std::string_view digits = text.substr(colon + 1);
  if (digits.size() != 16) return ChecksumText::malformed;
  for (const char c : digits)
    if (!std::isxdigit(static_cast<unsigned char>(c))) return ChecksumText::malformed;
  auto [ptr, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value, 16);
  return ec == std::errc() && ptr == digits.data() + digits.size() ? ChecksumText::xxh3_64 : ChecksumText::malformed;
}

}  // namespace ckpt::detail

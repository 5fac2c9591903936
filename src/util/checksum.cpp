#include "util/checksum.h"

#include <libdeflate.h>
#include <xxhash.h>

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

bool parse_checksum(std::string_view text, std::uint64_t& value) {
  constexpr std::string_view prefix = "xxh3-64:";
  if (text.size() != prefix.size() + 16 || text.substr(0, prefix.size()) != prefix) return false;
  const char* begin = text.data() + prefix.size();
  const char* end = text.data() + text.size();
  for (const char* p = begin; p != end; ++p)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f'))) return false;
  auto [ptr, ec] = std::from_chars(begin, end, value, 16);
  return ec == std::errc() && ptr == end;
}

}  // namespace ckpt::detail

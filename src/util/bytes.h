// Byte-level helpers shared by every format: little-endian loads and stores, overflow-checked
// arithmetic, and error construction with a file name.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>

#include <fmt/format.h>

#include "ckpt/error.h"

namespace ckpt::detail {

static_assert(std::endian::native == std::endian::little,
              "ckpt assumes a little-endian host; tensor bytes are little-endian on disk");

template <typename T>
T load_le(const std::byte* p) noexcept {
  T value;
  std::memcpy(&value, p, sizeof(T));
  return value;
}

template <typename T>
void store_le(std::byte* p, T value) noexcept {
  std::memcpy(p, &value, sizeof(T));
}

// a * b and a + b, or nullopt on overflow of 64 bits.
inline std::optional<std::uint64_t> checked_mul(std::uint64_t a, std::uint64_t b) {
  std::uint64_t r;
  if (__builtin_mul_overflow(a, b, &r)) return std::nullopt;
  return r;
}
inline std::optional<std::uint64_t> checked_add(std::uint64_t a, std::uint64_t b) {
  std::uint64_t r;
  if (__builtin_add_overflow(a, b, &r)) return std::nullopt;
  return r;
}

// Throw ckpt::Error with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void fail(ErrorCode code, const std::string& file, fmt::format_string<Args...> f,
                       Args&&... args) {
  throw Error(code, file, fmt::format(f, std::forward<Args>(args)...));
}

// A key or name quoted for messages: printable, control characters escaped, long names cut.
std::string quote(std::string_view name);

}  // namespace ckpt::detail

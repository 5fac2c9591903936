// Element types a checkpoint tensor can have. Names are spelled as numpy and torch spell them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace ckpt {

enum class DType : std::uint8_t {
  float64,
  float32,
  float16,
  bfloat16,
  float8_e4m3fn,
  float8_e5m2,
  int64,
  int32,
  int16,
  int8,
  uint64,
  uint32,
  uint16,
  uint8,
  bool_,  // "bool"; a trailing underscore because `bool` is a keyword
  complex64,
  complex128,
};

// Every dtype, in declaration order (useful for tests and help text).
std::span<const DType> all_dtypes() noexcept;

// "float32", "bool", "float8_e4m3fn", ...
std::string_view dtype_name(DType dtype) noexcept;

// Inverse of dtype_name; nullopt for an unknown name.
std::optional<DType> dtype_from_name(std::string_view name) noexcept;

// Bytes per element: 1, 2, 4, 8 or 16.
std::size_t dtype_size(DType dtype) noexcept;

// True for real floating types (float64 .. float8_e5m2); false for complex, integer and bool.
bool dtype_is_floating(DType dtype) noexcept;

bool dtype_is_complex(DType dtype) noexcept;

}  // namespace ckpt

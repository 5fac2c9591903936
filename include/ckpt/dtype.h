// Element types a checkpoint tensor can have. Names are spelled as numpy and torch spell them.
#pragma once

#include "ckpt/api.h"

#include <complex>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

CKPT_API_BEGIN

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

// Element types with no C++ arithmetic type of their own: their raw bits, for typed access
// (Tensor::as<float16_bits>() on a float16 tensor).
struct float16_bits { std::uint16_t bits; };
struct bfloat16_bits { std::uint16_t bits; };
struct float8_e4m3fn_bits { std::uint8_t bits; };
struct float8_e5m2_bits { std::uint8_t bits; };

// The dtype whose elements a C++ type T holds: float -> float32, double -> float64,
// std::int8_t .. std::uint64_t -> the integer dtypes, bool -> bool, std::complex<float> ->
// complex64, std::complex<double> -> complex128, and the *_bits types above. Undefined for others.
template <typename T>
struct dtype_of;

}  // namespace ckpt

namespace ckpt {
#define CKPT_DTYPE_OF(type, value) \
  template <>                      \
  struct dtype_of<type> {          \
    static constexpr DType dtype = DType::value; \
  }
CKPT_DTYPE_OF(double, float64);
CKPT_DTYPE_OF(float, float32);
CKPT_DTYPE_OF(float16_bits, float16);
CKPT_DTYPE_OF(bfloat16_bits, bfloat16);
CKPT_DTYPE_OF(float8_e4m3fn_bits, float8_e4m3fn);
CKPT_DTYPE_OF(float8_e5m2_bits, float8_e5m2);
CKPT_DTYPE_OF(std::int64_t, int64);
CKPT_DTYPE_OF(std::int32_t, int32);
CKPT_DTYPE_OF(std::int16_t, int16);
CKPT_DTYPE_OF(std::int8_t, int8);
CKPT_DTYPE_OF(std::uint64_t, uint64);
CKPT_DTYPE_OF(std::uint32_t, uint32);
CKPT_DTYPE_OF(std::uint16_t, uint16);
CKPT_DTYPE_OF(std::uint8_t, uint8);
CKPT_DTYPE_OF(bool, bool_);
CKPT_DTYPE_OF(std::complex<float>, complex64);
CKPT_DTYPE_OF(std::complex<double>, complex128);
#undef CKPT_DTYPE_OF
}  // namespace ckpt

CKPT_API_END

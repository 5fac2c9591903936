#include "safetensors/dtypes.h"

#include <array>
#include <utility>

namespace ckpt::detail::safetensors {
namespace {
constexpr std::array<std::pair<DType, std::string_view>, 16> kCodes{{
    {DType::bool_, "BOOL"},
    {DType::uint8, "U8"},
    {DType::int8, "I8"},
    {DType::float8_e5m2, "F8_E5M2"},
    {DType::float8_e4m3fn, "F8_E4M3"},
    {DType::int16, "I16"},
    {DType::uint16, "U16"},
    {DType::float16, "F16"},
    {DType::bfloat16, "BF16"},
    {DType::int32, "I32"},
    {DType::uint32, "U32"},
    {DType::float32, "F32"},
    {DType::complex64, "C64"},
    {DType::float64, "F64"},
    {DType::int64, "I64"},
    {DType::uint64, "U64"},
}};
}  // namespace

std::optional<std::string_view> dtype_code(DType dtype) {
  for (const auto& [d, code] : kCodes)
    if (d == dtype) return code;
  return std::nullopt;
}

std::optional<DType> dtype_from_code(std::string_view code) {
  for (const auto& [d, c] : kCodes)
    if (c == code) return d;
  return std::nullopt;
}

}  // namespace ckpt::detail::safetensors

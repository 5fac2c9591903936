#include "ckpt/dtype.h"

#include <array>

namespace ckpt {
namespace {

struct DTypeRow {
  DType dtype;
  std::string_view name;
  std::size_t size;
};

constexpr std::array<DTypeRow, 17> kRows{{
    {DType::float64, "float64", 8},
    {DType::float32, "float32", 4},
    {DType::float16, "float16", 2},
    {DType::bfloat16, "bfloat16", 2},
    {DType::float8_e4m3fn, "float8_e4m3fn", 1},
    {DType::float8_e5m2, "float8_e5m2", 1},
    {DType::int64, "int64", 8},
    {DType::int32, "int32", 4},
    {DType::int16, "int16", 2},
    {DType::int8, "int8", 1},
    {DType::uint64, "uint64", 8},
    {DType::uint32, "uint32", 4},
    {DType::uint16, "uint16", 2},
    {DType::uint8, "uint8", 1},
    {DType::bool_, "bool", 1},
    {DType::complex64, "complex64", 8},
    {DType::complex128, "complex128", 16},
}};

constexpr std::array<DType, 17> kAll = [] {
  std::array<DType, 17> all{};
  for (std::size_t i = 0; i < kRows.size(); ++i) all[i] = kRows[i].dtype;
  return all;
}();

}  // namespace

std::span<const DType> all_dtypes() noexcept { return kAll; }

std::string_view dtype_name(DType dtype) noexcept {
  return kRows[static_cast<std::size_t>(dtype)].name;
}

std::optional<DType> dtype_from_name(std::string_view name) noexcept {
  for (const auto& row : kRows)
    if (row.name == name) return row.dtype;
  return std::nullopt;
}

std::size_t dtype_size(DType dtype) noexcept { return kRows[static_cast<std::size_t>(dtype)].size; }

bool dtype_is_floating(DType dtype) noexcept {
  switch (dtype) {
    case DType::float64:
    case DType::float32:
    case DType::float16:
    case DType::bfloat16:
    case DType::float8_e4m3fn:
    case DType::float8_e5m2:
      return true;
    default:
      return false;
  }
}

bool dtype_is_complex(DType dtype) noexcept {
  return dtype == DType::complex64 || dtype == DType::complex128;
}

}  // namespace ckpt

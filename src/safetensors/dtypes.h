// safetensors dtype codes and ckpt's `__metadata__` keys (format-spec/conventions.md §2).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "ckpt/dtype.h"

namespace ckpt::detail::safetensors {

// "F32", "BF16", "F8_E4M3", ...; nullopt for dtypes safetensors cannot hold (complex128).
std::optional<std::string_view> dtype_code(DType dtype);
std::optional<DType> dtype_from_code(std::string_view code);

inline constexpr std::string_view kMetadataKey = "__metadata__";
inline constexpr std::string_view kRolesKey = "ckpt.roles";
inline constexpr std::string_view kCkptMetadataKey = "ckpt.metadata";
// Per-tensor checksums ckpt writes: a JSON object {stored name: "xxh3-64:<16 hex digits>"} in a
// __metadata__ string (format-spec/conventions.md).
inline constexpr std::string_view kChecksumsKey = "ckpt.checksums";
inline constexpr std::uint64_t kRolesVersion = 1;

}  // namespace ckpt::detail::safetensors

// Reading a field of untrusted JSON: nlohmann's value(key, default) throws type_error when the
// field holds another type, which would escape as something other than ckpt::Error. These
// return the default for a missing field or one of the wrong type.
#pragma once

#include <cstdint>
#include <string>

#include "ckpt/state_dict.h"

namespace ckpt::detail {

inline std::string json_string(const Metadata& object, const char* key, std::string fallback) {
  if (!object.is_object()) return fallback;
  const auto it = object.find(key);
  return it != object.end() && it->is_string() ? it->get<std::string>() : fallback;
}

inline bool json_bool(const Metadata& object, const char* key, bool fallback) {
  if (!object.is_object()) return fallback;
  const auto it = object.find(key);
  return it != object.end() && it->is_boolean() ? it->get<bool>() : fallback;
}

// Integers only (a float or a negative number is "not that integer": fallback).
inline std::uint64_t json_uint(const Metadata& object, const char* key, std::uint64_t fallback) {
  if (!object.is_object()) return fallback;
  const auto it = object.find(key);
  return it != object.end() && it->is_number_unsigned() ? it->get<std::uint64_t>() : fallback;
}

}  // namespace ckpt::detail

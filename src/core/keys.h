// The lookup key of an entry: model entries (parameters and buffers) share one namespace, each
// extra section has its own (section "" stands for the model).
#pragma once

#include <string>
#include <string_view>

namespace ckpt::detail {

inline std::string entry_key(std::string_view section, std::string_view name) {
  std::string key(section);
  key += '\0';
  key += name;
  return key;
}

}  // namespace ckpt::detail

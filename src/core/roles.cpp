#include "ckpt/roles.h"

#include <array>
#include <regex>

#include "util/bytes.h"

namespace ckpt {

struct BufferRule::Impl {
  bool has_regex = false;
  std::regex regex;
};

BufferRule::BufferRule(const std::string& user_regex) : impl_(std::make_unique<Impl>()) {
  if (user_regex.empty()) return;
  try {
    impl_->regex = std::regex(user_regex, std::regex::ECMAScript);
    impl_->has_regex = true;
  } catch (const std::regex_error& e) {
    detail::fail(ErrorCode::invalid_argument, "", "invalid buffer regex {}: {}", detail::quote(user_regex), e.what());
  }
}
BufferRule::~BufferRule() = default;
BufferRule::BufferRule(BufferRule&&) noexcept = default;

bool BufferRule::operator()(std::string_view name, DType dtype) const {
  // Optimizers only train floating (and complex) tensors, so integer and bool tensors are state.
  if (!dtype_is_floating(dtype) && !dtype_is_complex(dtype)) return true;
  constexpr std::array<std::string_view, 3> kBufferLeaves{"running_mean", "running_var",
                                                          "num_batches_tracked"};
  const auto dot = name.rfind('.');
  const std::string_view leaf = dot == std::string_view::npos ? name : name.substr(dot + 1);
  for (auto known : kBufferLeaves)
    if (leaf == known) return true;
  return impl_->has_regex && std::regex_match(name.begin(), name.end(), impl_->regex);
}

}  // namespace ckpt

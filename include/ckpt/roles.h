// Inferring parameter/buffer roles for files that do not record them.
#pragma once

#include <string>
#include <string_view>

#include "ckpt/state_dict.h"

namespace ckpt {

// The built-in rule and the user's regex (ECMAScript, matched against the whole name; empty =
// none): is a tensor with this name and dtype a buffer? Built-in: non-floating dtypes (integer,
// bool, complex... see format-spec/conventions.md) and the last name component being
// running_mean, running_var or num_batches_tracked.
bool looks_like_buffer(std::string_view name, DType dtype, const std::string& user_regex = {});

class BufferRule {
 public:
  // Throws invalid_argument naming the regex if it does not compile.
  explicit BufferRule(const std::string& user_regex);
  ~BufferRule();
  BufferRule(BufferRule&&) noexcept;
  bool operator()(std::string_view name, DType dtype) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ckpt

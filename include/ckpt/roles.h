// Inferring parameter/buffer roles for files that do not record them.
#pragma once

#include "ckpt/api.h"

#include <string>
#include <string_view>

#include "ckpt/state_dict.h"

CKPT_API_BEGIN

namespace ckpt {

// Is a tensor with this name and dtype a buffer? The built-in rule (integer and bool dtypes; a
// last name component of running_mean, running_var or num_batches_tracked; see
// format-spec/conventions.md §1) or the user's regex (ECMAScript, whole name; empty = none).
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

CKPT_API_END

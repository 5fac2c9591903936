// Summary statistics of a tensor's values (for checkpoint-inspect --stats).
#pragma once

#include "ckpt/api.h"

#include <cstdint>

#include "ckpt/tensor.h"

CKPT_API_BEGIN

namespace ckpt {

struct TensorStats {
  std::uint64_t count = 0;      // finite values included in min/max/mean/std
  std::uint64_t nan_count = 0;  // NaN values (floating types only)
  std::uint64_t inf_count = 0;  // +-Inf values
  double min = 0, max = 0, mean = 0, std = 0;  // over finite values; population std
};

// Complex tensors are summarized by magnitude; bool as 0/1.
TensorStats compute_stats(const Tensor& tensor);

// Element i of any real or bool tensor as a double (complex: the real part).
double element_as_double(const Tensor& tensor, std::uint64_t index);

}  // namespace ckpt

CKPT_API_END

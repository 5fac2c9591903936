// A tensor's values for people and tools: summary statistics (checkpoint-inspect --stats) and
// the values themselves as JSON (checkpoint-inspect --slice).
#pragma once

#include "ckpt/api.h"

#include <cstdint>

#include "ckpt/state_dict.h"
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

// The values as nested JSON arrays in the tensor's shape (a rank-0 tensor: the value itself):
// integers exactly, floating values as numbers (every float16, bfloat16 and float8 value exactly;
// NaN and infinities as the strings "nan", "inf", "-inf"), bool as true/false, complex numbers as
// [real, imaginary].
Metadata tensor_values(const Tensor& tensor);

}  // namespace ckpt

CKPT_API_END

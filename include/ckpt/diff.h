// Comparing two checkpoints, in any formats: names only in one of them, role, dtype and shape
// mismatches, and per tensor the largest absolute and relative difference of the values.
#pragma once

#include "ckpt/api.h"

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "ckpt/io.h"

CKPT_API_BEGIN

namespace ckpt {

struct DiffOptions {
  // Values a (from A) and b (from B) agree when |a - b| <= atol + rtol * |b| (numpy.allclose),
  // or both are NaN, or both are the same infinity. The defaults demand equal values.
  double atol = 0;
  double rtol = 0;
};

struct TensorDiff {
  std::string key;          // "name", or "section/name" for extra sections
  std::string role_a, role_b;  // "parameter", "buffer (batch_stats)", "buffer (buffers, non-persistent)", ...
  DType dtype_a{}, dtype_b{};
  Shape shape_a, shape_b;
  bool compared = false;    // values compared (same shape)
  double max_abs = 0;       // over all elements; complex values by the modulus of the difference
  double max_rel = 0;       // |a - b| / |b| where b != 0
  std::uint64_t mismatched = 0;  // elements outside the tolerance
  bool same() const;        // same role, dtype, shape, and every value within tolerance
};

struct DiffResult {
  std::vector<std::string> only_in_a, only_in_b;  // keys
  std::vector<TensorDiff> tensors;                // every key in both, in A's order
  bool metadata_equal = true;  // reported; formats add their own keys, so not part of equal()
  bool equal() const;          // same keys, and every tensor same()
};

// Reads every tensor of both (one pair at a time).
DiffResult diff(Source& a, Source& b, const DiffOptions& options = {});

}  // namespace ckpt

CKPT_API_END

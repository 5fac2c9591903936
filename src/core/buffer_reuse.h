// Reuse of freed tensor buffers during a conversion (src/core/tensor.cpp).
#pragma once

namespace ckpt::detail {

// While one exists, freed tensor buffers of 1 MiB or more (up to 64 MiB in all) are reused for
// new tensors instead of returned to the system; convert() holds one.
class BufferReuse {
 public:
  BufferReuse();
  ~BufferReuse();
  BufferReuse(const BufferReuse&) = delete;
  BufferReuse& operator=(const BufferReuse&) = delete;
};

}  // namespace ckpt::detail

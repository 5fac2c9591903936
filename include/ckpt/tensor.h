// A dense tensor: dtype, shape and contiguous row-major little-endian bytes.
//
// Storage is shared (copying a Tensor is cheap and aliases the same bytes) and is either owned
// (heap, 64-byte aligned) or a zero-copy view into a memory-mapped file. A view keeps its mapping
// alive for as long as any Tensor refers to it, so a Tensor may outlive the Reader it came from.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ckpt/dtype.h"
#include "ckpt/error.h"

namespace ckpt {

using Shape = std::vector<std::int64_t>;

// Product of the dimensions (1 for rank 0). Throws invalid_argument on a negative dimension or
// overflow of 64 bits.
std::uint64_t shape_numel(const Shape& shape);

// numel * dtype_size, overflow-checked.
std::uint64_t shape_nbytes(DType dtype, const Shape& shape);

// "[2, 3]"; "[]" for rank 0.
std::string shape_to_string(const Shape& shape);

class Tensor {
 public:
  // An empty float32 tensor of shape [0].
  Tensor();

  // Owned, zero-filled.
  static Tensor zeros(DType dtype, Shape shape);
  // Owned, contents unspecified: for filling at once (readers use it to skip zero-filling).
  static Tensor uninitialized(DType dtype, Shape shape);
  // Owned copy of `bytes`, which must hold exactly shape_nbytes(dtype, shape) bytes.
  static Tensor copy_of(DType dtype, Shape shape, std::span<const std::byte> bytes);
  // Zero-copy: `data` stays valid while `owner` is alive; the Tensor holds `owner`.
  static Tensor view(DType dtype, Shape shape, const std::byte* data,
                     std::shared_ptr<const void> owner);

  DType dtype() const noexcept { return dtype_; }
  const Shape& shape() const noexcept { return shape_; }
  std::size_t rank() const noexcept { return shape_.size(); }
  std::uint64_t numel() const noexcept { return numel_; }
  std::uint64_t nbytes() const noexcept { return numel_ * dtype_size(dtype_); }

  std::span<const std::byte> bytes() const noexcept {
    return {data_.get(), static_cast<std::size_t>(nbytes())};
  }
  // Writable bytes; only for owned tensors (views are read-only mappings): throws otherwise.
  // Writes are visible through every copy of this Tensor.
  std::span<std::byte> mutable_bytes();

  // Typed access; T must have the dtype's size (e.g. float for float32, std::uint16_t for
  // float16/bfloat16). Throws invalid_argument on a size mismatch.
  template <typename T>
  std::span<const T> as() const {
    check_element_size(sizeof(T));
    return {reinterpret_cast<const T*>(data_.get()), static_cast<std::size_t>(numel_)};
  }
  template <typename T>
  std::span<T> as_mutable() {
    check_element_size(sizeof(T));
    return {reinterpret_cast<T*>(mutable_bytes().data()), static_cast<std::size_t>(numel_)};
  }

  // True when the bytes live in a mapped file rather than in memory owned by the tensor.
  bool is_view() const noexcept { return is_view_; }

  // An owned deep copy (turns a view into memory of its own).
  Tensor clone() const;

  // Same dtype, shape and bytes.
  bool equals(const Tensor& other) const noexcept;

 private:
  void check_element_size(std::size_t size) const;

  DType dtype_ = DType::float32;
  Shape shape_;
  std::uint64_t numel_ = 0;
  std::shared_ptr<const std::byte> data_;
  bool is_view_ = false;
};

namespace detail {
// While one exists, freed tensor buffers of 1 MiB or more (up to 64 MiB in all) are reused for
// new tensors instead of returned to the system; convert() holds one. Internal.
class BufferReuse {
 public:
  BufferReuse();
  ~BufferReuse();
  BufferReuse(const BufferReuse&) = delete;
  BufferReuse& operator=(const BufferReuse&) = delete;
};
}  // namespace detail

}  // namespace ckpt

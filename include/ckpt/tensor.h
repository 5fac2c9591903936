// A dense tensor: dtype, shape and contiguous row-major little-endian bytes.
//
// Storage is shared (copying a Tensor is cheap and aliases the same bytes) and is either owned
// (heap, 64-byte aligned) or a zero-copy view into a memory-mapped file. A view keeps its mapping
// alive for as long as any Tensor refers to it, so a Tensor may outlive the Reader it came from.
// Views are read-only (one mapping shared by many tensors) or writable (a private copy-on-write
// mapping of the tensor's own bytes: a write copies the pages it touches, the file never changes).
#pragma once

#include "ckpt/api.h"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ckpt/dtype.h"
#include "ckpt/error.h"

CKPT_API_BEGIN

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
  // Zero-copy, read-only: `data` stays valid while `owner` is alive; the Tensor holds `owner`.
  static Tensor view(DType dtype, Shape shape, const std::byte* data,
                     std::shared_ptr<const void> owner);
  // Zero-copy and writable: `data` is memory that `owner` keeps alive and that this tensor (and
  // its copies) alone may write, such as a private copy-on-write mapping.
  static Tensor writable_view(DType dtype, Shape shape, std::byte* data, std::shared_ptr<void> owner);

  DType dtype() const noexcept { return dtype_; }
  const Shape& shape() const noexcept { return shape_; }
  std::size_t rank() const noexcept { return shape_.size(); }
  std::uint64_t numel() const noexcept { return numel_; }
  std::uint64_t nbytes() const noexcept { return numel_ * dtype_size(dtype_); }

  std::span<const std::byte> bytes() const noexcept {
    return {data_.get(), static_cast<std::size_t>(nbytes())};
  }
  // Writable bytes; for owned tensors and writable views (throws invalid_argument for a read-only
  // view: clone() it). Writes are visible through every copy of this Tensor.
  std::span<std::byte> mutable_bytes();

  // Typed access: T must be the C++ type of the tensor's dtype (dtype_of<T>: float for float32,
  // std::int32_t for int32, float16_bits for float16, ...). Throws invalid_argument otherwise
  // (a float32 tensor read as std::int32_t is an error, not a reinterpretation: use bytes()).
  template <typename T>
  std::span<const T> as() const {
    check_dtype(dtype_of<T>::dtype);
    return {reinterpret_cast<const T*>(data_.get()), static_cast<std::size_t>(numel_)};
  }
  template <typename T>
  std::span<T> as_mutable() {
    check_dtype(dtype_of<T>::dtype);
    return {reinterpret_cast<T*>(mutable_bytes().data()), static_cast<std::size_t>(numel_)};
  }

  // True when the bytes live in a mapped file rather than in memory owned by the tensor.
  bool is_view() const noexcept { return is_view_; }
  // Whether mutable_bytes() may be called: owned tensors and writable views.
  bool is_writable() const noexcept { return writable_; }

  // An owned deep copy (turns a view into memory of its own).
  Tensor clone() const;

  // Same dtype, shape and bytes.
  bool equals(const Tensor& other) const noexcept;

 private:
  void check_dtype(DType requested) const;

  DType dtype_ = DType::float32;
  Shape shape_;
  std::uint64_t numel_ = 0;
  std::shared_ptr<const std::byte> data_;
  bool is_view_ = false;
  bool writable_ = true;
};

}  // namespace ckpt

CKPT_API_END

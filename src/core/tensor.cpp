#include "ckpt/tensor.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <new>
#include <vector>

#include "core/buffer_reuse.h"
#include "util/bytes.h"

namespace ckpt {
namespace {

constexpr std::align_val_t kAlignment{64};

// While a conversion runs (detail::BufferReuse), freed tensor buffers of 1 MiB or more are kept
// and handed to the next tensors that fit, instead of going back to the kernel: a fresh buffer
// costs a page fault per 4 KiB on first touch (on some VMs several milliseconds per MiB, more
// than the copy into it), a reused one none. At most kCachedBytes stay cached; the cache empties
// when the last BufferReuse ends.
constexpr std::uint64_t kReuseMin = 1u << 20;
constexpr std::uint64_t kCachedBytes = 64u << 20;

struct BufferCache {
  std::mutex mutex;
  int users = 0;
  std::uint64_t cached_bytes = 0;
  std::vector<std::pair<std::byte*, std::uint64_t>> free;  // buffer, capacity
};
BufferCache& cache() {
  static BufferCache c;
  return c;
}

// Buffers of 2 MiB or more get their own anonymous mapping, aligned to 2 MiB and marked
// MADV_HUGEPAGE, so the kernel can back them with transparent huge pages (with THP "always" or
// "madvise", the common defaults): one page fault per 2 MiB instead of 512. On the development
// VM first touch of fresh memory costs 3.7 s per GB with 4 KiB pages and 0.1 s with huge pages,
// and every tensor read into memory touches a fresh buffer unless one is reused.
constexpr std::uint64_t kHugePage = 2u << 20;

std::uint64_t mapped_length(std::uint64_t nbytes) {
  static const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));  // 4 KiB, 16 KiB, 64 KiB
  return (nbytes + page - 1) / page * page;
}

std::byte* map_buffer(std::uint64_t nbytes) {
  const std::uint64_t length = mapped_length(nbytes);
  void* base = ::mmap(nullptr, length + kHugePage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) throw std::bad_alloc();
  const auto start = reinterpret_cast<std::uintptr_t>(base);
  const std::uintptr_t aligned = (start + kHugePage - 1) & ~static_cast<std::uintptr_t>(kHugePage - 1);
  // Keep only the aligned part.
  if (aligned > start) ::munmap(base, aligned - start);
  const std::uintptr_t end = start + length + kHugePage, used_end = aligned + length;
  if (end > used_end) ::munmap(reinterpret_cast<void*>(used_end), end - used_end);
  ::madvise(reinterpret_cast<void*>(aligned), length, MADV_HUGEPAGE);  // a hint: fine if refused
  return reinterpret_cast<std::byte*>(aligned);
}

void free_buffer(std::byte* p, std::uint64_t capacity) {
  if (capacity >= kHugePage) ::munmap(p, mapped_length(capacity));
  else ::operator delete(p, kAlignment);
}

void release(std::byte* p, std::uint64_t capacity) {
  auto& c = cache();
  {
    std::lock_guard lock(c.mutex);
    if (c.users > 0 && capacity >= kReuseMin && c.cached_bytes + capacity <= kCachedBytes) {
      c.free.emplace_back(p, capacity);
      c.cached_bytes += capacity;
      return;
    }
  }
  free_buffer(p, capacity);
}

std::shared_ptr<std::byte> allocate(std::uint64_t nbytes) {
  if (nbytes == 0) return {};
  if (nbytes > static_cast<std::uint64_t>(PTRDIFF_MAX))
    detail::fail(ErrorCode::invalid_argument, "", "tensor of {} bytes is too large", nbytes);
  std::byte* p = nullptr;
  std::uint64_t capacity = nbytes;
  if (nbytes >= kReuseMin) {
    auto& c = cache();
    std::lock_guard lock(c.mutex);
    // The smallest cached buffer that fits, if it wastes at most half of itself.
    auto best = c.free.end();
    for (auto it = c.free.begin(); it != c.free.end(); ++it)
      if (it->second >= nbytes && it->second / 2 <= nbytes && (best == c.free.end() || it->second < best->second))
        best = it;
    if (best != c.free.end()) {
      p = best->first;
      capacity = best->second;
      c.cached_bytes -= capacity;
      c.free.erase(best);
    }
  }
  if (!p) p = nbytes >= kHugePage ? map_buffer(nbytes) : static_cast<std::byte*>(::operator new(nbytes, kAlignment));
  return std::shared_ptr<std::byte>(p, [capacity](std::byte* q) { release(q, capacity); });
}

}  // namespace

std::uint64_t shape_numel(const Shape& shape) {
  std::uint64_t n = 1;
  for (auto d : shape) {
    if (d < 0) detail::fail(ErrorCode::invalid_argument, "", "negative dimension in shape {}", shape_to_string(shape));
    auto m = detail::checked_mul(n, static_cast<std::uint64_t>(d));
    if (!m) detail::fail(ErrorCode::invalid_argument, "", "shape {} overflows 64 bits", shape_to_string(shape));
    n = *m;
  }
  return n;
}

std::uint64_t shape_nbytes(DType dtype, const Shape& shape) {
  auto n = detail::checked_mul(shape_numel(shape), dtype_size(dtype));
  if (!n) detail::fail(ErrorCode::invalid_argument, "", "shape {} of {} overflows 64 bits", shape_to_string(shape), dtype_name(dtype));
  return *n;
}

std::string shape_to_string(const Shape& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

detail::BufferReuse::BufferReuse() {
  std::lock_guard lock(cache().mutex);
  ++cache().users;
}

detail::BufferReuse::~BufferReuse() {
  std::vector<std::pair<std::byte*, std::uint64_t>> drop;
  {
    std::lock_guard lock(cache().mutex);
    if (--cache().users > 0) return;
    drop.swap(cache().free);
    cache().cached_bytes = 0;
  }
  for (auto [p, capacity] : drop) free_buffer(p, capacity);
}

Tensor::Tensor() : shape_{0} {}

Tensor Tensor::zeros(DType dtype, Shape shape) {
  Tensor t = uninitialized(dtype, std::move(shape));
  if (t.nbytes() > 0) std::memset(t.mutable_bytes().data(), 0, t.nbytes());
  return t;
}

Tensor Tensor::uninitialized(DType dtype, Shape shape) {
  Tensor t;
  t.dtype_ = dtype;
  t.numel_ = shape_numel(shape);
  t.shape_ = std::move(shape);
  t.data_ = allocate(t.nbytes());
  return t;
}

Tensor Tensor::copy_of(DType dtype, Shape shape, std::span<const std::byte> bytes) {
  const auto expected = shape_nbytes(dtype, shape);
  if (bytes.size() != expected)
    detail::fail(ErrorCode::invalid_argument, "", "{} bytes given for a {} tensor of shape {} ({} bytes)",
                 bytes.size(), dtype_name(dtype), shape_to_string(shape), expected);
  Tensor t = uninitialized(dtype, std::move(shape));
  if (expected > 0) std::memcpy(t.mutable_bytes().data(), bytes.data(), expected);
  return t;
}

Tensor Tensor::view(DType dtype, Shape shape, const std::byte* data,
                    std::shared_ptr<const void> owner) {
  Tensor t;
  t.dtype_ = dtype;
  t.numel_ = shape_numel(shape);
  t.shape_ = std::move(shape);
  // Aliasing constructor: shares ownership of `owner`, points at `data`.
  t.data_ = std::shared_ptr<const std::byte>(std::move(owner), data);
  t.is_view_ = true;
  t.writable_ = false;
  return t;
}

Tensor Tensor::writable_view(DType dtype, Shape shape, std::byte* data, std::shared_ptr<void> owner) {
  Tensor t = view(dtype, std::move(shape), data, std::move(owner));
  t.writable_ = true;
  return t;
}

std::span<std::byte> Tensor::mutable_bytes() {
  if (!writable_)
    detail::fail(ErrorCode::invalid_argument, "",
                 "tensor is a read-only view (Tensor::view, or read with ReadOptions::writable false); clone() it first");
  return {const_cast<std::byte*>(data_.get()), static_cast<std::size_t>(nbytes())};
}

Tensor Tensor::clone() const { return copy_of(dtype_, shape_, bytes()); }

bool Tensor::equals(const Tensor& other) const noexcept {
  if (dtype_ != other.dtype_ || shape_ != other.shape_) return false;
  const auto a = bytes();
  const auto b = other.bytes();
  return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

void Tensor::check_dtype(DType requested) const {
  if (requested != dtype_)
    detail::fail(ErrorCode::invalid_argument, "", "elements of {} requested from a {} tensor", dtype_name(requested),
                 dtype_name(dtype_));
}

}  // namespace ckpt

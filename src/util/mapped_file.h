// Read-only memory mapping of a whole file, shared by every zero-copy Tensor that points into it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>

namespace ckpt::detail {

class MappedFile {
 public:
  // Maps the file at `path` (throws io naming the file). An empty file maps to an empty span.
  static std::shared_ptr<const MappedFile> open(const std::filesystem::path& path);
  // Maps an already open descriptor (not taken over; the mapping outlives it).
  static std::shared_ptr<const MappedFile> from_fd(int fd, const std::filesystem::path& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }
  std::uint64_t size() const noexcept { return size_; }
  // Ask the kernel to fault in [offset, offset + length) ahead of use.
  void prefetch(std::uint64_t offset, std::uint64_t length) const noexcept;

 private:
  MappedFile(const std::byte* data, std::size_t size) : data_(data), size_(size) {}
  const std::byte* data_;
  std::size_t size_;
};

}  // namespace ckpt::detail

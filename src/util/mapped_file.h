// Read-only memory mapping of a whole file, shared by every zero-copy Tensor that points into it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>

namespace ckpt::detail {

class MappedFile {
 public:
  // Maps an already open descriptor (not taken over; the mapping outlives it). Throws io naming
  // `path`. An empty file maps to an empty span. With `size`, maps exactly that many bytes and
  // throws io if the file is now shorter (truncated since its size was taken).
  static std::shared_ptr<const MappedFile> from_fd(int fd, const std::filesystem::path& path,
                                                   std::optional<std::uint64_t> size = std::nullopt);
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

namespace ckpt::detail {

// Owner of a file descriptor (closed on destruction).
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd();
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  int get() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// open(path, O_RDONLY); throws io naming the file.
UniqueFd open_readonly(const std::filesystem::path& path);

}  // namespace ckpt::detail

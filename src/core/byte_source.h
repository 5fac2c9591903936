// The bytes of a checkpoint: an open file or a range of memory. Every reader reads through one,
// and every zero-copy tensor it hands out keeps it (and its mapping) alive.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>

#include "ckpt/tensor.h"
#include "util/file_read.h"
#include "util/mapped_file.h"

namespace ckpt::detail {

class ByteSource {
 public:
  // Opens `path` read-only.
  static std::shared_ptr<const ByteSource> open_file(const std::filesystem::path& path);
  // A descriptor already open on the file `path` (taken over); `name` names it in messages
  // (default: the path).
  static std::shared_ptr<const ByteSource> from_fd(UniqueFd fd, const std::filesystem::path& path, std::string name = {});
  // `bytes`, kept alive by `owner`; `name` names it in messages ("<memory>").
  static std::shared_ptr<const ByteSource> from_memory(std::span<const std::byte> bytes,
                                                       std::shared_ptr<const void> owner, std::string name);
  // Bytes [offset, offset + length) of `parent` as a source of their own (offset 0 is the
  // parent's `offset`), checked against the parent; `name` names it in messages. Reads, views
  // and file spans go to the parent's file or memory: a window copies nothing.
  static std::shared_ptr<const ByteSource> window(std::shared_ptr<const ByteSource> parent, std::uint64_t offset,
                                                  std::uint64_t length, std::string name);

  ByteSource(const ByteSource&) = delete;
  ByteSource& operator=(const ByteSource&) = delete;

  const std::string& name() const noexcept { return name_; }
  // The file's path; empty for memory.
  const std::filesystem::path& path() const noexcept { return path_; }
  bool is_file() const noexcept { return fd() >= 0; }
  int fd() const noexcept { return parent_ ? parent_->fd() : fd_.get(); }  // -1 for memory
  std::uint64_t size() const noexcept { return size_; }
  // Where byte `offset` of this source lies in its file (or memory): offset itself, but for a window.
  std::uint64_t file_offset(std::uint64_t offset) const noexcept { return base_ + offset; }

  // Every byte: the file's read-only shared mapping (made on first use) or the memory.
  std::span<const std::byte> bytes() const;

  // Throws format naming the source unless [offset, offset + length) lies inside it.
  void check_range(std::uint64_t offset, std::uint64_t length, const char* what) const;
  // Copies [offset, offset + out.size()) into `out`: pread for files (no page of the mapping is
  // faulted in and kept for a copy), memcpy for memory. With `hash`, also returns the XXH3-64 of
  // those bytes (files: computed by a helper thread one block behind the reads).
  std::optional<std::uint64_t> read(std::uint64_t offset, std::span<std::byte> out, bool hash = false) const;
  // The same with any digest (util/file_read.h): XXH3-64, or the CRC-32 continued from `crc`.
  std::optional<std::uint64_t> read(std::uint64_t offset, std::span<std::byte> out, Digest digest,
                                    std::uint32_t crc = 0) const;

  // Zero-copy tensors of the bytes at `offset` (checked against the size). A read-only view
  // shares the one mapping of the file (or the memory itself). A writable view is a private
  // copy-on-write mapping of the range: writes copy the pages they touch, the file never changes;
  // nullopt for memory and where the kernel refuses the mapping (the caller copies instead).
  Tensor view(DType dtype, Shape shape, std::uint64_t offset) const;
  std::optional<Tensor> private_view(DType dtype, Shape shape, std::uint64_t offset) const;

  // Drops the pages of [offset, offset + length) (rounded out to whole pages) from this process's
  // mapping of the file; they stay in the page cache and come back when touched. For a reader
  // that has parsed records through the mapping and reads data with pread: where the page cache
  // holds the file in large folios, each touch maps a whole folio (up to 2 MiB) and counts it as
  // resident. Nothing for memory, or before the file is mapped.
  void release(std::uint64_t offset, std::uint64_t length) const;

  // Whether the byte at `offset` is aligned to `alignment` in memory (views of it then are).
  bool aligned(std::uint64_t offset, std::size_t alignment) const;

 private:
  ByteSource() = default;
  void prefetch(std::uint64_t offset, std::uint64_t length) const;
  // Throws io if the file is now shorter than when it was opened: views of it would end the
  // process with SIGBUS (a view made before a truncation still does, as with any mapped file).
  void check_unchanged() const;

  std::string name_;
  std::filesystem::path path_;
  UniqueFd fd_;
  std::uint64_t size_ = 0;
  std::shared_ptr<const ByteSource> parent_;  // windows: the file or memory they are part of
  std::uint64_t base_ = 0;                    // windows: where they start in the parent
  std::span<const std::byte> memory_;      // memory sources
  std::shared_ptr<const void> owner_;      // keeps memory_ alive
  mutable std::once_flag mapped_once_;
  mutable std::shared_ptr<const MappedFile> mapping_;  // files, on first use
};

}  // namespace ckpt::detail

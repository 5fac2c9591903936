#include "core/byte_source.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "util/bytes.h"
#include "util/checksum.h"
#include "util/file_read.h"

namespace ckpt::detail {
namespace {

std::uint64_t page_size() {
  static const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  return page;
}

}  // namespace

std::shared_ptr<const ByteSource> ByteSource::open_file(const std::filesystem::path& path) {
  return from_fd(open_readonly(path), path);
}

std::shared_ptr<const ByteSource> ByteSource::from_fd(UniqueFd fd, const std::filesystem::path& path, std::string name) {
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) fail(ErrorCode::io, path.string(), "cannot stat: {}", std::strerror(errno));
  if (S_ISDIR(st.st_mode)) fail(ErrorCode::io, path.string(), "is a directory");
  if (!S_ISREG(st.st_mode))
    fail(ErrorCode::io, path.string(), "is not a regular file (a device, FIFO or socket): a checkpoint is read from a file");
  std::shared_ptr<ByteSource> source(new ByteSource());
  source->name_ = name.empty() ? path.string() : std::move(name);
  source->path_ = path;
  source->fd_ = std::move(fd);
  source->size_ = static_cast<std::uint64_t>(st.st_size);
  return source;
}

std::shared_ptr<const ByteSource> ByteSource::from_memory(std::span<const std::byte> bytes,
                                                          std::shared_ptr<const void> owner, std::string name) {
  std::shared_ptr<ByteSource> source(new ByteSource());
  source->name_ = std::move(name);
  source->memory_ = bytes;
  source->owner_ = std::move(owner);
  source->size_ = bytes.size();
  return source;
}

std::shared_ptr<const ByteSource> ByteSource::window(std::shared_ptr<const ByteSource> parent, std::uint64_t offset,
                                                     std::uint64_t length, std::string name) {
  parent->check_range(offset, length, "window");
  std::shared_ptr<ByteSource> source(new ByteSource());
  source->name_ = std::move(name);
  source->path_ = parent->path_;
  source->size_ = length;
  // A window of a window is a window of the file or memory itself.
  source->base_ = parent->base_ + offset;
  source->parent_ = parent->parent_ ? parent->parent_ : std::move(parent);
  return source;
}

std::span<const std::byte> ByteSource::bytes() const {
  if (parent_) return parent_->bytes().subspan(static_cast<std::size_t>(base_), static_cast<std::size_t>(size_));
  if (!is_file()) return memory_;
  // Exactly the bytes the file had when it was opened (refused if it has shrunk since). A file
  // truncated after this, while mapped, ends the process with SIGBUS on access, as it does for
  // any reader that maps files: ckpt's own writers replace files by rename, which never does that.
  std::call_once(mapped_once_, [&] { mapping_ = MappedFile::from_fd(fd_.get(), path_, size_); });
  return mapping_->bytes();
}

void ByteSource::check_range(std::uint64_t offset, std::uint64_t length, const char* what) const {
  if (offset > size_ || length > size_ - offset)
    fail(ErrorCode::format, name_, "{} at offset {} with {} bytes extends past the end of the data ({} bytes)", what,
         offset, length, size_);
}

std::optional<std::uint64_t> ByteSource::read(std::uint64_t offset, std::span<std::byte> out, bool hash) const {
  return read(offset, out, hash ? Digest::xxh3_64 : Digest::none);
}

std::optional<std::uint64_t> ByteSource::read(std::uint64_t offset, std::span<std::byte> out, Digest digest,
                                              std::uint32_t crc) const {
  check_range(offset, out.size(), "data");
  if (parent_) return parent_->read(base_ + offset, out, digest, crc);
  if (is_file()) return read_at(fd_.get(), offset, out, digest, name_, crc);
  if (!out.empty()) std::memcpy(out.data(), memory_.data() + offset, out.size());
  switch (digest) {
    case Digest::none: return std::nullopt;
    case Digest::xxh3_64: return xxh3_64(out);
    case Digest::crc32: return crc32(crc, out);
  }
  return std::nullopt;
}

bool ByteSource::aligned(std::uint64_t offset, std::size_t alignment) const {
  if (parent_) return parent_->aligned(base_ + offset, alignment);
  // A mapping starts on a page boundary: the file offset decides. Memory is where it is.
  const std::uint64_t base = is_file() ? 0 : reinterpret_cast<std::uintptr_t>(memory_.data());
  return (base + offset) % alignment == 0;
}

void ByteSource::release(std::uint64_t offset, std::uint64_t length) const {
  if (parent_) return parent_->release(base_ + offset, length);
  if (!is_file() || !mapping_ || offset >= size_) return;
  const std::uint64_t page = page_size();
  const std::uint64_t begin = offset / page * page;
  const std::uint64_t end = std::min<std::uint64_t>((offset + std::min(length, size_ - offset) + page - 1) / page * page,
                                                    (size_ + page - 1) / page * page);
  (void)::madvise(const_cast<std::byte*>(mapping_->bytes().data()) + begin, end - begin, MADV_DONTNEED);
}

void ByteSource::prefetch(std::uint64_t offset, std::uint64_t length) const {
  if (parent_) return parent_->prefetch(base_ + offset, length);
  if (is_file() && mapping_) mapping_->prefetch(offset, length);
}

void ByteSource::check_unchanged() const {
  if (parent_) return parent_->check_unchanged();
  if (!is_file()) return;
  struct stat st {};
  if (::fstat(fd_.get(), &st) != 0) fail(ErrorCode::io, name_, "cannot stat: {}", std::strerror(errno));
  if (static_cast<std::uint64_t>(st.st_size) < size_)
    fail(ErrorCode::io, name_, "the file shrank from {} to {} bytes while open (truncated by another program?)", size_,
         st.st_size);
}

Tensor ByteSource::view(DType dtype, Shape shape, std::uint64_t offset) const {
  const std::uint64_t nbytes = shape_nbytes(dtype, shape);
  check_range(offset, nbytes, "tensor data");
  if (parent_) return parent_->view(dtype, std::move(shape), base_ + offset);
  check_unchanged();
  const std::byte* at = bytes().data() + offset;
  prefetch(offset, nbytes);
  std::shared_ptr<const void> owner = is_file() ? std::shared_ptr<const void>(mapping_) : owner_;
  return Tensor::view(dtype, std::move(shape), at, std::move(owner));
}

std::optional<Tensor> ByteSource::private_view(DType dtype, Shape shape, std::uint64_t offset) const {
  const std::uint64_t nbytes = shape_nbytes(dtype, shape);
  check_range(offset, nbytes, "tensor data");
  if (parent_) return parent_->private_view(dtype, std::move(shape), base_ + offset);
  if (!is_file() || nbytes == 0) return std::nullopt;
  check_unchanged();
  const std::uint64_t start = offset / page_size() * page_size();
  const std::uint64_t length = offset - start + nbytes;
  // Mapped read-only with MAP_POPULATE, so the page cache's pages are mapped in the same call
  // (populating a writable private mapping would copy every page), then made writable: a write
  // copies just the page it touches.
  void* p = ::mmap(nullptr, length, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd_.get(), static_cast<off_t>(start));
  if (p == MAP_FAILED) return std::nullopt;  // out of mappings (vm.max_map_count) or address space
  if (::mprotect(p, length, PROT_READ | PROT_WRITE) != 0) {
    ::munmap(p, length);
    return std::nullopt;
  }
  std::shared_ptr<void> owner(p, [length](void* q) { ::munmap(q, length); });
  return Tensor::writable_view(dtype, std::move(shape), static_cast<std::byte*>(p) + (offset - start), std::move(owner));
}

}  // namespace ckpt::detail

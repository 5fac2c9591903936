#include "util/mapped_file.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "util/bytes.h"

namespace ckpt::detail {

std::shared_ptr<const MappedFile> MappedFile::from_fd(int fd, const std::filesystem::path& path,
                                                      std::optional<std::uint64_t> expected) {
  struct stat st {};
  if (fstat(fd, &st) != 0) fail(ErrorCode::io, path.string(), "cannot stat: {}", std::strerror(errno));
  if (expected && static_cast<std::uint64_t>(st.st_size) < *expected)
    fail(ErrorCode::io, path.string(), "the file shrank from {} to {} bytes while open (truncated by another program?)",
         *expected, st.st_size);
  const auto size = static_cast<std::size_t>(expected ? *expected : static_cast<std::uint64_t>(st.st_size));
  if (size == 0) return std::shared_ptr<const MappedFile>(new MappedFile(nullptr, 0));
  void* p = mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) fail(ErrorCode::io, path.string(), "cannot map: {}", std::strerror(errno));
  return std::shared_ptr<const MappedFile>(new MappedFile(static_cast<const std::byte*>(p), size));
}

MappedFile::~MappedFile() {
  if (data_ != nullptr) munmap(const_cast<std::byte*>(data_), size_);
}

void MappedFile::prefetch(std::uint64_t offset, std::uint64_t length) const noexcept {
  if (data_ == nullptr || offset >= size_) return;
  const std::uint64_t page = static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
  const std::uint64_t begin = offset / page * page;
  const std::uint64_t end = std::min<std::uint64_t>(size_, offset + length);
#ifdef MADV_POPULATE_READ
  // Populates page tables in one call instead of one fault per page; ignored on old kernels.
  if (madvise(const_cast<std::byte*>(data_) + begin, end - begin, MADV_POPULATE_READ) == 0) return;
#endif
  madvise(const_cast<std::byte*>(data_) + begin, end - begin, MADV_WILLNEED);
}

}  // namespace ckpt::detail

namespace ckpt::detail {

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

UniqueFd open_readonly(const std::filesystem::path& path) {
  // O_NONBLOCK: opening a FIFO would otherwise wait for a writer. Reads from regular files ignore
  // it; anything else is refused below.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK));
  if (!fd.valid()) fail(ErrorCode::io, path.string(), "cannot open: {}", std::strerror(errno));
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) fail(ErrorCode::io, path.string(), "cannot stat: {}", std::strerror(errno));
  if (S_ISDIR(st.st_mode)) fail(ErrorCode::io, path.string(), "is a directory");
  if (!S_ISREG(st.st_mode))
    fail(ErrorCode::io, path.string(), "is not a regular file (a device, FIFO or socket): a checkpoint is read from a file");
  const int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags >= 0) ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  return fd;
}

}  // namespace ckpt::detail

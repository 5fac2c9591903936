#include "util/atomic_file.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>

#include "util/bytes.h"

namespace ckpt::detail {
namespace {

mode_t current_umask() {
  // umask can only be read by setting it; restore at once.
  const mode_t mask = ::umask(0);
  ::umask(mask);
  return mask;
}

void fsync_path(const std::filesystem::path& path, int flags, const std::string& name) {
  int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) fail(ErrorCode::io, name, "cannot open for fsync: {}", std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) fail(ErrorCode::io, name, "fsync failed: {}", std::strerror(err));
}

// Copies up to `size` bytes from `from` to `fd` (at *out_offset, or its position if null) inside
// the kernel; returns how many were copied. Stops early where that cannot be done (EXDEV,
// EINVAL, ... or a shorter source): the caller writes the rest from memory.
std::size_t copy_in_kernel(const std::optional<Source::FileSpan>& from, int fd, loff_t* out_offset, std::size_t size) {
  if (!from) return 0;
  std::size_t done = 0;
  auto in = static_cast<loff_t>(from->offset);
  while (done < size) {
    const ssize_t n = ::copy_file_range(from->fd, &in, fd, out_offset, size - done, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  return done;
}

}  // namespace

AtomicFile::AtomicFile(std::filesystem::path target, bool overwrite)
    : target_(std::move(target)), overwrite_(overwrite) {
  const std::string name = target_.string();
  if (!overwrite_ && std::filesystem::exists(target_))
    fail(ErrorCode::io, name, "already exists (not overwriting)");
  std::filesystem::path dir = target_.parent_path();
  if (dir.empty()) dir = ".";
  // Appended rather than "." + name: GCC 12 warns falsely on that (-Wrestrict, its bug 105329).
  std::string leaf(1, '.');
  leaf += target_.filename().string();
  leaf += ".tmp-XXXXXX";
  std::string pattern = (dir / leaf).string();
  fd_ = ::mkostemp(pattern.data(), O_CLOEXEC);
  if (fd_ < 0) fail(ErrorCode::io, name, "cannot create a temporary file in '{}': {}", dir.string(),
                    std::strerror(errno));
  temp_ = pattern;
  // mkstemp makes the file 0600; give it the mode a plain creat() would.
  ::fchmod(fd_, 0666 & ~current_umask());
  start_writeback();
}

void AtomicFile::start_writeback() {
  // Its own descriptor: ours may be closed while a library writes the file by name.
  const int fd = ::open(temp_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return;  // only a speed-up
  writeback_ = std::thread([this, fd] {
    std::unique_lock lock(writeback_mutex_);
    while (!writeback_wake_.wait_for(lock, std::chrono::milliseconds(50), [this] { return writeback_stop_; })) {
      lock.unlock();
      ::sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
      lock.lock();
    }
    ::close(fd);
  });
}

void AtomicFile::stop_writeback() {
  if (!writeback_.joinable()) return;
  {
    const std::lock_guard lock(writeback_mutex_);
    writeback_stop_ = true;
  }
  writeback_wake_.notify_one();
  writeback_.join();
}

AtomicFile::~AtomicFile() {
  stop_writeback();
  if (fd_ >= 0) ::close(fd_);
  if (!committed_) ::unlink(temp_.c_str());
}

void AtomicFile::close_fd() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void AtomicFile::write(std::span<const std::byte> bytes) {
  const std::byte* p = bytes.data();
  std::size_t left = bytes.size();
  while (left > 0) {
    const ssize_t n = ::write(fd_, p, std::min<std::size_t>(left, 1u << 30));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(ErrorCode::io, target_.string(), "write failed: {}", std::strerror(errno));
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
}

void AtomicFile::write(std::span<const std::byte> bytes, const std::optional<Source::FileSpan>& from) {
  write(bytes.subspan(copy_in_kernel(from, fd_, nullptr, bytes.size())));
}

void write_at(int fd, std::uint64_t offset, std::span<const std::byte> bytes, const std::optional<Source::FileSpan>& from,
              const std::string& file) {
  auto out = static_cast<loff_t>(offset);
  std::size_t done = copy_in_kernel(from, fd, &out, bytes.size());
  while (done < bytes.size()) {
    const ssize_t n = ::pwrite(fd, bytes.data() + done, std::min<std::size_t>(bytes.size() - done, 1u << 30),
                               static_cast<off_t>(offset + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      fail(ErrorCode::io, file, "write at offset {} failed: {}", offset + done, std::strerror(errno));
    }
    done += static_cast<std::size_t>(n);
  }
}

void AtomicFile::commit() {
  stop_writeback();
  const std::string name = target_.string();
  if (fd_ >= 0) {
    if (::fsync(fd_) != 0) fail(ErrorCode::io, name, "fsync failed: {}", std::strerror(errno));
    close_fd();
  } else {
    fsync_path(temp_, O_RDONLY, name);
  }
  const unsigned flags = overwrite_ ? 0u : RENAME_NOREPLACE;
  if (::renameat2(AT_FDCWD, temp_.c_str(), AT_FDCWD, target_.c_str(), flags) != 0) {
    if (errno == EEXIST) fail(ErrorCode::io, name, "already exists (not overwriting)");
    fail(ErrorCode::io, name, "cannot rename the temporary file into place: {}",
         std::strerror(errno));
  }
  committed_ = true;
  std::filesystem::path dir = target_.parent_path();
  if (dir.empty()) dir = ".";
  fsync_path(dir, O_RDONLY | O_DIRECTORY, name);
}

}  // namespace ckpt::detail

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

}  // namespace

AtomicFile::AtomicFile(std::filesystem::path target, bool overwrite)
    : target_(std::move(target)), overwrite_(overwrite) {
  const std::string name = target_.string();
  if (!overwrite_ && std::filesystem::exists(target_))
    fail(ErrorCode::io, name, "already exists (not overwriting)");
  std::filesystem::path dir = target_.parent_path();
  if (dir.empty()) dir = ".";
  std::string pattern = (dir / ("." + target_.filename().string() + ".tmp-XXXXXX")).string();
  fd_ = ::mkostemp(pattern.data(), O_CLOEXEC);
  if (fd_ < 0) fail(ErrorCode::io, name, "cannot create a temporary file in '{}': {}", dir.string(),
                    std::strerror(errno));
  temp_ = pattern;
  // mkstemp makes the file 0600; give it the mode a plain creat() would.
  ::fchmod(fd_, 0666 & ~current_umask());
}

AtomicFile::~AtomicFile() {
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

void AtomicFile::commit() {
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

#include "util/atomic_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <random>
#include <string>
#include <system_error>

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

// SIGXFSZ kills a process that writes past `ulimit -f`; ignored, the write fails with EFBIG and
// the writer reports it and removes its temporary. Only a default disposition is changed: a
// program that installed a handler keeps it.
void ignore_file_size_signal() {
  static const bool done = [] {
    struct sigaction current {};
    if (::sigaction(SIGXFSZ, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) ::signal(SIGXFSZ, SIG_IGN);
    return true;
  }();
  (void)done;
}

// Temporary names keep the target's name, shortened so that they fit in NAME_MAX.
constexpr std::size_t kMaxLeafInTempName = NAME_MAX - 20;

std::string random_suffix() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  std::string out(6, 'x');
  for (auto& c : out) c = kChars[rng() % (sizeof kChars - 1)];
  return out;
}

}  // namespace

void remove_abandoned(const std::filesystem::path& dir, const std::function<bool(const std::string&)>& matches) {
  DIR* d = ::opendir(dir.empty() ? "." : dir.c_str());
  if (d == nullptr) return;
  const int dfd = ::dirfd(d);
  while (const dirent* entry = ::readdir(d)) {
    const std::string name = entry->d_name;
    if (!matches(name)) continue;
    const int fd = ::openat(dfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) continue;
    struct stat opened {}, named {};
    // A lock we get is a lock no living writer holds. The name must still be the file we locked.
    if (::fstat(fd, &opened) == 0 && S_ISREG(opened.st_mode) && ::flock(fd, LOCK_EX | LOCK_NB) == 0 &&
        ::fstatat(dfd, name.c_str(), &named, AT_SYMLINK_NOFOLLOW) == 0 && named.st_dev == opened.st_dev &&
        named.st_ino == opened.st_ino)
      ::unlinkat(dfd, name.c_str(), 0);
    ::close(fd);
  }
  ::closedir(d);
}

void remove_stale_temporaries(const std::filesystem::path& dir, const std::string& prefix) {
  remove_abandoned(dir, [&](const std::string& name) {
    return name.starts_with(prefix) && name.size() == prefix.size() + 6;
  });
}

AtomicFile::AtomicFile(std::filesystem::path target, bool overwrite, Naming naming)
    : target_(std::move(target)), overwrite_(overwrite) {
  const std::string name = target_.string();
  const std::string leaf = target_.filename().string();
  if (leaf.empty() || leaf == "." || leaf == "..") fail(ErrorCode::io, name, "is not a file name");
  if (leaf.size() > NAME_MAX) fail(ErrorCode::io, name, "the file name is longer than {} bytes", NAME_MAX);
  ignore_file_size_signal();

  mode_t mode = 0666 & ~current_umask();
  struct stat st {};
  bool owner_known = false;
  if (::lstat(target_.c_str(), &st) == 0) {
    if (S_ISLNK(st.st_mode)) {
      std::error_code ec;
      const auto to = std::filesystem::read_symlink(target_, ec);
      fail(ErrorCode::io, name, "is a symbolic link{}: not replacing it (write to the file itself)",
           ec ? std::string() : " to '" + to.string() + "'");
    }
    if (S_ISDIR(st.st_mode)) fail(ErrorCode::io, name, "is a directory");
    if (!S_ISREG(st.st_mode)) fail(ErrorCode::io, name, "is not a regular file (a device, FIFO or socket): not replacing it");
    if (!overwrite_) fail(ErrorCode::io, name, "already exists (not overwriting)");
    mode = st.st_mode & 07777;
    owner_known = true;
  } else if (errno != ENOENT) {
    fail(ErrorCode::io, name, "cannot look at the output path: {}", std::strerror(errno));
  }

  dir_ = target_.parent_path();
  if (dir_.empty()) dir_ = ".";
  // Appended rather than "." + leaf: GCC 12 warns falsely on that (-Wrestrict, its bug 105329).
  temp_prefix_ = std::string(1, '.');
  temp_prefix_ += leaf.substr(0, kMaxLeafInTempName);
  temp_prefix_ += ".tmp-";
  remove_stale_temporaries(dir_, temp_prefix_);

  if (naming == Naming::anonymous) fd_ = ::open(dir_.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, mode);
  if (naming == Naming::named || (fd_ < 0 && (errno == EOPNOTSUPP || errno == EISDIR || errno == EINVAL))) {
    // No O_TMPFILE here (or a name is wanted): a named temporary, locked at once.
    std::string pattern = (dir_ / (temp_prefix_ + "XXXXXX")).string();
    fd_ = ::mkostemp(pattern.data(), O_CLOEXEC);
    if (fd_ >= 0) temp_ = pattern;
  }
  if (fd_ < 0)
    fail(ErrorCode::io, name, "cannot create a temporary file in '{}': {}", dir_.string(), std::strerror(errno));
  ::flock(fd_, LOCK_EX | LOCK_NB);
  // The mode asked of open() passed through the umask (mkstemp makes 0600): set it exactly.
  ::fchmod(fd_, mode);
  if (owner_known && (st.st_uid != ::geteuid() || st.st_gid != ::getegid())) {
    if (::fchown(fd_, st.st_uid, st.st_gid) == 0) ::fchmod(fd_, mode);  // chown clears set-id bits
  }
  start_writeback();
}

void AtomicFile::start_writeback() {
  const int fd = ::fcntl(fd_, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) return;  // only a speed-up
  try {
    writeback_ = std::thread([this, fd] {
    std::unique_lock lock(writeback_mutex_);
    while (!writeback_wake_.wait_for(lock, std::chrono::milliseconds(50), [this] { return writeback_stop_; })) {
      lock.unlock();
      ::sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
      lock.lock();
    }
    ::close(fd);
  });
  } catch (const std::system_error&) {  // no thread to be had: only a speed-up
    ::close(fd);
  }
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
  if (!committed_ && !temp_.empty()) ::unlink(temp_.c_str());
  if (fd_ >= 0) ::close(fd_);  // after the unlink: the lock keeps others off until the name is gone
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
  if (::fsync(fd_) != 0) fail(ErrorCode::io, name, "fsync failed: {}", std::strerror(errno));
  if (temp_.empty()) {
    // Name the anonymous file: through /proc (any user), else AT_EMPTY_PATH (needs
    // CAP_DAC_READ_SEARCH).
    const std::string self = "/proc/self/fd/" + std::to_string(fd_);
    for (int attempt = 0;; ++attempt) {
      const std::filesystem::path candidate = dir_ / (temp_prefix_ + random_suffix());
      int rc = ::linkat(AT_FDCWD, self.c_str(), AT_FDCWD, candidate.c_str(), AT_SYMLINK_FOLLOW);
      if (rc != 0 && errno == ENOENT) rc = ::linkat(fd_, "", AT_FDCWD, candidate.c_str(), AT_EMPTY_PATH);
      if (rc == 0) {
        temp_ = candidate;
        break;
      }
      if (errno != EEXIST || attempt == 100)
        fail(ErrorCode::io, name, "cannot give the new file a name in '{}': {}", dir_.string(), std::strerror(errno));
    }
  } else {
    struct stat st {};
    if (::fstat(fd_, &st) != 0 || st.st_nlink == 0)
      fail(ErrorCode::io, name, "the temporary file was removed while it was written");
  }
  // The target may have become something else meanwhile: still only a regular file is replaced.
  struct stat st {};
  if (::lstat(target_.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
    fail(ErrorCode::io, name, "is no longer a regular file: not replacing it");
  const unsigned flags = overwrite_ ? 0u : RENAME_NOREPLACE;
  if (::renameat2(AT_FDCWD, temp_.c_str(), AT_FDCWD, target_.c_str(), flags) != 0) {
    if (errno == EEXIST) fail(ErrorCode::io, name, "already exists (not overwriting)");
    fail(ErrorCode::io, name, "cannot rename the new file into place: {}", std::strerror(errno));
  }
  committed_ = true;
  fsync_path(dir_, O_RDONLY | O_DIRECTORY, name);
}

void ignore_file_size_limit_signal() { ignore_file_size_signal(); }

}  // namespace ckpt::detail

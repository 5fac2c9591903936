// Atomic replacement of a file: write a temporary file in the target's directory, fsync it, then
// rename it over the target and fsync the directory. Destroying an uncommitted AtomicFile removes
// the temporary, so a failed write leaves the old target untouched and no stray file behind.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <filesystem>
#include <functional>
#include <mutex>
#include <optional>
#include <span>
#include <thread>

#include "ckpt/io.h"

namespace ckpt::detail {

// Writes `bytes` at `offset` of `fd`, copied inside the kernel from where they also lie in a file
// if `from` says (copy_file_range), from memory wherever that cannot be done. Throws io naming
// `file`.
void write_at(int fd, std::uint64_t offset, std::span<const std::byte> bytes, const std::optional<Source::FileSpan>& from,
              const std::string& file);

// Writes a file that replaces `target` all at once, or not at all.
//
// The data goes to an anonymous file (O_TMPFILE) in the target's directory: a writer that is
// killed leaves nothing behind. commit() fsyncs it, gives it a temporary name, renames that over
// the target and fsyncs the directory. Where the file system has no O_TMPFILE, the temporary is
// named from the start. Either way it is named ".TARGET.tmp-XXXXXX" and held under an exclusive
// flock() for as long as its writer lives, so a later writer of the same target removes the
// temporaries of writers that died (the kernel drops a dead process's locks) and never touches a
// live one's.
//
// The target must be a regular file or not exist: a directory, a device, a FIFO, a socket or a
// symbolic link is refused (a link is not followed: the message names where it points). An
// existing target's permission bits (and, where we may, its owner) carry over to the new file;
// a new one gets 0666 less the umask.
//
// A file-size limit (`ulimit -f`) makes writes fail with EFBIG, which becomes an error: SIGXFSZ,
// which would kill the process first, is ignored from the first AtomicFile on (if it was at its
// default disposition).
class AtomicFile {
 public:
  // How the new file is made: anonymous (O_TMPFILE) where the file system allows, or named from
  // the start, for writers that open it again by name (other processes: ckpt::mpi's ranks).
  enum class Naming { anonymous, named };
  // With overwrite == false an existing target is an error (checked now and again, race-free, at
  // commit).
  AtomicFile(std::filesystem::path target, bool overwrite, Naming naming = Naming::anonymous);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  const std::filesystem::path& target() const noexcept { return target_; }
  // Descriptor of the new file, open for reading and writing.
  int fd() const noexcept { return fd_; }
  // The temporary's name: always with Naming::named, else empty until commit.
  const std::filesystem::path& temp_path() const noexcept { return temp_; }

  // Write all of `bytes` at the current position (throws io naming the target).
  void write(std::span<const std::byte> bytes);
  // The same, but copied inside the kernel from where they also lie in a file, if `from` says
  // (Source::file_span; copy_file_range, no copy through user space), and from memory wherever
  // that cannot be done.
  void write(std::span<const std::byte> bytes, const std::optional<Source::FileSpan>& from);

  // fsync, name, rename over the target, fsync the directory.
  void commit();

 private:
  // While the file is written, a thread asks the kernel every 50 ms to start writing its dirty
  // pages out (sync_file_range SYNC_FILE_RANGE_WRITE, which does not wait). Otherwise, on a
  // machine with plenty of memory, nothing reaches the disk before commit's fsync, which then
  // waits for the whole file; this way the disk works while the file is being produced.
  void start_writeback();
  void stop_writeback();
  std::thread writeback_;
  std::mutex writeback_mutex_;
  std::condition_variable writeback_wake_;
  bool writeback_stop_ = false;

  std::filesystem::path target_;
  std::filesystem::path dir_;
  std::string temp_prefix_;     // ".TARGET.tmp-" (TARGET shortened if long)
  std::filesystem::path temp_;  // the temporary's name, once it has one
  int fd_ = -1;
  bool overwrite_;
  bool committed_ = false;
};

// SIGXFSZ (writing past `ulimit -f`) made to fail the write with EFBIG instead of killing the
// process, if its disposition is the default (every AtomicFile does this; writers that write
// through other descriptors, as ckpt::mpi's ranks, call it themselves).
void ignore_file_size_limit_signal();

// Removes the regular files in `dir` whose names `matches` and whose writers are gone (no one
// holds their flock; the name must still be the file that was locked). Never fails.
void remove_abandoned(const std::filesystem::path& dir, const std::function<bool(const std::string&)>& matches);
// The same for the temporaries "PREFIX" + 6 characters (".NAME.tmp-XXXXXX").
void remove_stale_temporaries(const std::filesystem::path& dir, const std::string& prefix);

}  // namespace ckpt::detail

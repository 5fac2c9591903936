// Atomic replacement of a file: write a temporary file in the target's directory, fsync it, then
// rename it over the target and fsync the directory. Destroying an uncommitted AtomicFile removes
// the temporary, so a failed write leaves the old target untouched and no stray file behind.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <filesystem>
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

class AtomicFile {
 public:
  // Creates the temporary file. With overwrite == false an existing target is an error (checked
  // now and again, race-free, at commit).
  AtomicFile(std::filesystem::path target, bool overwrite);
  ~AtomicFile();
  AtomicFile(const AtomicFile&) = delete;
  AtomicFile& operator=(const AtomicFile&) = delete;

  const std::filesystem::path& temp_path() const noexcept { return temp_; }
  const std::filesystem::path& target() const noexcept { return target_; }
  // Descriptor of the temporary file, open for writing (-1 after close_fd()).
  int fd() const noexcept { return fd_; }
  // Close our descriptor, e.g. before a library reopens the temporary by name.
  void close_fd();

  // Write all of `bytes` at the current position (throws io naming the target).
  void write(std::span<const std::byte> bytes);
  // The same, but copied inside the kernel from where they also lie in a file, if `from` says
  // (Source::file_span; copy_file_range, no copy through user space), and from memory wherever
  // that cannot be done.
  void write(std::span<const std::byte> bytes, const std::optional<Source::FileSpan>& from);

  // fsync, rename over the target, fsync the directory.
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
  std::filesystem::path temp_;
  int fd_ = -1;
  bool overwrite_;
  bool committed_ = false;
};

}  // namespace ckpt::detail

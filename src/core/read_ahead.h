// A Source that reads the next tensor on a helper thread while the writer handles the current one,
// so a conversion's reading (decompression, decoding, reads from disk) overlaps its writing
// (encoding, compression, writes). Every call into the wrapped Source happens on the helper
// thread, one at a time, so it need not be thread-safe; only its tensors() and metadata(), fixed
// once it is open, are used from the caller's thread. (HDF5, which ckpt-h5 reading and writing
// both use, serializes itself in src/h5/h5.cpp.)
#pragma once

#include <condition_variable>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>

#include "ckpt/io.h"

namespace ckpt::detail {

class ReadAheadSource final : public Source {
 public:
  // Tensors over `max_ahead_bytes` are read only when asked for, so memory holds at most one
  // tensor that large besides the one being written.
  ReadAheadSource(Source& inner, std::uint64_t max_ahead_bytes);
  ~ReadAheadSource() override;
  ReadAheadSource(const ReadAheadSource&) = delete;
  ReadAheadSource& operator=(const ReadAheadSource&) = delete;

  const std::vector<TensorInfo>& tensors() const override { return inner_.tensors(); }
  const Metadata& metadata() const override { return inner_.metadata(); }
  RoleSource role_source() const noexcept override { return inner_.role_source(); }
  // Tensor `index` (read ahead if it was next), then starts reading the one after it.
  Tensor read(std::size_t index) override;
  // Known for the tensor read last, as the wrapped Source said right after reading it.
  std::optional<FileSpan> file_span(std::size_t index) const override;

 private:
  struct Result {
    Tensor tensor;
    std::optional<FileSpan> span;
    std::exception_ptr error;
  };
  void run();
  void submit(std::size_t index);  // with the helper idle
  Result wait();                   // for the submitted read

  Source& inner_;
  std::uint64_t max_ahead_bytes_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::optional<std::size_t> request_;  // for the helper to read
  std::optional<std::size_t> pending_;  // submitted and not yet taken
  std::optional<Result> result_;
  bool stop_ = false;
  std::optional<std::pair<std::size_t, std::optional<FileSpan>>> last_span_;
  std::thread helper_;  // last: started once everything above exists
};

}  // namespace ckpt::detail

#include "core/read_ahead.h"

namespace ckpt::detail {

ReadAheadSource::ReadAheadSource(Source& inner, std::uint64_t max_ahead_bytes)
    : inner_(inner), max_ahead_bytes_(max_ahead_bytes), helper_([this] { run(); }) {}

ReadAheadSource::~ReadAheadSource() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  cv_.notify_all();
  helper_.join();  // after any read in progress: the tensor it returns is dropped
}

void ReadAheadSource::run() {
  std::unique_lock lock(mutex_);
  for (;;) {
    cv_.wait(lock, [&] { return stop_ || request_.has_value(); });
    if (stop_) return;
    const std::size_t index = *request_;
    request_.reset();
    lock.unlock();
    Result result;
    try {
      result.tensor = inner_.read(index);
      result.span = inner_.file_span(index);  // some readers know it only for the tensor read last
    } catch (...) {
      result.error = std::current_exception();
    }
    lock.lock();
    result_ = std::move(result);
    cv_.notify_all();
  }
}

void ReadAheadSource::submit(std::size_t index) {
  {
    std::lock_guard lock(mutex_);
    request_ = index;
    pending_ = index;
  }
  cv_.notify_all();
}

ReadAheadSource::Result ReadAheadSource::wait() {
  std::unique_lock lock(mutex_);
  cv_.wait(lock, [&] { return result_.has_value(); });
  Result result = std::move(*result_);
  result_.reset();
  pending_.reset();
  return result;
}

Tensor ReadAheadSource::read(std::size_t index) {
  const auto& infos = tensors();
  if (pending_ != index) {
    if (pending_) (void)wait();  // a read ahead of a tensor not asked for: dropped
    submit(index);
  }
  Result result = wait();
  if (result.error) std::rethrow_exception(result.error);
  last_span_.emplace(index, result.span);
  if (index + 1 < infos.size() && infos[index + 1].nbytes() <= max_ahead_bytes_) submit(index + 1);
  return std::move(result.tensor);
}

std::optional<Source::FileSpan> ReadAheadSource::file_span(std::size_t index) const {
  if (last_span_ && last_span_->first == index) return last_span_->second;
  return std::nullopt;
}

}  // namespace ckpt::detail

// A minimal fork-join loop for compression and decompression of independent chunks.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace ckpt::detail {

inline unsigned worker_count(unsigned requested) {
  if (requested != 0) return requested;
  return std::max(1u, std::thread::hardware_concurrency());
}

// Calls fn(worker, i) for i in [0, n) on up to `workers` threads (worker in [0, workers)); the
// first exception thrown is rethrown here after every thread has stopped.
template <typename Fn>
void parallel_for(std::size_t n, unsigned workers, Fn&& fn) {
  workers = static_cast<unsigned>(std::min<std::size_t>(workers, n));
  if (workers <= 1) {
    for (std::size_t i = 0; i < n; ++i) fn(0u, i);
    return;
  }
  std::atomic<std::size_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto run = [&](unsigned worker) {
    for (std::size_t i; (i = next.fetch_add(1)) < n;) {
      try {
        fn(worker, i);
      } catch (...) {
        std::lock_guard lock(error_mutex);
        if (!error) error = std::current_exception();
        next = n;
      }
    }
  };
  std::vector<std::thread> threads;
  for (unsigned w = 1; w < workers; ++w) threads.emplace_back(run, w);
  run(0);
  for (auto& t : threads) t.join();
  if (error) std::rethrow_exception(error);
}

}  // namespace ckpt::detail

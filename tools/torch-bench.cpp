// The libtorch benchmark's C++ side (tools/torch-bench.py runs it): loads a state_dict of LAYERS
// Linear(WIDTH, WIDTH) layers into a torch::nn::Sequential of the same shape, REPEAT times each
// way, and prints one JSON line of seconds:
//   read     the file's bytes read into memory (the raw baseline)
//   copy     ckpt::libtorch::load: the module's tensors get the file's values
//   zero     the same with LoadOptions::zero_copy: the module adopts copy-on-write mappings
//   touched  zero-copy load, then every value read once (a sum per tensor: what the first forward
//            pays for the pages the zero-copy load did not read)
//
//     ckpt-torch-bench FILE LAYERS WIDTH REPEAT
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>

#include "ckpt/torch.h"

namespace {

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

template <typename F>
double median_seconds(int repeat, F&& run) {
  std::vector<double> t;
  for (int i = 0; i < repeat; ++i) {
    const double start = now();
    run();
    t.push_back(now() - start);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void read_all(const char* path) {
  const int fd = ::open(path, O_RDONLY);
  if (fd < 0) std::exit(2);
  std::vector<char> buffer(64u << 20);
  std::vector<char> sink;
  off_t size = ::lseek(fd, 0, SEEK_END);
  sink.resize(static_cast<std::size_t>(size));
  std::size_t done = 0;
  while (done < sink.size()) {
    const auto n = ::pread(fd, sink.data() + done, sink.size() - done, static_cast<off_t>(done));
    if (n <= 0) std::exit(3);
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::fprintf(stderr, "usage: ckpt-torch-bench FILE LAYERS WIDTH REPEAT\n");
    return 2;
  }
  const char* path = argv[1];
  const int layers = std::atoi(argv[2]);
  const int width = std::atoi(argv[3]);
  const int repeat = std::atoi(argv[4]);
  torch::nn::Sequential model;
  for (int i = 0; i < layers; ++i) model->push_back(torch::nn::Linear(width, width));
  const double read = median_seconds(repeat, [&] { read_all(path); });
  const double copy = median_seconds(repeat, [&] { ckpt::libtorch::load(*model, path); });
  ckpt::libtorch::LoadOptions zero_copy;
  zero_copy.zero_copy = true;
  // Each run starts from tensors of the module's own, as the copy runs do.
  const auto fresh = [&] {
    torch::NoGradGuard no_grad;
    for (auto& p : model->parameters()) p.set_data(torch::empty_like(p));
  };
  std::vector<double> zero_runs, touched_runs;
  for (int i = 0; i < repeat; ++i) {
    fresh();
    double start = now();
    ckpt::libtorch::load(*model, path, zero_copy);
    zero_runs.push_back(now() - start);
    fresh();
    start = now();
    ckpt::libtorch::load(*model, path, zero_copy);
    double total = 0;
    for (const auto& p : model->parameters()) total += p.sum().item<double>();
    touched_runs.push_back(now() - start);
    if (total == 12345.678) std::printf("#\n");  // keeps the sums
  }
  std::sort(zero_runs.begin(), zero_runs.end());
  std::sort(touched_runs.begin(), touched_runs.end());
  std::printf("{\"read\": %.6f, \"copy\": %.6f, \"zero\": %.6f, \"touched\": %.6f}\n", read, copy,
              zero_runs[zero_runs.size() / 2], touched_runs[touched_runs.size() / 2]);
  return 0;
}

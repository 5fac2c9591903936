// The downstream use of ckpt::torch (find_package(ckpt COMPONENTS torch)): save a module, load it
// into another, and check that parameters and buffers came across.
#include <cstdio>

#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/linear.h>

#include "ckpt/torch.h"

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  torch::nn::Sequential a(torch::nn::Linear(3, 4), torch::nn::BatchNorm1d(4));
  a->train();
  a->forward(torch::randn({5, 3}));  // running statistics move away from their initial values
  ckpt::libtorch::save(*a, argv[1]);
  torch::nn::Sequential b(torch::nn::Linear(3, 4), torch::nn::BatchNorm1d(4));
  const auto report = ckpt::libtorch::load(*b, argv[1]);
  const auto buffers_a = a->named_buffers();
  const auto buffers_b = b->named_buffers();
  const bool same = torch::equal(a->parameters()[0], b->parameters()[0]) &&
                    torch::equal(buffers_a["1.running_mean"], buffers_b["1.running_mean"]);
  std::printf("torch consumer: %zu tensors loaded, %s\n", report.loaded, same ? "equal" : "DIFFERENT");
  return same && report.loaded == 7 ? 0 : 1;
}

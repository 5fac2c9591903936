// Load a model trained in Python into libtorch and run it: ckpt::libtorch::load fills the C++
// module's parameters AND buffers (here the input normalization and BatchNorm's running
// statistics, the state that hand-written loaders tend to leave at its initial values).
//
// The Python side (tests/torch/run_example.py does this):
//
//   class Net(nn.Module):
//       def __init__(self):
//           super().__init__()
//           self.register_buffer("mean", torch.zeros(1, 3, 1, 1))
//           self.register_buffer("std", torch.ones(1, 3, 1, 1))
//           self.conv = nn.Conv2d(3, 8, 3, padding=1)
//           self.bn = nn.BatchNorm2d(8)
//           self.fc = nn.Linear(8, 10)
//       def forward(self, x):
//           x = (x - self.mean) / self.std
//           x = torch.relu(self.bn(self.conv(x)))
//           return self.fc(x.mean((2, 3)))
//
//   ... train ...
//   torch.save({"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": 5}, "net.pt")
//
// Then:  example_torch_load net.pt   prints the logits for an image of ones, as Python's
// net.eval(); net(torch.ones(1, 3, 32, 32)) gives them. Any format ckpt reads works the same
// (a state_dict, torch.save(net), TorchScript, ckpt-h5, safetensors, ...).
#include <cstdio>
#include <exception>

#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>

#include "ckpt/torch.h"

// The same submodules and buffers under the same names as the Python class.
struct Net : torch::nn::Module {
  Net() {
    mean = register_buffer("mean", torch::zeros({1, 3, 1, 1}));
    std = register_buffer("std", torch::ones({1, 3, 1, 1}));
    conv = register_module("conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).padding(1)));
    bn = register_module("bn", torch::nn::BatchNorm2d(8));
    fc = register_module("fc", torch::nn::Linear(8, 10));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = (x - mean) / std;
    x = torch::relu(bn(conv(x)));
    return fc(x.mean({2, 3}));
  }
  torch::Tensor mean, std;
  torch::nn::Conv2d conv{nullptr};
  torch::nn::BatchNorm2d bn{nullptr};
  torch::nn::Linear fc{nullptr};
};

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CHECKPOINT\n", argv[0]);
    return 2;
  }
  try {
    auto net = std::make_shared<Net>();
    // Strict: a missing, unexpected, reshaped or mis-roled tensor is an error naming every one,
    // and the module is left as it was. The model of a training checkpoint is found by itself.
    const auto report = ckpt::libtorch::load(*net, argv[1]);
    std::fprintf(stderr, "%s: %zu tensors loaded\n", argv[1], report.loaded);
    for (const auto& note : report.notes) std::fprintf(stderr, "note: %s\n", note.c_str());
    net->eval();  // BatchNorm uses the running statistics it loaded
    torch::NoGradGuard no_grad;
    const auto logits = net->forward(torch::ones({1, 3, 32, 32}));
    for (int k = 0; k < logits.size(1); ++k) std::printf("%.9g\n", logits[0][k].item<float>());
    std::fprintf(stderr, "class %ld\n", logits.argmax(1).item<long>());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}

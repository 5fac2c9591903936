// C++ mirrors of the Python models of tests/torch/torch_models.py: the same submodules, buffers
// and names, and a forward() of the same operations in the same order, so that the same weights
// give the same outputs bit for bit.
#pragma once

#include <torch/nn/functional/pooling.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/batchnorm.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/rnn.h>

namespace mirror {

struct BufferNet : torch::nn::Module {
  BufferNet() {
    fc1 = register_module("fc1", torch::nn::Linear(4, 8));
    fc2 = register_module("fc2", torch::nn::Linear(8, 2));
    offset = register_buffer("offset", torch::zeros({4}));
    seen = register_buffer("seen", torch::zeros({}, torch::kInt64));  // persistent=False in Python
  }
  torch::Tensor forward(const torch::Tensor& x) {
    if (is_training()) {
      offset.mul_(0.9).add_(x.mean(0), 0.1);
      seen.add_(x.size(0));
    }
    return fc2(torch::relu(fc1(x - offset)));
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
  torch::Tensor offset, seen;
};

struct SeqRNN : torch::nn::Module {
  explicit SeqRNN(std::int64_t steps = 1) {
    rnn = register_module("rnn", torch::nn::RNN(torch::nn::RNNOptions(3, 5).batch_first(true)));
    fc = register_module("fc", torch::nn::Linear(5, 2));
    sequence_length = register_buffer("sequence_length", torch::tensor(steps, torch::kInt64));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const auto steps = sequence_length.item<std::int64_t>();
    auto out = std::get<0>(rnn->forward(x.slice(1, 0, steps)));
    return fc(out.select(1, -1));
  }
  torch::nn::RNN rnn{nullptr};
  torch::nn::Linear fc{nullptr};
  torch::Tensor sequence_length;
};

struct LSTMInit : torch::nn::Module {
  LSTMInit() {
    lstm = register_module("lstm", torch::nn::LSTM(torch::nn::LSTMOptions(3, 6).batch_first(true)));
    fc = register_module("fc", torch::nn::Linear(6, 2));
    init_hidden = register_buffer("init_hidden", torch::zeros({1, 1, 6}));
    init_cell = register_buffer("init_cell", torch::zeros({1, 1, 6}));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    const auto b = x.size(0);
    auto h0 = init_hidden.expand({1, b, 6}).contiguous();
    auto c0 = init_cell.expand({1, b, 6}).contiguous();
    auto [out, state] = lstm->forward(x, std::make_tuple(h0, c0));
    if (is_training()) {
      init_hidden.mul_(0.5).add_(std::get<0>(state).detach().mean(1, true), 0.5);
      init_cell.mul_(0.5).add_(std::get<1>(state).detach().mean(1, true), 0.5);
    }
    return fc(out.select(1, -1));
  }
  torch::nn::LSTM lstm{nullptr};
  torch::nn::Linear fc{nullptr};
  torch::Tensor init_hidden, init_cell;
};

struct Block : torch::nn::Module {
  Block() {
    conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 8, 3).padding(1).bias(false)));
    bn1 = register_module("bn1", torch::nn::BatchNorm2d(8));
    conv2 = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(8, 8, 3).padding(1).bias(false)));
    bn2 = register_module("bn2", torch::nn::BatchNorm2d(8));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto out = torch::relu(bn1(conv1(x)));
    out = bn2(conv2(out));
    return torch::relu(out + x);
  }
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr}, bn2{nullptr};
};

struct ResNetish : torch::nn::Module {
  ResNetish() {
    conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(3, 8, 3).padding(1).bias(false)));
    bn1 = register_module("bn1", torch::nn::BatchNorm2d(8));
    block = register_module("block", std::make_shared<Block>());
    fc = register_module("fc", torch::nn::Linear(8, 4));
  }
  torch::Tensor forward(torch::Tensor x) {
    x = torch::relu(bn1(conv1(x)));
    x = block->forward(x);
    x = torch::nn::functional::adaptive_avg_pool2d(x, torch::nn::functional::AdaptiveAvgPool2dFuncOptions(1)).flatten(1);
    return fc(x);
  }
  torch::nn::Conv2d conv1{nullptr};
  torch::nn::BatchNorm2d bn1{nullptr};
  std::shared_ptr<Block> block;
  torch::nn::Linear fc{nullptr};
};

}  // namespace mirror

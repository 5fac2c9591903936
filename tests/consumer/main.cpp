#include <ckpt/ckpt.h>

#include <filesystem>
#include <iostream>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  ckpt::StateDict state;
  state.add_parameter("fc.weight", ckpt::Tensor::zeros(ckpt::DType::float32, {2, 3}));
  state.add_buffer("bn.running_mean", ckpt::Tensor::zeros(ckpt::DType::float32, {3}));
  ckpt::save(state, argv[1]);
  const auto back = ckpt::load(argv[1]);
  std::cout << "consumer: " << back.count(ckpt::Role::parameter) << " parameter, "
            << back.count(ckpt::Role::buffer) << " buffer, ckpt " << CKPT_VERSION << "\n";
  return back.size() == 2 ? 0 : 1;
}

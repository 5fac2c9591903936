#include <ckpt/ckpt.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  ckpt::StateDict state;
  state.add_parameter("fc.weight", ckpt::Tensor::zeros(ckpt::DType::float32, {2, 3}));
  state.add_buffer("bn.running_mean", ckpt::Tensor::zeros(ckpt::DType::float32, {3}));
  state.at("fc.weight").as_mutable<float>()[4] = 2.5f;
  ckpt::save(state, argv[1]);
  const auto back = ckpt::load(argv[1]);
  // The same file from memory, and a slice of it.
  std::ifstream in(argv[1], std::ios::binary);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> bytes(text.size());
  std::copy(text.begin(), text.end(), reinterpret_cast<char*>(bytes.data()));
  const ckpt::Tensor row = ckpt::open_memory(std::move(bytes))->read_slice("fc.weight", {1, 0}, {1, 3});
  std::cout << "consumer: " << back.count(ckpt::Role::parameter) << " parameter, "
            << back.count(ckpt::Role::buffer) << " buffer, row 1 = " << row.as<float>()[1] << ", ckpt " << CKPT_VERSION
            << "\n";
  return back.size() == 2 && row.as<float>()[1] == 2.5f ? 0 : 1;
}

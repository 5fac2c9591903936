#include "helpers.h"

#include <catch2/catch.hpp>

#include <fstream>
#include <random>
#include <sstream>

namespace ckpt::test {

const std::vector<Format> kFormats = {
    {"ckpt-h5", ".ckpt.h5"},        {"ckpt-h5 zstd", ".ckpt.h5", Compression::zstd},
    {"safetensors", ".safetensors"}, {"pytorch", ".pt"},
    {"flax", ".msgpack"},           {"numpy", ".npz"},
    {"boost-text", ".boost.txt"},   {"boost-xml", ".boost.xml"},
    {"boost-binary", ".boost.bin"},
};

Tensor pattern_tensor(DType dtype, Shape shape, unsigned seed) {
  Tensor t = Tensor::zeros(dtype, std::move(shape));
  std::mt19937 rng(seed);
  for (auto& b : t.mutable_bytes()) b = static_cast<std::byte>(dtype == DType::bool_ ? rng() % 2 : rng() % 256);
  return t;
}

StateDict kitchen_sink(bool with_complex128) {
  StateDict s;
  unsigned seed = 1;
  for (DType d : all_dtypes()) {
    if (d == DType::complex128 && !with_complex128) continue;
    const std::string name = "dtypes." + std::string(dtype_name(d));
    if (dtype_is_floating(d) || dtype_is_complex(d)) s.add_parameter(name, pattern_tensor(d, {3, 5}, seed++));
    else s.add_buffer(name, pattern_tensor(d, {7}, seed++));
  }
  s.add_parameter("scalar", pattern_tensor(DType::float32, {}, seed++));
  s.add_parameter("empty", Tensor::zeros(DType::float32, {0, 4}));
  s.add_parameter("empty.rank1", Tensor::zeros(DType::int64, {0}));
  s.add_parameter("big.weight", pattern_tensor(DType::float32, {300, 257}, seed++));  // several zstd chunks
  s.add_parameter("", pattern_tensor(DType::float32, {2}, seed++));
  s.add_parameter(".", pattern_tensor(DType::float32, {2}, seed++));
  s.add_parameter("a", pattern_tensor(DType::float32, {2}, seed++));
  s.add_parameter("a.b", pattern_tensor(DType::float32, {2}, seed++));
  s.add_parameter("a/b", pattern_tensor(DType::float32, {2}, seed++));
  s.add_parameter("a%2Fb", pattern_tensor(DType::float32, {2}, seed++));
  s.add_parameter("%", pattern_tensor(DType::float32, {2}, seed++));
  s.add_parameter("a..b.", pattern_tensor(DType::float32, {2}, seed++));
  s.add_parameter("слой.вес", pattern_tensor(DType::float32, {2}, seed++));
  s.add_parameter("emoji.\xF0\x9F\x98\x80", pattern_tensor(DType::float32, {2}, seed++));
  s.add_parameter(std::string("nul\0inside", 10), pattern_tensor(DType::float32, {2}, seed++));
  s.add_parameter(std::string(10000, 'k'), pattern_tensor(DType::float32, {2}, seed++));
  s.add_buffer("bn.running_mean", pattern_tensor(DType::float32, {4}, seed++), true, "batch_stats");
  s.add_buffer("bn.running_var", pattern_tensor(DType::float32, {4}, seed++), true, "batch_stats");
  s.add_buffer("mask", pattern_tensor(DType::bool_, {2, 2}, seed++), false);
  s.add_extra("optimizer", "state.0.exp_avg", pattern_tensor(DType::float32, {3, 5}, seed++));
  s.add_extra("optimizer", "state.0.step", pattern_tensor(DType::int64, {}, seed++));
  s.add_extra("optimizer", "a", pattern_tensor(DType::float32, {2}, seed++));  // same key as a model entry
  s.metadata() = Metadata::parse(R"({"epoch": 3, "step": 1200, "lr": 0.001, "framework": "ckpt-test",
      "amp": false, "config": {"depth": 18, "widths": [64, 128], "name": "resnet"}, "note": null})");
  return s;
}

StateDict without_non_persistent(const StateDict& s) {
  StateDict out;
  for (const auto& e : s.entries())
    if (e.role != Role::buffer || e.persistent) out.add(static_cast<const EntryInfo&>(e), e.tensor);
  out.metadata() = s.metadata();
  return out;
}

void require_same(const StateDict& a, const StateDict& b) {
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) {
    const Entry& x = a.entries()[i];
    const Entry& y = b.entries()[i];
    INFO("entry " << i << " '" << x.name.substr(0, 40) << "'");
    CHECK(x.name == y.name);
    CHECK(x.role == y.role);
    CHECK(x.section == y.section);
    CHECK(x.collection == y.collection);
    CHECK(x.persistent == y.persistent);
    CHECK(dtype_name(x.tensor.dtype()) == dtype_name(y.tensor.dtype()));
    CHECK(x.tensor.shape() == y.tensor.shape());
    CHECK(x.tensor.equals(y.tensor));
  }
  CHECK(a.metadata().dump() == b.metadata().dump());
}

TempDir::TempDir() {
  std::random_device rd;
  path_ = std::filesystem::temp_directory_path() / ("ckpt-test-" + std::to_string(rd()) + std::to_string(rd()));
  std::filesystem::create_directories(path_);
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::string read_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace ckpt::test

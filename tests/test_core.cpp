#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>

#include "helpers.h"
#include "util/float_convert.h"

using namespace ckpt;

TEST_CASE("dtype names round-trip and sizes are right", "[core]") {
  REQUIRE(all_dtypes().size() == 17);
  for (DType d : all_dtypes()) {
    INFO(dtype_name(d));
    REQUIRE(dtype_from_name(dtype_name(d)) == d);
  }
  CHECK(dtype_name(DType::bool_) == "bool");
  CHECK(dtype_size(DType::complex128) == 16);
  CHECK(dtype_size(DType::bfloat16) == 2);
  CHECK(dtype_size(DType::float8_e5m2) == 1);
  CHECK_FALSE(dtype_from_name("float4"));
  CHECK(dtype_is_floating(DType::bfloat16));
  CHECK_FALSE(dtype_is_floating(DType::complex64));
  CHECK_FALSE(dtype_is_floating(DType::int8));
}

TEST_CASE("shapes: rank 0, zero-sized dims, overflow", "[core]") {
  CHECK(shape_numel({}) == 1);
  CHECK(shape_numel({3, 0, 5}) == 0);
  CHECK(shape_nbytes(DType::float64, {2, 3}) == 48);
  CHECK_THROWS_WITH(shape_numel({1ll << 40, 1ll << 40}), "shape [1099511627776, 1099511627776] overflows 64 bits");
  CHECK_THROWS_AS(shape_numel({-1}), Error);
  CHECK(shape_to_string({}) == "[]");
}

TEST_CASE("tensors own or view their bytes", "[core]") {
  Tensor t = Tensor::zeros(DType::float32, {2, 2});
  CHECK_FALSE(t.is_view());
  t.as_mutable<float>()[3] = 1.5f;
  CHECK(t.as<float>()[3] == 1.5f);
  CHECK(reinterpret_cast<std::uintptr_t>(t.bytes().data()) % 64 == 0);
  CHECK_THROWS_AS(t.as<double>(), Error);
  // Typed access checks the dtype, not only the element size.
  CHECK_THROWS_WITH(t.as<std::int32_t>(), "elements of int32 requested from a float32 tensor");
  CHECK_THROWS_AS(t.as_mutable<std::uint32_t>(), Error);
  const Tensor half = Tensor::zeros(DType::float16, {2});
  CHECK(half.as<float16_bits>()[1].bits == 0);
  CHECK_THROWS_AS(half.as<bfloat16_bits>(), Error);
  CHECK_THROWS_AS(half.as<std::uint16_t>(), Error);
  CHECK(Tensor::zeros(DType::complex64, {1}).as<std::complex<float>>()[0] == std::complex<float>(0, 0));
  CHECK(Tensor::zeros(DType::bool_, {3}).as<bool>().size() == 3);

  auto owner = std::make_shared<std::vector<std::byte>>(t.bytes().begin(), t.bytes().end());
  Tensor v = Tensor::view(DType::float32, {4}, owner->data(), owner);
  owner.reset();  // the view keeps the storage alive
  CHECK(v.is_view());
  CHECK(v.as<float>()[3] == 1.5f);
  CHECK_FALSE(v.is_writable());
  CHECK_THROWS_WITH(v.mutable_bytes(),
                    "tensor is a read-only view (Tensor::view, or read with ReadOptions::writable false); clone() it first");
  auto memory = std::make_shared<std::vector<std::byte>>(16);
  Tensor w = Tensor::writable_view(DType::float32, {4}, memory->data(), memory);
  CHECK(w.is_view());
  CHECK(w.is_writable());
  w.as_mutable<float>()[2] = 2.5f;
  CHECK(reinterpret_cast<const float*>(memory->data())[2] == 2.5f);
  Tensor c = v.clone();
  CHECK_FALSE(c.is_view());
  CHECK(c.bytes().size() == 16);
  CHECK_FALSE(c.equals(t));  // shape differs
  CHECK(c.equals(Tensor::copy_of(DType::float32, {4}, t.bytes())));
  CHECK_THROWS_WITH(Tensor::copy_of(DType::float32, {3}, t.bytes()),
                    "16 bytes given for a float32 tensor of shape [3] (12 bytes)");
}

TEST_CASE("state dict keeps order, roles, and unique keys", "[core]") {
  StateDict s;
  s.add_parameter("conv.weight", Tensor::zeros(DType::float32, {1}));
  s.add_buffer("bn.running_mean", Tensor::zeros(DType::float32, {1}));
  s.add_buffer("cache.k", Tensor::zeros(DType::float32, {1}), false, "cache");
  s.add_extra("optimizer", "conv.weight", Tensor::zeros(DType::float32, {1}));
  CHECK(s.entries()[1].collection == kDefaultBufferCollection);
  CHECK(s.entries()[2].collection == "cache");
  CHECK_FALSE(s.entries()[2].persistent);
  CHECK(s.count(Role::parameter) == 1);
  CHECK(s.count(Role::buffer) == 2);
  CHECK(s.extra_sections() == std::vector<std::string>{"optimizer"});
  CHECK(s.find("optimizer", "conv.weight") != nullptr);
  CHECK(s.find("conv.weight")->role == Role::parameter);
  CHECK_THROWS_WITH(s.add_buffer("conv.weight", Tensor()), "duplicate model key 'conv.weight'");
  CHECK_THROWS_WITH(s.add_extra("buffers", "x", Tensor()), "extra section name 'buffers' is reserved or empty");
  CHECK_THROWS_WITH(s.at("nope"), "no tensor named 'nope'");
}

TEST_CASE("small float decoding is exact", "[core]") {
  using namespace ckpt::detail;
  CHECK(float16_to_float(0x3c00) == 1.0f);
  CHECK(float16_to_float(0xc000) == -2.0f);
  CHECK(float16_to_float(0x0001) == std::ldexp(1.0f, -24));  // smallest subnormal
  CHECK(std::isinf(float16_to_float(0x7c00)));
  CHECK(std::isnan(float16_to_float(0x7e00)));
  CHECK(bfloat16_to_float(0x3f80) == 1.0f);
  CHECK(bfloat16_to_float(0x4060) == 3.5f);
  CHECK(float8_e4m3fn_to_float(0x38) == 1.0f);
  CHECK(float8_e4m3fn_to_float(0x7e) == 448.0f);  // largest finite
  CHECK(std::isnan(float8_e4m3fn_to_float(0x7f)));
  CHECK(float8_e4m3fn_to_float(0x01) == std::ldexp(1.0f, -9));
  CHECK(float8_e5m2_to_float(0x3c) == 1.0f);
  CHECK(float8_e5m2_to_float(0x7b) == 57344.0f);
  CHECK(std::isinf(float8_e5m2_to_float(0x7c)));
}

TEST_CASE("stats count NaN and Inf and skip them", "[core]") {
  Tensor t = Tensor::zeros(DType::float32, {5});
  auto v = t.as_mutable<float>();
  v[0] = 1;
  v[1] = 3;
  v[2] = NAN;
  v[3] = INFINITY;
  v[4] = 5;
  const TensorStats s = compute_stats(t);
  CHECK(s.count == 3);
  CHECK(s.nan_count == 1);
  CHECK(s.inf_count == 1);
  CHECK(s.min == 1);
  CHECK(s.max == 5);
  CHECK(s.mean == Approx(3));
  CHECK(s.std == Approx(std::sqrt(8.0 / 3)));
}

TEST_CASE("buffer heuristic: dtypes, known names, user regex", "[core][roles]") {
  BufferRule rule("");
  CHECK(rule("layer1.0.bn1.running_mean", DType::float32));
  CHECK(rule("bn.num_batches_tracked", DType::int64));
  CHECK(rule("positions", DType::int32));
  CHECK(rule("mask", DType::bool_));
  CHECK_FALSE(rule("bn.weight", DType::float32));
  CHECK_FALSE(rule("running_mean_proj.weight", DType::float32));  // whole component only
  CHECK_FALSE(rule("variance", DType::float32));
  BufferRule user(".*\\.rope_cache");
  CHECK(user("attn.rope_cache", DType::float32));
  CHECK_FALSE(user("attn.rope_cache.x", DType::float32));
  CHECK_THROWS_WITH(BufferRule("("), Catch::Matchers::StartsWith("invalid buffer regex '('"));
}

TEST_CASE("entries(), at() and metadata() of a temporary StateDict are values, not dangling references", "[core]") {
  STATIC_REQUIRE(std::is_same_v<decltype(std::declval<StateDict>().entries()), std::vector<Entry>>);
  STATIC_REQUIRE(std::is_same_v<decltype(std::declval<StateDict&>().entries()), std::vector<Entry>&>);
  STATIC_REQUIRE(std::is_same_v<decltype(std::declval<const StateDict&>().entries()), const std::vector<Entry>&>);
  STATIC_REQUIRE(std::is_same_v<decltype(std::declval<StateDict>().at("w")), Tensor>);
  STATIC_REQUIRE(std::is_same_v<decltype(std::declval<StateDict>().metadata()), Metadata>);
  const auto make = [] {
    StateDict s;
    s.add_parameter("w", Tensor::zeros(DType::float32, {3}));
    s.add_buffer("n", Tensor::zeros(DType::int64, {}));
    s.metadata()["epoch"] = 7;
    return s;
  };
  std::vector<std::string> names;
  for (const auto& e : make().entries()) names.push_back(e.name);
  CHECK(names == std::vector<std::string>{"w", "n"});
  CHECK(make().at("w").numel() == 3);
  CHECK(make().metadata()["epoch"] == 7);
}

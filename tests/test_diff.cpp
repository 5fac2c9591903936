// checkpoint comparison (ckpt/diff.h): values, tolerances, NaN and Inf, roles, dtypes, shapes.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>
#include <limits>

#include "helpers.h"

using namespace ckpt;

namespace {

Tensor floats(std::vector<float> v) {
  Tensor t = Tensor::uninitialized(DType::float32, {static_cast<std::int64_t>(v.size())});
  std::memcpy(t.mutable_bytes().data(), v.data(), v.size() * 4);
  return t;
}

const TensorDiff& find(const DiffResult& r, const std::string& key) {
  for (const auto& t : r.tensors)
    if (t.key == key) return t;
  FAIL("no " << key);
  throw;
}

}  // namespace

TEST_CASE("diff: values, tolerances, NaN and Inf", "[diff]") {
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  StateDict a, b;
  a.add_parameter("same", floats({1, 2, nan, inf}));
  b.add_parameter("same", floats({1, 2, nan, inf}));
  a.add_parameter("close", floats({1.0f, 100.0f}));
  b.add_parameter("close", floats({1.001f, 100.5f}));
  a.add_parameter("nan_vs_number", floats({nan}));
  b.add_parameter("nan_vs_number", floats({1}));
  a.add_parameter("only_a", floats({1}));
  b.add_parameter("only_b", floats({1}));
  StateDictSource sa(a), sb(b);

  DiffResult exact = diff(sa, sb);
  CHECK_FALSE(exact.equal());
  CHECK(exact.only_in_a == std::vector<std::string>{"only_a"});
  CHECK(exact.only_in_b == std::vector<std::string>{"only_b"});
  CHECK(find(exact, "same").same());
  const auto& close = find(exact, "close");
  CHECK(close.max_abs == Approx(0.5).epsilon(1e-6));
  CHECK(close.max_rel == Approx(0.5 / 100.5).epsilon(1e-3));
  CHECK(close.mismatched == 2);
  CHECK(find(exact, "nan_vs_number").mismatched == 1);

  DiffOptions loose;
  loose.atol = 0.01;
  loose.rtol = 0.01;  // 0.5 <= 0.01 + 0.01 * 100.5
  const DiffResult tolerant = diff(sa, sb, loose);
  CHECK(find(tolerant, "close").same());
  CHECK_FALSE(find(tolerant, "nan_vs_number").same());
}

TEST_CASE("diff: roles, dtypes and shapes are differences of their own", "[diff]") {
  StateDict a, b;
  a.add_parameter("w", floats({1, 2}));
  b.add_buffer("w", floats({1, 2}), true, "batch_stats");
  a.add_parameter("d", floats({1, 2}));
  b.add_parameter("d", Tensor::zeros(DType::float64, {2}));
  a.add_parameter("s", floats({1, 2}));
  b.add_parameter("s", Tensor::zeros(DType::float32, {1, 2}));
  StateDictSource sa(a), sb(b);
  const DiffResult r = diff(sa, sb);
  CHECK_FALSE(r.equal());
  CHECK(find(r, "w").role_b == "buffer (batch_stats)");
  CHECK_FALSE(find(r, "w").same());
  CHECK(find(r, "d").compared);  // same shape: values compared across dtypes
  CHECK(find(r, "d").max_abs == 2);
  CHECK_FALSE(find(r, "s").compared);
  // A file against itself converted: equal.
  test::TempDir dir;
  const StateDict sink = test::kitchen_sink(false);
  save(sink, dir / "k.ckpt.h5");
  convert(dir / "k.ckpt.h5", dir / "k.npz");
  auto x = open(dir / "k.ckpt.h5");
  auto y = open(dir / "k.npz");
  CHECK(diff(*x, *y).equal());
}

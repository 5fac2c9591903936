// The round-trip matrix: one state dict with every dtype, rank 0 and empty tensors, parameters,
// buffers in two collections (one non-persistent), an optimizer section and metadata goes through
// every ordered pair of formats. Each tensor must come back bit-identical with its role wherever
// the target can hold its dtype; where it cannot, the converter must refuse before creating the
// output rather than write something silently different.
#include <catch2/catch.hpp>

#include <map>

#include "helpers.h"

using namespace ckpt;

namespace {

using test::Format;
using test::kFormats;

// What each format cannot hold (documented in format-spec/conventions.md).
bool holds(const Format& f, DType dtype) {
  const std::string label = f.label;
  if (label == "pytorch")  // torch 1.13 has no typed storage for these
    return dtype != DType::float8_e4m3fn && dtype != DType::float8_e5m2 && dtype != DType::uint16 &&
           dtype != DType::uint32 && dtype != DType::uint64;
  if (label == "safetensors") return dtype != DType::complex128;
  return true;
}

StateDict matrix_state() {
  StateDict s;
  unsigned seed = 1;
  for (DType d : all_dtypes()) s.add_parameter(std::string("p.") + std::string(dtype_name(d)), test::pattern_tensor(d, {2, 3}, seed++));
  s.add_parameter("scalar", test::pattern_tensor(DType::float32, {}, seed++));
  s.add_parameter("empty", Tensor::zeros(DType::float32, {0, 3}));
  s.add_buffer("bn.mean", test::pattern_tensor(DType::float32, {3}, seed++), true, "batch_stats");
  s.add_buffer("bn.count", test::pattern_tensor(DType::int64, {}, seed++), true, "batch_stats");
  s.add_buffer("attn.index", test::pattern_tensor(DType::int32, {}, seed++), true, "cache");
  s.add_buffer("attn.scratch", test::pattern_tensor(DType::float16, {2}, seed++), false, "cache");
  s.add_extra("optimizer", "state.0.exp_avg", test::pattern_tensor(DType::float32, {2, 3}, seed++));
  s.metadata() = Metadata::parse(R"({"epoch": 3, "lr": 0.01, "config": {"depth": 18, "name": "m"}, "flags": [true, null]})");
  return s;
}

// Non-persistent buffers are not part of a state_dict: safetensors leaves them out
// (format-spec/conventions.md §1); .pt keeps them beside the state_dict.
bool keeps(const Format& f, const Entry& e) { return e.persistent || e.role != Role::buffer || std::string(f.label) != "safetensors"; }

StateDict restricted(const StateDict& s, const Format& f) {
  StateDict out;
  for (const auto& e : s.entries())
    if (holds(f, e.tensor.dtype()) && keeps(f, e)) out.add(static_cast<const EntryInfo&>(e), e.tensor);
  out.metadata() = s.metadata();
  return out;
}

std::string key(const Entry& e) { return e.section + "/" + e.name; }

// Same entries (in any order), roles, bytes; same metadata (in any key order).
void check_same(const StateDict& want, const StateDict& got) {
  std::map<std::string, const Entry*> by_key;
  for (const auto& e : got.entries()) by_key[key(e)] = &e;
  CHECK(got.size() == want.size());
  for (const auto& w : want.entries()) {
    INFO("tensor " << key(w));
    const auto it = by_key.find(key(w));
    REQUIRE(it != by_key.end());
    const Entry& g = *it->second;
    CHECK(role_name(g.role) == std::string(role_name(w.role)));
    CHECK(g.collection == w.collection);
    CHECK(g.persistent == w.persistent);
    CHECK(dtype_name(g.tensor.dtype()) == dtype_name(w.tensor.dtype()));
    CHECK(g.tensor.shape() == w.tensor.shape());
    CHECK(g.tensor.equals(w.tensor));
  }
  CHECK(nlohmann::json::parse(got.metadata().dump()) == nlohmann::json::parse(want.metadata().dump()));
}

WriteOptions options_for(const Format& f) {
  WriteOptions o;
  o.compression = f.compression;
  o.min_compress_bytes = 0;
  return o;
}

}  // namespace

TEST_CASE("every format refuses, before creating anything, the dtypes it cannot hold", "[matrix]") {
  test::TempDir dir;
  const StateDict state = matrix_state();
  for (const auto& f : kFormats) {
    INFO(f.label);
    const auto path = dir / (std::string("full") + f.extension);
    const bool all = std::all_of(state.entries().begin(), state.entries().end(),
                                 [&](const Entry& e) { return holds(f, e.tensor.dtype()); });
    if (all) {
      save(state, path, options_for(f));
      check_same(restricted(state, f), load(path));
    } else {
      try {
        save(state, path, options_for(f));
        FAIL("no error");
      } catch (const Error& e) {
        CHECK(e.code() == ErrorCode::unsupported);
        CHECK_THAT(e.what(), Catch::Matchers::Contains("cannot hold dtype"));
      }
      CHECK_FALSE(std::filesystem::exists(path));
    }
  }
}

TEST_CASE("round-trip matrix: every ordered pair of formats", "[matrix]") {
  test::TempDir dir;
  const StateDict state = matrix_state();
  std::size_t refused = 0, compared = 0;
  for (const auto& a : kFormats) {
    const StateDict source = restricted(state, a);
    const auto a_path = dir / (std::string("a") + a.extension);
    save(source, a_path, options_for(a));
    for (const auto& b : kFormats) {
      INFO(a.label << " -> " << b.label);
      const auto b_path = dir / (std::string("b") + b.extension);
      std::filesystem::remove(b_path);
      ConvertOptions options;
      options.write = options_for(b);
      const bool fits = std::all_of(source.entries().begin(), source.entries().end(),
                                    [&](const Entry& e) { return holds(b, e.tensor.dtype()); });
      if (!fits) {
        CHECK_THROWS_AS(convert(a_path, b_path, options), Error);
        CHECK_FALSE(std::filesystem::exists(b_path));
        ++refused;
        continue;
      }
      convert(a_path, b_path, options);
      check_same(restricted(source, b), load(b_path));
      ++compared;
    }
  }
  CHECK(compared + refused == 81);
  CHECK(refused > 0);
}

// The .pt reader on layouts Debian's torch 1.13 never writes, crafted by
// tests/peers/make_pt_fixtures.py: UntypedStorage with _rebuild_tensor_v3 (PyTorch >= 2),
// _rebuild_parameter_with_state, and legacy storage views (before PyTorch 1.0; real torch checks
// that fixture when it is made). Files real torch writes are covered by peers/test_torch_peer.py.
#include <catch2/catch.hpp>

#include <complex>
#include <cstring>

#include "helpers.h"

using namespace ckpt;

namespace {

template <typename T>
std::vector<T> values(const Tensor& t) {
  const auto span = t.as<T>();
  return {span.begin(), span.end()};
}

}  // namespace

TEST_CASE("UntypedStorage tensors (_rebuild_tensor_v3) share bytes across dtypes", "[pytorch]") {
  const StateDict state = load("good/pt_v3_untyped.pt");
  // One untyped storage holding bytes 0..15.
  const Tensor& u16 = state.at("u16");
  CHECK(u16.dtype() == DType::uint16);
  CHECK(u16.shape() == Shape{2, 4});
  CHECK(values<std::uint16_t>(u16) == std::vector<std::uint16_t>{0x0100, 0x0302, 0x0504, 0x0706, 0x0908, 0x0b0a,
                                                                   0x0d0c, 0x0f0e});
  // Float32 elements 2 and 3: bytes 8..15.
  const Tensor& tail = state.at("f32_tail");
  std::vector<float> expected(2);
  const unsigned char bytes[] = {8, 9, 10, 11, 12, 13, 14, 15};
  std::memcpy(expected.data(), bytes, 8);
  CHECK(values<float>(tail) == expected);
  // float8_e4m3fn with stride 2: bytes 0, 2, 4, 6.
  const Tensor& f8 = state.at("f8_strided");
  CHECK(f8.dtype() == DType::float8_e4m3fn);
  CHECK(values<std::uint8_t>(Tensor::copy_of(DType::uint8, f8.shape(), f8.bytes())) ==
        std::vector<std::uint8_t>{0, 2, 4, 6});
  CHECK(values<std::uint32_t>(state.at("u32")) == std::vector<std::uint32_t>{1, 0xffffffffu, 7});
  CHECK(state.at("u64").shape().empty());
  CHECK(values<std::uint64_t>(state.at("u64")) == std::vector<std::uint64_t>{0xfffffffffffffffeull});
  // _rebuild_parameter_with_state: the tensor, its state ignored.
  CHECK(values<float>(state.at("param")) == std::vector<float>{1.5f, -2.0f});
}

TEST_CASE("legacy storage views read the slice of their root storage", "[pytorch]") {
  const StateDict state = load("good/pt_legacy_views.pt");
  CHECK(values<float>(state.at("in_view")) == std::vector<float>{3, 4});
  CHECK(values<float>(state.at("other_view")) == std::vector<float>{5});
  CHECK(values<float>(state.at("whole")) == std::vector<float>{0, 3, 1, 4, 2, 5});  // stride (1, 3)
}

TEST_CASE("big-endian files are byte-swapped, zip and legacy", "[pytorch]") {
  for (const char* file : {"good/pt_big_endian.pt", "good/pt_big_endian.legacy.pt"}) {
    INFO(file);
    const StateDict state = load(file);
    CHECK(values<float>(state.at("f32")) == std::vector<float>{1.5f, -2.0f});
    CHECK(values<std::int16_t>(state.at("i16")) == std::vector<std::int16_t>{-300, 7});
    CHECK(values<std::complex<float>>(state.at("c64")) == std::vector<std::complex<float>>{{1.0f, 2.0f}});
    CHECK(values<float>(state.at("transposed")) == std::vector<float>{0, 3, 1, 4, 2, 5});
  }
}

// The Flax writer's chunked arrays (flax splits arrays over 2**30 bytes; a small chunk size
// here): written as flax writes them and read back whole. Python-made files are checked by
// peers/test_flax_peer.py.
#include <catch2/catch.hpp>

#include <fstream>

#include "flax/format.h"
#include "helpers.h"

using namespace ckpt;

TEST_CASE("Flax arrays over the chunk size are written chunked and read back whole", "[flax]") {
  test::TempDir dir;
  StateDict s;
  s.add_parameter("table", test::pattern_tensor(DType::float32, {10, 100}, 1));  // 4000 bytes
  s.add_parameter("small", test::pattern_tensor(DType::bfloat16, {3}, 2));
  s.add_buffer("bn.mean", test::pattern_tensor(DType::float64, {300}, 3), true, "batch_stats");  // 2400 bytes
  StateDictSource source(s);
  const auto path = dir / "chunked.msgpack";
  detail::flax::write(source, path, {}, 1000);
  const std::string bytes = test::read_file(path);
  CHECK(bytes.find("__msgpack_chunked_array__") != std::string::npos);
  const StateDict back = load(path);
  test::require_same(s, back);
}

// A Flax file nesting 200,000 deep, in its msgpack and in the JSON of its ckpt.roles string:
// refused, never a stack overflow.
TEST_CASE("Flax: deep msgpack nesting and deep JSON in ckpt.roles are refused", "[flax][hostile]") {
  test::TempDir dir;
  const auto path = dir / "deep.msgpack";
  // {"params": {}, "x": [[[...nil...]]]}
  std::string bytes = "\x82\xa6params\x80\xa1x" + std::string(200000, '\x91') + "\xc0";
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  CHECK_THROWS_WITH(open(path, ReadOptions{}), Catch::Matchers::EndsWith("values nested deeper than 128"));
  // {"params": {}, "ckpt.roles": "[[[...]]]"}
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  bytes = "\x82\xa6params\x80\xaa" "ckpt.roles\xdb";
  for (int shift = 24; shift >= 0; shift -= 8) bytes += static_cast<char>((deep.size() >> shift) & 0xff);
  bytes += deep;
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  CHECK_THROWS_WITH(open(path), path.string() + ": value at 'ckpt.roles' nests deeper than 128 levels");
}

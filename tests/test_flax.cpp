// The Flax writer's chunked arrays (flax splits arrays over 2**30 bytes; a small chunk size
// here): written as flax writes them and read back whole. Python-made files are checked by
// peers/test_flax_peer.py.
#include <catch2/catch.hpp>

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

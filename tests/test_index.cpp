// The ckpt-h5 index parser on its own: what it accepts, ignores and refuses.
#include <catch2/catch.hpp>

#include "ckpt_h5/index.h"

using namespace ckpt;
using ckpt::detail::ckpt_h5::parse_index;

namespace {
std::string error_of(const std::string& text) {
  try {
    parse_index(text, ReadOptions{}, "f.h5");
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}
}  // namespace

TEST_CASE("index: entries, defaults, unknown fields, nested metadata", "[index]") {
  const auto index = parse_index(R"({
    "future": {"a": [1, {"b": 2}]},
    "tensors": [
      {"name": "w", "section": "parameters", "dtype": "float32", "shape": [2, 3], "new": [[1], {}]},
      {"shape": [], "dtype": "int64", "section": "buffers", "name": "n"},
      {"name": "m", "section": "buffers", "collection": "cache", "persistent": false, "dtype": "bool",
       "shape": [0], "checksum": "xxh3-64:00000000000000ff"},
      {"name": "s", "section": "optimizer", "dtype": "float16", "shape": [1]}
    ],
    "metadata": {"z": 1, "a": [true, null, 1.5, {"k": "v"}], "n": {"deep": {"er": []}}}
  })", ReadOptions{}, "f.h5");
  REQUIRE(index.tensors.size() == 4);
  CHECK(index.tensors[0].shape == Shape{2, 3});
  CHECK(index.tensors[1].role == Role::buffer);
  CHECK(index.tensors[1].collection == "buffers");
  CHECK(index.tensors[1].persistent);
  CHECK(index.tensors[2].collection == "cache");
  CHECK_FALSE(index.tensors[2].persistent);
  CHECK(index.checksums[2] == 0xffu);
  CHECK_FALSE(index.checksums[0]);
  CHECK(index.tensors[3].role == Role::extra);
  CHECK(index.tensors[3].section == "optimizer");
  CHECK(index.metadata.dump() == R"({"z":1,"a":[true,null,1.5,{"k":"v"}],"n":{"deep":{"er":[]}}})");
}

TEST_CASE("index: malformed input is refused with the place", "[index]") {
  CHECK(error_of("[]") == "f.h5: /index is not a JSON object with a \"tensors\" array");
  CHECK(error_of("{}") == "f.h5: /index is not a JSON object with a \"tensors\" array");
  CHECK(error_of(R"({"tensors": {}})") == "f.h5: /index \"tensors\" must be an array");
  CHECK(error_of(R"({"tensors": [1]})") == "f.h5: /index tensors[0]: not an object");
  CHECK(error_of(R"({"tensors": [{"name": 1}]})") == "f.h5: /index tensors[0]: \"name\" must be a string");
  CHECK(error_of(R"({"tensors": [{"name": "a", "section": "parameters", "dtype": "float32"}]})") ==
        "f.h5: /index tensors[0]: \"shape\" must be an array");
  CHECK(error_of(R"({"tensors": [{"name": "a", "section": "parameters", "dtype": "float32", "shape": [-1]}]})") ==
        "f.h5: /index tensors[0]: \"shape\" must hold non-negative integers");
  CHECK(error_of(R"({"tensors": [{"name": "a", "section": "parameters", "dtype": "float32", "shape": [[1]]}]})") ==
        "f.h5: /index tensors[0]: \"shape\" must hold non-negative integers");
  CHECK(error_of(R"({"tensors": [{"name": "a", "section": "", "dtype": "float32", "shape": []}]})") ==
        "f.h5: /index tensors[0]: \"section\" is empty");
  CHECK(error_of(R"({"tensors": [{"dtype": "int3", "name": "a", "section": "buffers", "shape": []}]})") ==
        "f.h5: tensor 'a': unknown dtype 'int3'");
  CHECK(error_of(R"({"tensors": [{"name": "a", "section": "buffers", "dtype": "int8", "shape": [],
                                  "checksum": "xxh3-64:00"}]})") ==
        "f.h5: /index tensors[0]: checksum 'xxh3-64:00' is not \"ALGORITHM:DIGITS\" (xxh3-64: 16 hex digits)");
  CHECK(error_of(R"({"tensors": [{"name": "a", "section": "buffers", "dtype": "int8", "shape": [],
                                  "checksum": "00000000000000ff"}]})") ==
        "f.h5: /index tensors[0]: checksum '00000000000000ff' is not \"ALGORITHM:DIGITS\" (xxh3-64: 16 hex digits)");
  CHECK(error_of(R"({"tensors": [{"name": "a", "section": "buffers", "dtype": "int64",
                                  "shape": [4294967296, 4294967296]}]})") ==
        "f.h5: /index tensors[0]: shape [4294967296, 4294967296] overflows");
  CHECK(error_of(R"({"tensors": [], "metadata": [1]})") == "f.h5: /index \"metadata\" must be an object");
  CHECK(error_of(R"({"tensors": [], "tensors": []})") == "f.h5: /index member 'tensors' appears twice in one object");
  std::string deep = R"({"tensors": [{"name": "a", "section": "buffers", "dtype": "int8", "shape": [)";
  for (int i = 0; i < 65; ++i) deep += (i ? ",1" : "1");
  CHECK(error_of(deep + "]}]}") == "f.h5: /index tensors[0]: rank exceeds the limit of 64");
}

TEST_CASE("index: strict where a lenient reader would hand out a different value (spec §6)", "[index]") {
  const std::string entry = R"({"name": "a", "section": "parameters", "dtype": "float32", "shape": [2])";
  // A member named twice, at any depth: read as one or the other by different parsers.
  CHECK(error_of(R"({"tensors": [)" + entry + R"(, "dtype": "int32"}]})") ==
        "f.h5: /index tensors[0]: member 'dtype' appears twice in one object");
  CHECK(error_of(R"({"tensors": [], "metadata": {"lr": 1, "lr": 2}})") ==
        "f.h5: /index member 'lr' appears twice in one object");
  CHECK(error_of(R"({"tensors": [], "metadata": {"a": [{"x": 1, "x": 1}]}})") ==
        "f.h5: /index member 'x' appears twice in one object");
  // Integers beyond 64 bits would become floats.
  CHECK(error_of(R"({"tensors": [], "metadata": {"step": 18446744073709551616}})") ==
        "f.h5: /index integer 18446744073709551616 does not fit in 64 bits");
  CHECK(error_of(R"({"tensors": [], "metadata": {"n": -9223372036854775809}})") ==
        "f.h5: /index integer -9223372036854775809 does not fit in 64 bits");
  CHECK(parse_index(R"({"tensors": [], "metadata": {"max": 18446744073709551615, "min": -9223372036854775808}})",
                    ReadOptions{}, "f.h5")
            .metadata.dump() == R"({"max":18446744073709551615,"min":-9223372036854775808})");
  // ... but a newer minor version's own fields are its business.
  CHECK(parse_index(R"({"future": 18446744073709551616, "tensors": []})", ReadOptions{}, "f.h5").tensors.empty());
  // A byte order mark; NUL padding (ignored) and bytes after it (refused).
  CHECK(error_of("\xEF\xBB\xBF{\"tensors\": []}") == "f.h5: /index starts with a byte order mark, which JSON text must not");
  CHECK(parse_index(std::string("{\"tensors\": []}\0\0\0", 17), ReadOptions{}, "f.h5").tensors.empty());
  CHECK(error_of(std::string("{\"tensors\": []}\0{}", 17)) == "f.h5: /index has bytes after its NUL padding (at offset 16)");
  // Checksums: another algorithm is unverifiable here, not corrupt; hex digits of either case.
  const auto index = parse_index(R"({"tensors": [)" + entry + R"(, "checksum": "sha256:abcd"}, )" +
                                     R"({"name": "b", "section": "parameters", "dtype": "float32", "shape": [2],)" +
                                     R"( "checksum": "xxh3-64:00000000000000FF"}]})",
                                 ReadOptions{}, "f.h5");
  CHECK_FALSE(index.checksums[0].has_value());
  CHECK(index.checksums[1] == 0xffu);
}

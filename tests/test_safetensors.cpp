#include <catch2/catch.hpp>

#include <cstring>
#include <fstream>

#include <fmt/format.h>

#include "helpers.h"

using namespace ckpt;
using ckpt::test::TempDir;

TEST_CASE("safetensors round-trips roles, sections and metadata", "[safetensors]") {
  TempDir dir;
  const StateDict original = test::kitchen_sink(/*with_complex128=*/false);
  save(original, dir / "m.safetensors");
  auto reader = open(dir / "m.safetensors");
  CHECK(reader->format() == "safetensors");
  CHECK(reader->role_source() == RoleSource::metadata);
  test::require_same(test::without_non_persistent(original), reader->read_all());
}

TEST_CASE("safetensors reads are zero-copy where the data is aligned", "[safetensors]") {
  TempDir dir;
  StateDict s;
  s.add_parameter("w", test::pattern_tensor(DType::float32, {64, 3}, 1));
  s.add_parameter("b", test::pattern_tensor(DType::int8, {3}, 2));
  s.add_parameter("after_b", test::pattern_tensor(DType::float32, {5}, 3));  // offset 771: unaligned
  save(s, dir / "m.safetensors");
  ReadOptions shared;  // read-only views of one mapping, down to the smallest tensor
  shared.writable = false;
  auto reader = open(dir / "m.safetensors", shared);
  CHECK(reader->read("w").is_view());
  const Tensor copied = reader->read("after_b");
  CHECK_FALSE(copied.is_view());
  CHECK(copied.equals(s.at("after_b")));
}

TEST_CASE("safetensors refuses what it cannot hold before writing anything", "[safetensors]") {
  TempDir dir;
  StateDict s;
  s.add_parameter("z", Tensor::zeros(DType::complex128, {2}));
  CHECK_THROWS_WITH(save(s, dir / "m.safetensors"),
                    (dir / "m.safetensors").string() + ": safetensors cannot hold dtype complex128 (tensor 'z')");
  CHECK_FALSE(std::filesystem::exists(dir / "m.safetensors"));

  StateDict clash;
  clash.add_parameter("optimizer/x", Tensor::zeros(DType::float32, {1}));
  clash.add_extra("optimizer", "x", Tensor::zeros(DType::float32, {1}));
  CHECK_THROWS_WITH(save(clash, dir / "c.safetensors"),
                    (dir / "c.safetensors").string() + ": two tensors would both be stored as 'optimizer/x' in safetensors");
}

TEST_CASE("safetensors without ckpt roles gets inferred roles", "[safetensors][roles]") {
  auto reader = open("good/plain.safetensors");
  CHECK(reader->role_source() == RoleSource::heuristic);
  CHECK(reader->tensors()[0].name == "w");
  CHECK(reader->tensors()[0].role == Role::parameter);
  CHECK(reader->tensors()[1].role == Role::buffer);  // int64
  CHECK(reader->metadata()["format"] == "pt");

  ReadOptions options;
  options.buffer_regex = "w";
  CHECK(open("good/plain.safetensors", options)->tensors()[0].role == Role::buffer);
}

TEST_CASE("safetensors keeps plain string metadata visible to other tools", "[safetensors]") {
  TempDir dir;
  StateDict s;
  s.add_parameter("w", Tensor::zeros(DType::float32, {2}));
  s.metadata()["format"] = "pt";
  s.metadata()["epoch"] = 4;
  save(s, dir / "m.safetensors");
  const std::string bytes = test::read_file(dir / "m.safetensors");
  CHECK(bytes.find(R"("format":"pt")") != std::string::npos);
  CHECK(bytes.size() % 8 == 0);  // header padded to 8 bytes, 8 bytes of data
  const StateDict back = load(dir / "m.safetensors");
  CHECK(back.metadata()["epoch"] == 4);
}

TEST_CASE("safetensors headers: ambiguous or hostile JSON is refused, in time linear in its size", "[safetensors][hostile]") {
  TempDir dir;
  auto file_with_header = [&](const std::string& header) {
    std::string bytes(8, '\0');
    const std::uint64_t n = header.size();
    std::memcpy(bytes.data(), &n, 8);
    bytes += header;
    const auto path = dir / "h.safetensors";
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
    return path;
  };
  auto error_of = [&](const std::string& header) {
    try {
      (void)open(file_with_header(header));
    } catch (const Error& e) {
      return e.message();
    }
    return std::string("no error");
  };
  // A member named twice inside an entry would be read as either value.
  CHECK(error_of(R"({"w":{"dtype":"F32","dtype":"I32","shape":[0],"data_offsets":[0,0]}})") ==
        "header (offset 8, 68 bytes) member 'dtype' appears twice in one object");
  // 200,000 nested brackets: refused at depth 128, no stack overflow.
  CHECK(error_of(R"({"__metadata__":{"x":)" + std::string(200000, '[')) ==
        fmt::format("header (offset 8, {} bytes) nests deeper than 128 levels", 200021));
  // An integer beyond 64 bits would become a float.
  CHECK(error_of(R"({"w":{"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,0]}})") ==
        "header (offset 8, 73 bytes) integer 18446744073709551616 does not fit in 64 bits");
  // ckpt's JSON inside __metadata__ strings likewise.
  const std::string deep = std::string(1000, '[') + std::string(1000, ']');
  CHECK(error_of(R"({"__metadata__":{"ckpt.roles":")" + deep + R"("}})") ==
        "__metadata__ 'ckpt.roles' nests deeper than 128 levels");
  // 40,000 tensors list (this took 25 s with nlohmann's callback parser: it rescans an object
  // after each member). Timed nowhere: it would only fail by never finishing.
  std::string header = "{";
  std::uint64_t offset = 0;
  for (int i = 0; i < 40000; ++i) {
    header += fmt::format(R"({}"t{}":{{"dtype":"U8","shape":[1],"data_offsets":[{},{}]}})", i ? "," : "", i, offset, offset + 1);
    ++offset;
  }
  header += "}";
  const auto path = file_with_header(header);
  std::ofstream(path, std::ios::binary | std::ios::app) << std::string(offset, 'x');
  CHECK(open(path)->tensors().size() == 40000);
}

TEST_CASE("safetensors files ckpt writes carry per-tensor checksums that reads verify", "[safetensors][checksum]") {
  TempDir dir;
  StateDict s;
  s.add_parameter("w", test::pattern_tensor(DType::float32, {64, 3}, 1));
  s.add_buffer("b", test::pattern_tensor(DType::int64, {3}, 2));
  const auto path = dir / "m.safetensors";
  save(s, path);
  CHECK(open(path)->tensors().size() == 2);
  std::string bytes = test::read_file(path);
  // The checksums are in __metadata__ as huggingface's readers ignore them: not in the metadata.
  CHECK(bytes.find("ckpt.checksums") != std::string::npos);
  CHECK_FALSE(open(path)->metadata().contains("ckpt.checksums"));
  CHECK(load(path).at("w").equals(s.at("w")));

  // One flipped bit in the data: an integrity error naming the tensor, unless verification is off.
  bytes[bytes.size() - 30] ^= 0x01;  // inside "w" (the last tensor bytes are "b": 24 bytes)
  { std::ofstream(path, std::ios::binary) << bytes; }
  try {
    (void)load(path);
    FAIL("a flipped bit loaded");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::integrity);
    CHECK_THAT(e.what(), Catch::Matchers::Contains("'w'"));
  }
  ReadOptions unchecked;
  unchecked.verify_checksums = false;
  CHECK_FALSE(load(path, unchecked).at("w").equals(s.at("w")));

  // Without checksums nothing is recorded.
  WriteOptions none;
  none.checksums = false;
  save(s, dir / "n.safetensors", none);
  CHECK(test::read_file(dir / "n.safetensors").find("ckpt.checksums") == std::string::npos);
}

// The JSON ckpt keeps in __metadata__ strings, nested 200,000 deep in real files: refused.
TEST_CASE("safetensors: deeply nested JSON in ckpt.roles or ckpt.metadata is refused", "[safetensors][hostile]") {
  test::TempDir dir;
  const std::string deep = std::string(200000, '[') + std::string(200000, ']');
  for (const char* key : {"ckpt.roles", "ckpt.metadata"}) {
    const std::string header = fmt::format(R"({{"w": {{"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, )"
                                           R"("__metadata__": {{"{}": "{}"}}}})", key, deep);
    std::string bytes(8, '\0');
    const std::uint64_t n = header.size();
    std::memcpy(bytes.data(), &n, 8);
    bytes += header + std::string(4, '\0');
    const auto path = dir / "deep.safetensors";
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
    CHECK_THROWS_WITH(open(path), path.string() + ": __metadata__ '" + key + "' nests deeper than 128 levels");
  }
}

namespace {

// What opening a safetensors file with this header (and `data` bytes of data) says ("header: "
// for the header's "header (offset 8, N bytes) ").
std::string open_error(const test::TempDir& dir, const std::string& header, std::size_t data = 4) {
  std::string bytes(8, '\0');
  const std::uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  bytes += header + std::string(data, '\0');
  const auto path = dir / "h.safetensors";
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  try {
    (void)open(path);
  } catch (const Error& e) {
    std::string message = std::string(e.what()).substr(path.string().size() + 2);
    if (message.starts_with("header (offset 8, ")) message = "header: " + message.substr(message.find(") ") + 2);
    return message;
  }
  return "no error";
}

}  // namespace

// The header is read in one pass into tensor entries (safetensors/header.h); it refuses what the
// strict JSON parser refuses, wherever it is, and checks entries as before.
TEST_CASE("safetensors: the one-pass header parser refuses duplicates, depth and bad entries", "[safetensors][hostile]") {
  test::TempDir dir;
  const std::string w = R"("w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]})";
  CHECK(open_error(dir, "{" + w + "}") == "no error");
  CHECK(open_error(dir, "{" + w + ", " + w + "}") == "header: member 'w' appears twice in one object");
  CHECK(open_error(dir, R"({"w": {"dtype": "F32", "dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})") ==
        "header: member 'dtype' appears twice in one object");
  CHECK(open_error(dir, "{" + w + R"(, "__metadata__": {"a": "1", "a": "2"}})") ==
        "header: member 'a' appears twice in one object");
  CHECK(open_error(dir, "{" + w + R"(, "__metadata__": {}, "__metadata__": {}})") ==
        "header: member '__metadata__' appears twice in one object");
  CHECK(open_error(dir, R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": {"k": 1, "k": 2}}})") ==
        "header: member 'k' appears twice in one object");
  const std::string deep = std::string(200, '[') + std::string(200, ']');
  CHECK(open_error(dir, R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "x": )" + deep + "}}") ==
        "header: nests deeper than 128 levels");
  CHECK(open_error(dir, R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 18446744073709551616]}})") ==
        "header: integer 18446744073709551616 does not fit in 64 bits");
  CHECK(open_error(dir, R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]})") ==
        "header: is not valid JSON: [json.exception.parse_error.101] parse error at line 1, "
        "column 61: syntax error while parsing object - unexpected end of input; expected '}'");
  CHECK(open_error(dir, "{" + w + R"(, "__metadata__": {"a": 1}})") == "__metadata__ value of 'a' is not a string");
  CHECK(open_error(dir, "{" + w + R"(, "__metadata__": [1]})") == "__metadata__ is not an object");
  CHECK(open_error(dir, R"({"w": [1]})") == "tensor 'w': entry is not an object");
  CHECK(open_error(dir, R"({"w": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}})") ==
        "tensor 'w': \"dtype\" must be a string");
  CHECK(open_error(dir, R"({"w": {"dtype": "F32", "shape": {"0": 1}, "data_offsets": [0, 4]}})") ==
        "tensor 'w': \"shape\" must be an array");
  CHECK(open_error(dir, R"({"w": {"dtype": "F32", "shape": [[1]], "data_offsets": [0, 4]}})") ==
        "tensor 'w': \"shape\" must hold non-negative integers");
  CHECK(open_error(dir, R"({"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})") ==
        "tensor 'w': \"shape\" must hold non-negative integers");
  CHECK(open_error(dir, R"({"w": {"dtype": "F32", "shape": [1.0], "data_offsets": [0, 4]}})") ==
        "tensor 'w': \"shape\" must hold non-negative integers");
  CHECK(open_error(dir, R"({"w": {"dtype": "F32", "shape": [9223372036854775808], "data_offsets": [0, 4]}})") ==
        "tensor 'w': dimension too large");
  CHECK(open_error(dir, R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4, 8]}})") ==
        "tensor 'w': \"data_offsets\" must be two non-negative integers");
  CHECK(open_error(dir, R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, [4]]}})") ==
        "tensor 'w': \"data_offsets\" must be two non-negative integers");
  CHECK(open_error(dir, R"({"w": {"dtype": "F32", "shape": [1]}})") ==
        "tensor 'w': \"data_offsets\" must be two non-negative integers");
  CHECK(open_error(dir, R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}})") ==
        "tensor 'w': data_offsets [4, 0] end before they begin");
  // Unknown fields, however nested, are skipped; __metadata__ strings are kept.
  CHECK(open_error(dir, R"({"w": {"x": {"y": [1, {"z": null}]}, "dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})") ==
        "no error");
}

TEST_CASE("safetensors: a header of 40,000 tensors is listed in file order of data", "[safetensors]") {
  test::TempDir dir;
  std::string header = "{";
  constexpr int kCount = 40000;
  for (int i = kCount; i-- > 0;)  // names in reverse: the listing follows the data offsets
    header += fmt::format(R"({}"layer.{}.weight": {{"dtype": "U8", "shape": [1], "data_offsets": [{}, {}]}})",
                          i == kCount - 1 ? "" : ", ", i, i, i + 1);
  header += R"(, "__metadata__": {"format": "pt"}})";
  REQUIRE(open_error(dir, header, kCount) == "no error");
  auto reader = open(dir / "h.safetensors");
  REQUIRE(reader->tensors().size() == kCount);
  CHECK(reader->tensors()[0].name == "layer.0.weight");
  CHECK(reader->tensors()[kCount - 1].name == "layer.39999.weight");
  CHECK(reader->metadata() == Metadata{{"format", "pt"}});
}

TEST_CASE("safetensors ckpt.checksums must list every tensor", "[safetensors][checksum]") {
  TempDir dir;
  // Two tensors, one checksum: the other would go unverified.
  const std::string header = R"({"__metadata__": {"ckpt.checksums": "xxh3-64:0123456789abcdef"}, )"
                             R"("w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, )"
                             R"("b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})";
  std::string bytes(8, '\0');
  const std::uint64_t n = header.size();
  std::memcpy(bytes.data(), &n, 8);
  bytes += header + std::string(8, '\0');
  const auto path = dir / "partial.safetensors";
  std::ofstream(path, std::ios::binary) << bytes;
  CHECK_THROWS_WITH(open(path), path.string() +
                                    ": __metadata__ 'ckpt.checksums' is not \"xxh3-64:\" and 16 hex digits for each of "
                                    "the 2 tensors");
}

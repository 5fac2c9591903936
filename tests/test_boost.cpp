#include <catch2/catch.hpp>

#include <boost/archive/binary_iarchive.hpp>
#include <boost/archive/binary_oarchive.hpp>
#include <boost/archive/text_iarchive.hpp>
#include <boost/archive/text_oarchive.hpp>
#include <boost/archive/xml_iarchive.hpp>
#include <boost/archive/xml_oarchive.hpp>
#include <cstring>
#include <fstream>
#include <sstream>

#include "boost_archive/base64.h"
#include "ckpt/boost_archive.h"
#include "ckpt/boost_serialization.h"
#include "helpers.h"
#include "util/checksum.h"

using namespace ckpt;

namespace {

// A user's own training state with the model inside it.
struct TrainingState {
  int epoch = 0;
  StateDict model;
  template <class Archive>
  void serialize(Archive& ar, unsigned) {
    ar& boost::serialization::make_nvp("epoch", epoch);
    ar& boost::serialization::make_nvp("model", model);
  }
};

template <class Out, class In>
TrainingState round_trip(const TrainingState& state) {
  std::stringstream stream;
  {
    Out out(stream);
    out << boost::serialization::make_nvp("state", state);
  }
  TrainingState back;
  In in(stream);
  in >> boost::serialization::make_nvp("state", back);
  return back;
}

// The bytes of a Boost binary archive file holding one float32 parameter of `n` zeros.
std::string one_parameter_binary_archive(const test::TempDir& dir, const std::string& name, std::int64_t n) {
  StateDict state;
  state.add_parameter(name, Tensor::zeros(DType::float32, {n}));
  const auto path = dir / "one.boost.bin";
  save(state, path);
  return test::read_file(path);
}

}  // namespace

TEMPLATE_TEST_CASE("StateDict inside a user's Boost archive", "[boost]",
                   (std::pair<boost::archive::text_oarchive, boost::archive::text_iarchive>),
                   (std::pair<boost::archive::xml_oarchive, boost::archive::xml_iarchive>),
                   (std::pair<boost::archive::binary_oarchive, boost::archive::binary_iarchive>)) {
  TrainingState state;
  state.epoch = 7;
  state.model = test::kitchen_sink();
  const TrainingState back = round_trip<typename TestType::first_type, typename TestType::second_type>(state);
  CHECK(back.epoch == 7);
  test::require_same(state.model, back.model);
}

TEST_CASE("Boost archives from a newer Tensor version are refused", "[boost]") {
  std::stringstream stream;
  {
    boost::archive::text_oarchive out(stream);
    out << Tensor::zeros(DType::float32, {1});
  }
  std::string text = stream.str();
  // The class version follows the archive header and the tracking/version fields: " 0 0 1 ".
  const auto at = text.find(" 0 2 ", 20);
  REQUIRE(at != std::string::npos);
  text.replace(at, 5, " 0 9 ");
  std::stringstream changed(text);
  boost::archive::text_iarchive in(changed);
  Tensor t;
  CHECK_THROWS_WITH(in >> t, "Boost archive: Tensor version 9 is newer than this reader (2)");
}

TEST_CASE("Boost loads allocate only within the limit set (BoostLoadLimit, which file readers set)", "[boost]") {
  std::stringstream stream;
  {
    boost::archive::binary_oarchive out(stream);
    out << Tensor::zeros(DType::float32, {1000});
  }
  const std::string bytes = stream.str();
  auto load_with_budget = [&](std::uint64_t budget) {
    std::stringstream in_stream(bytes);
    boost::archive::binary_iarchive in(in_stream);
    const BoostLoadLimit limit(budget);
    Tensor t;
    in >> t;
    return t;
  };
  CHECK(load_with_budget(bytes.size()).nbytes() == 4000);
  CHECK_THROWS_WITH(load_with_budget(100), "Boost archive: tensor data claims 4000 bytes, more than the archive holds");
  {  // Limits nest and end with their scope.
    const BoostLoadLimit outer(100);
    CHECK(load_with_budget(bytes.size()).nbytes() == 4000);
    std::stringstream in_stream(bytes);
    boost::archive::binary_iarchive in(in_stream);
    Tensor t;
    CHECK_THROWS_AS(in >> t, Error);
  }
  std::stringstream in_stream(bytes);
  boost::archive::binary_iarchive in(in_stream);
  Tensor unlimited;
  in >> unlimited;
  CHECK(unlimited.nbytes() == 4000);
}

TEST_CASE("Boost archive files: save, detect by content, load, for text, xml and binary", "[boost]") {
  test::TempDir dir;
  const StateDict state = test::kitchen_sink();
  for (const char* ext : {".boost.txt", ".boost.xml", ".boost.bin"}) {
    INFO(ext);
    const auto path = dir / (std::string("s") + ext);
    save(state, path);
    const auto plain = dir / "renamed.data";  // detection by content, not by name
    std::filesystem::copy_file(path, plain, std::filesystem::copy_options::overwrite_existing);
    auto reader = open(plain);
    CHECK(reader->format() == std::string("boost-") + (ext[7] == 't' ? "text" : ext[7] == 'x' ? "xml" : "binary"));
    test::require_same(state, reader->read_all());
  }
}

TEST_CASE("Boost archive files that lie or end early are refused without allocating their claims", "[boost][hostile]") {
  test::TempDir dir;
  std::string bytes = one_parameter_binary_archive(dir, "w", 1000);
  // Truncated.
  std::ofstream(dir / "short.boost.bin", std::ios::binary) << bytes.substr(0, bytes.size() / 2);
  CHECK_THROWS_WITH(open(dir / "short.boost.bin"), Catch::Matchers::StartsWith((dir / "short.boost.bin").string() +
                                                                                 ": Boost archive: "));
  // The signature's own length claims 2**56 more bytes: Boost would allocate that before reading.
  std::string signature = bytes;
  signature[7] = '\x01';
  std::ofstream(dir / "signature.boost.bin", std::ios::binary) << signature;
  CHECK_THROWS_WITH(open_boost(dir / "signature.boost.bin"), (dir / "signature.boost.bin").string() + ": not a Boost archive");
  // The name's size (8 bytes, right before "w") claims 2**40 bytes.
  const auto at = bytes.find(std::string("\x01\0\0\0\0\0\0\0w", 9));
  REQUIRE(at != std::string::npos);
  bytes.replace(at, 8, std::string("\0\0\0\0\0\x01\0\0", 8));
  std::ofstream(dir / "claims.boost.bin", std::ios::binary) << bytes;
  CHECK_THROWS_WITH(open(dir / "claims.boost.bin"),
                    (dir / "claims.boost.bin").string() + ": Boost archive: name claims 1099511627776 bytes, more than the archive holds");
}

TEST_CASE("Boost archive files are listed in one pass and read tensor by tensor", "[boost]") {
  test::TempDir dir;
  // Sizes around base64's 3-byte groups, Boost's 76-character lines (57 bytes) and the reader's
  // 1 MiB blocks of text.
  StateDict state;
  for (const std::int64_t n : {0, 1, 2, 3, 4, 5, 56, 57, 58, 59, 113, 114, 115, 1000, 786433, 1000003}) {
    Tensor t = Tensor::zeros(DType::uint8, {n});
    auto bytes = t.mutable_bytes();
    for (std::int64_t i = 0; i < n; ++i) bytes[i] = static_cast<std::byte>(i * 7 + n);
    state.add_buffer("t" + std::to_string(n), std::move(t));
  }
  state.metadata()["after"] = "the last tensor";
  for (const char* ext : {".boost.txt", ".boost.xml", ".boost.bin"}) {
    INFO(ext);
    const auto path = dir / (std::string("s") + ext);
    save(state, path);
    auto reader = open(path);
    test::require_same(state, reader->read_all());
    // Out of order and again.
    CHECK(reader->read("t58").equals(state.at("t58")));
    CHECK(reader->read("t1").equals(state.at("t1")));
    CHECK(reader->read("t58").equals(state.at("t58")));
    // Binary archives: zero-copy (writable views for tensors of 256 KiB or more, read-only ones
    // of any size when asked for).
    CHECK(reader->read("t786433").is_view() == (ext[7] == 'b'));
    ReadOptions shared;
    shared.writable = false;
    CHECK(open(path, shared)->read("t1000").is_view() == (ext[7] == 'b'));
  }
}

// The file writers save tensors through their own stand-ins (text and xml data through a fast
// base64 encoder): what they write must be what Boost's own archives write for the same StateDict.
TEMPLATE_TEST_CASE("Boost archive files are byte for byte what Boost's own archives write", "[boost]",
                   boost::archive::text_oarchive, boost::archive::xml_oarchive, boost::archive::binary_oarchive) {
  StateDict state = test::kitchen_sink();
  // Sizes around base64's groups, Boost's 76-digit lines (57 bytes) and the encoder's blocks of
  // 16384 lines; bytes that give every digit.
  std::uint64_t x = 12345;
  for (const std::int64_t n : {1, 2, 3, 4, 55, 56, 57, 58, 59, 113, 114, 115, 116, 171, 933887, 933888, 933889, 2000001}) {
    Tensor t = Tensor::zeros(DType::uint8, {n});
    for (auto& b : t.mutable_bytes()) {
      x = x * 6364136223846793005ull + 1442695040888963407ull;
      b = static_cast<std::byte>(x >> 56);
    }
    state.add_buffer("u" + std::to_string(n), std::move(t));
  }
  // The file writers keep each tensor's checksum in the metadata, which comes last.
  StateDict with_checksums = state;
  Metadata sums = Metadata::array();
  for (const auto& e : state.entries()) sums.push_back(detail::format_checksum(detail::xxh3_64(e.tensor.bytes())));
  if (!with_checksums.metadata().is_object()) with_checksums.metadata() = Metadata::object();
  with_checksums.metadata()["ckpt.checksums"] = sums;
  std::ostringstream expected;
  {
    TestType out(expected);
    out << boost::serialization::make_nvp("state_dict", with_checksums);
  }
  test::TempDir dir;
  const auto path = dir / "s.boost";
  StateDictSource source(state);
  if constexpr (std::is_same_v<TestType, boost::archive::text_oarchive>) write_boost_text(source, path);
  else if constexpr (std::is_same_v<TestType, boost::archive::xml_oarchive>) write_boost_xml(source, path);
  else write_boost_binary(source, path);
  const std::string written = test::read_file(path);

  REQUIRE(written.size() == expected.str().size());
  CHECK(written == expected.str());
}

TEST_CASE("Boost text and xml archives: bad base64 is found when that tensor is read, a cut at open", "[boost][hostile]") {
  test::TempDir dir;
  StateDict state;
  const auto filled = [](std::uint8_t value) {
    const std::vector<std::uint8_t> bytes(300, value);
    return Tensor::copy_of(DType::uint8, {300}, std::as_bytes(std::span(bytes)));
  };
  state.add_parameter("a", filled(0x11));  // base64 "ERER..."
  state.add_parameter("b", filled(0x22));  // base64 "IiIi..."
  for (const char* ext : {".boost.txt", ".boost.xml"}) {
    INFO(ext);
    const auto path = dir / (std::string("s") + ext);
    save(state, path);
    std::string bytes = test::read_file(path);
    const auto at = bytes.find("IiIiIiIi");
    REQUIRE(at != std::string::npos);
    std::string bad = bytes;
    bad[at + 4] = '!';
    const auto bad_path = dir / (std::string("bad") + ext);
    std::ofstream(bad_path, std::ios::binary) << bad;
    auto reader = open(bad_path);  // listing does not decode
    CHECK(reader->read("a").equals(state.at("a")));
    CHECK_THROWS_WITH(reader->read("b"), bad_path.string() + ": tensor 'b': Boost archive: a character that is not "
                                                             "base64 at offset " + std::to_string(at + 4));
    // A string's base64 (the name "b" is "Yg==") goes through Boost's decoder at open.
    const auto name_at = bytes.find("Yg==");
    REQUIRE(name_at != std::string::npos);
    bad = bytes;
    bad[name_at + 1] = '*';
    std::ofstream(bad_path, std::ios::binary) << bad;
    CHECK_THROWS_WITH(open(bad_path), bad_path.string() + ": Boost archive: attempt to decode a value not in base64 char set");
    if (std::string_view(ext) == ".boost.xml") {  // the closing tag, which Boost parses in a destructor
      bad = bytes;
      const auto end_at = bad.rfind("</boost_serialization>");
      REQUIRE(end_at != std::string::npos);
      bad.replace(end_at + 2, 5, "boots");
      std::ofstream(bad_path, std::ios::binary) << bad;
      CHECK_THROWS_WITH(open(bad_path), bad_path.string() + ": Boost archive: expected </boost_serialization> at offset " +
                                            std::to_string(bad.rfind("</state_dict>") + 13));
    }
    const auto cut_path = dir / (std::string("cut") + ext);
    std::ofstream(cut_path, std::ios::binary) << bytes.substr(0, at + 100);
    CHECK_THROWS_WITH(open(cut_path), Catch::Matchers::StartsWith(cut_path.string() +
                                                                 ": Boost archive: the file ends inside the base64 data of 300 bytes"));
  }
}

TEST_CASE("Boost base64: whitespace is counted as the C locale's isspace has it", "[boost]") {
  std::string all;
  for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
  std::size_t expected = 0;
  for (const char c : all) expected += std::isspace(static_cast<unsigned char>(c)) ? 1 : 0;
  CHECK(expected == 6);
  // At every alignment and length, so the vectorized loop's head and tail are both covered.
  const std::string text = all + all + all;
  for (std::size_t first = 0; first < 70; ++first)
    for (std::size_t length : {0, 1, 31, 32, 33, 256, 500}) {
      std::size_t want = 0;
      for (std::size_t i = first; i < first + length; ++i) want += std::isspace(static_cast<unsigned char>(text[i])) ? 1 : 0;
      CHECK(detail::boost_file::count_base64_spaces(std::span(text.data() + first, length)) == want);
    }
}

TEST_CASE("Boost binary archives: a flag byte other than 0 or 1 is refused, not loaded into a bool", "[boost][hostile]") {
  test::TempDir dir;
  std::string bytes = one_parameter_binary_archive(dir, "zzzz", 2);
  const auto at = bytes.find("zzzz");
  REQUIRE(at != std::string::npos);
  // Then role ("parameter"), section and collection (empty), each a 64-bit size and its bytes.
  const std::size_t flag = at + 4 + (8 + 9) + 8 + 8;
  REQUIRE(bytes[flag] == 1);
  bytes[flag] = 3;
  const auto bad = dir / "bad.boost.bin";
  std::ofstream(bad, std::ios::binary) << bytes;
  CHECK_THROWS_WITH(open(bad), bad.string() + ": Boost archive: persistent flag is 3, expected 0 or 1");
  // In a user's own archive too.
  std::istringstream in(bytes);
  boost::archive::binary_iarchive archive(in);
  StateDict loaded;
  CHECK_THROWS_WITH(archive >> boost::serialization::make_nvp("state_dict", loaded),
                    "Boost archive: persistent flag is 3, expected 0 or 1");
}

TEST_CASE("Boost binary archives: a corrupt shape is a format error, not bad usage", "[boost][hostile]") {
  test::TempDir dir;
  StateDict state;
  state.add_parameter("w", Tensor::zeros(DType::float32, {64, 32}));
  const auto path = dir / "s.boost.bin";
  save(state, path);
  const std::string bytes = test::read_file(path);
  std::string dims(16, '\0');
  const std::int64_t expected[2] = {64, 32};
  std::memcpy(dims.data(), expected, 16);
  const auto at = bytes.find(dims);
  REQUIRE(at != std::string::npos);
  const auto bad_path = dir / "bad.boost.bin";
  for (const auto& [top, message] :
       {std::pair<unsigned char, std::string>{0x80, "tensor shape [-9223372036854775744, 32] has a negative dimension"},
        {0x08, "tensor shape [576460752303423552, 32] overflows 64 bits"}}) {
    std::string bad = bytes;
    bad[at + 7] = static_cast<char>(top);
    std::ofstream(bad_path, std::ios::binary) << bad;
    try {
      (void)open(bad_path);
      FAIL("no error");
    } catch (const Error& e) {
      CHECK(std::string(e.what()) == bad_path.string() + ": Boost archive: " + message);
      CHECK(e.code() == ErrorCode::format);
    }
  }
}

// Metadata nested 200,000 deep in a real archive: refused before nlohmann builds it (its dump
// and destruction recurse: this crashed checkpoint-inspect with SIGSEGV).
TEST_CASE("Boost archives: deeply nested metadata is refused, not a crash", "[boost][hostile]") {
  test::TempDir dir;
  StateDict state;
  state.add_parameter("w", Tensor::zeros(DType::float32, {2}));
  const std::string filler(400000, 'x');
  state.metadata()["m"] = filler;
  for (const char* ext : {".boost.bin"}) {  // (text and xml archives hold strings in base64)
    const auto path = dir / (std::string("deep") + ext);
    save(state, path);
    std::string bytes = test::read_file(path);
    const auto at = bytes.find('"' + filler + '"');
    REQUIRE(at != std::string::npos);
    const std::size_t half = (filler.size() + 2) / 2;
    bytes.replace(at, filler.size() + 2, std::string(half, '[') + std::string(half, ']'));
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
    CHECK_THROWS_WITH(open(path), path.string() + ": Boost archive: metadata nests deeper than 128 levels");
  }
  CHECK(detail::json_nesting(R"({"a": "[[[{{", "b": [[1], {"c": "\"]]"}]})") == 3);
}

TEST_CASE("Boost archive files ckpt writes carry per-tensor checksums that reads verify", "[boost][checksum]") {
  test::TempDir dir;
  StateDict s;
  s.add_parameter("w", test::pattern_tensor(DType::float32, {256}, 1));
  s.metadata() = {{"epoch", 3}};
  const auto path = dir / "m.boost.bin";
  save(s, path);
  auto reader = open(path);
  CHECK(reader->metadata() == Metadata{{"epoch", 3}});  // the checksums are taken out
  CHECK(reader->read("w").equals(s.at("w")));
  std::string bytes = test::read_file(path);
  const auto at = bytes.find(std::string(reinterpret_cast<const char*>(s.at("w").bytes().data()), 64));
  REQUIRE(at != std::string::npos);
  bytes[at + 10] ^= 0x04;
  { std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes; }
  try {
    (void)load(path);
    FAIL("a flipped bit loaded");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::integrity);
  }
  WriteOptions none;
  none.checksums = false;
  save(s, dir / "n.boost.bin", none);
  CHECK(test::read_file(dir / "n.boost.bin").find("ckpt.checksums") == std::string::npos);
}

// The zip reader against archives Python's zipfile wrote (tests/peers/make_zips.py).
#include <catch2/catch.hpp>

#include "helpers.h"
#include "util/atomic_file.h"
#include "util/checksum.h"
#include "zip/zip.h"

using namespace ckpt;
namespace zp = ckpt::detail::zip;

namespace {
std::string error_of(const std::string& file) {
  const std::string bytes = test::read_file(file);
  try {
    zp::Archive archive(std::as_bytes(std::span(bytes)), file);
    for (const auto& e : archive.entries()) (void)archive.read(e);
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}
std::string payload() {
  std::string p;
  for (int k = 0; k < 40; ++k)
    for (int i = 0; i < 256; ++i) p += static_cast<char>(i);
  return p;
}
}  // namespace

TEST_CASE("zip: stored, deflated, empty and zip64 entries", "[zip]") {
  const std::string bytes = test::read_file("zip/mixed.zip");
  zp::Archive archive(std::as_bytes(std::span(bytes)), "mixed.zip");
  REQUIRE(archive.entries().size() == 3);
  const zp::Entry* pkl = archive.find("archive/data.pkl");
  REQUIRE(pkl != nullptr);
  CHECK(pkl->method == 0);
  const auto stored = archive.stored(*pkl);
  CHECK(std::string(reinterpret_cast<const char*>(stored.data()), stored.size()) == "stored bytes");
  const zp::Entry* data = archive.find("archive/data/0");
  REQUIRE(data != nullptr);
  CHECK(data->method == 8);
  const auto inflated = archive.read(*data);
  CHECK(std::string(reinterpret_cast<const char*>(inflated.data()), inflated.size()) == payload());
  CHECK(archive.read(*archive.find("archive/empty")).empty());
  CHECK(archive.find("nope") == nullptr);

  const std::string big = test::read_file("zip/zip64.zip");
  zp::Archive archive64(std::as_bytes(std::span(big)), "zip64.zip");
  const auto out = archive64.read(*archive64.find("big/entry"));
  CHECK(std::string(reinterpret_cast<const char*>(out.data()), out.size()) == payload());
}

TEST_CASE("zip: corrupt archives are refused with the place", "[zip][hostile]") {
  CHECK_THAT(error_of("zip/bad_deflate.zip"), Catch::Matchers::StartsWith("zip/bad_deflate.zip: zip entry 'archive/data/0': "));
  CHECK(error_of("zip/truncated.zip") == "zip/truncated.zip: no zip end-of-central-directory record");
  CHECK(error_of("zip/lying_size.zip") ==
        "zip/lying_size.zip: zip entry 'archive/data/0' claims 4294967294 bytes from 366 compressed bytes, more than "
        "deflate can give");
  CHECK(error_of("zip/past_end.zip") ==
        "zip/past_end.zip: zip entry 'archive/data.pkl': 1073741824 bytes at offset 0 lie past the end of the file "
        "(714 bytes)");
  CHECK(error_of("../cli/cases.txt") == "../cli/cases.txt: no zip end-of-central-directory record");
  // Local headers are checked when their entry is read (open does not touch them).
  std::string bytes = test::read_file("zip/mixed.zip");
  zp::Archive archive(std::as_bytes(std::span(bytes)), "mixed.zip");
  const auto& entry = *archive.find("archive/data/0");
  bytes[entry.local_offset] = 'X';
  CHECK_THROWS_WITH(archive.read(entry), "mixed.zip: zip entry 'archive/data/0': local header at offset " +
                                             std::to_string(entry.local_offset) + " has a wrong signature");
}

TEST_CASE("zip writer: aligned stored entries that the reader and CRC check accept", "[zip]") {
  test::TempDir dir;
  const auto path = dir / "w.zip";
  {
    detail::AtomicFile file(path, true);
    zp::Writer writer(file, 64);
    const std::string a = "hello", b(1000, 'x');
    for (const auto& [name, text] : {std::pair{std::string("f/a"), a}, std::pair{std::string("f/bb"), b}}) {
      writer.begin(name, text.size());
      writer.write(std::as_bytes(std::span(text)));
      writer.end();
    }
    writer.begin("f/empty", 0);
    writer.end();
    writer.finish();
    file.commit();
  }
  const std::string bytes = test::read_file(path);
  zp::Archive archive(std::as_bytes(std::span(bytes)), "w.zip");
  REQUIRE(archive.entries().size() == 3);
  for (const auto& e : archive.entries()) {
    INFO(e.name);
    CHECK(archive.data_offset(e) % 64 == 0);
    CHECK_NOTHROW(archive.read(e));  // CRC-32 checked
  }
  CHECK(archive.read(*archive.find("f/bb")).size() == 1000);
}

TEST_CASE("zip CRC-32: the standard check value, continued over pieces and empty ones", "[zip]") {
  const std::string text = "123456789";
  const auto bytes = std::as_bytes(std::span(text));
  CHECK(detail::crc32(0, bytes) == 0xCBF43926u);
  std::uint32_t crc = detail::crc32(0, bytes.first(4));
  crc = detail::crc32(crc, {});  // an empty piece (null data) leaves it as it is
  crc = detail::crc32(crc, bytes.subspan(4));
  CHECK(crc == 0xCBF43926u);
  CHECK(detail::crc32(0, {}) == 0u);
}

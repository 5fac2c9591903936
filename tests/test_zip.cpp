// The zip reader against archives Python's zipfile wrote (tests/peers/make_zips.py).
#include <catch2/catch.hpp>

#include <algorithm>
#include <fstream>

#include <fmt/format.h>

#include "ckpt/io.h"
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

namespace {

// What a reader made of a checkpoint, for comparing: names, roles, dtypes, shapes, bytes, metadata.
std::string summary(const StateDict& state) {
  std::string out = state.metadata().dump() + "\n";
  for (const auto& e : state.entries()) {
    const auto bytes = e.tensor.bytes();
    out += fmt::format("{} {} {} {} {} {}\n", e.name, static_cast<int>(e.role), e.section, dtype_name(e.tensor.dtype()),
                       shape_to_string(e.tensor.shape()), std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  }
  return out;
}

// Reads `bytes` whole as `how` says: the summary, or "error: " and the one-line message.
std::string outcome(const std::string& bytes, const test::TempDir* dir, const ReadOptions& how) {
  try {
    if (!dir) return summary(load_memory(std::as_bytes(std::span(bytes)), how, "flipped"));
    const auto path = *dir / "flipped";
    std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
    return summary(open(path, how)->read_all());
  } catch (const Error& e) {
    const std::string message = e.what();
    CHECK(message.find('\n') == std::string::npos);
    return "error: " + message;
  }
}

}  // namespace

// Files torch.save and numpy.savez wrote (tests/peers/make_zip_fixtures.py), with one bit flipped
// at every byte: a flip inside the data of an entry that is read (tensor bytes, npy headers, the
// pickle) is refused (the entry's CRC-32), and anywhere else it is refused or changes nothing.
TEST_CASE("zip: a flipped bit in a .pt or .npz is refused or changes nothing", "[zip][hostile]") {
  test::TempDir dir;
  ReadOptions views;  // zero-copy, read-only: the CRC of a view
  views.writable = false;
  ReadOptions copies;  // pread, the CRC computed as the bytes are read
  copies.zero_copy = false;
  for (const char* file : {"good/torch_save.pt", "good/numpy_savez.npz"}) {
    INFO(file);
    const std::string bytes = test::read_file(file);
    const std::string expected = summary(load(file));
    REQUIRE(expected.find("error") == std::string::npos);
    std::vector<std::pair<std::uint64_t, std::uint64_t>> data;  // data ranges of the entries read
    zp::Archive archive(std::as_bytes(std::span(bytes)), file);
    for (const auto& e : archive.entries())  // (torch's "version" entry is not read: flips there change nothing)
      if (e.name.ends_with("/data.pkl") || e.name.find("/data/") != std::string::npos || e.name.ends_with(".npy"))
        data.emplace_back(archive.data_offset(e), archive.data_offset(e) + e.compressed_size);
    std::size_t refused_in_data = 0, in_data = 0;
    for (std::size_t at = 0; at < bytes.size(); ++at)
      for (const unsigned char bit : {0x01, 0x80}) {
        std::string flipped = bytes;
        flipped[at] = static_cast<char>(flipped[at] ^ bit);
        const bool inside = std::any_of(data.begin(), data.end(), [&](auto& r) { return at >= r.first && at < r.second; });
        for (const auto& [where, how] : {std::pair<const test::TempDir*, ReadOptions>{nullptr, ReadOptions{}},
                                         {inside ? &dir : nullptr, views}, {inside ? &dir : nullptr, copies}}) {
          const std::string got = outcome(flipped, where, how);
          INFO("byte " << at << " ^ " << int(bit) << (where ? " (file)" : " (memory)") << ": " << got.substr(0, 300));
          if (inside) CHECK(got.starts_with("error: "));
          else CHECK((got.starts_with("error: ") || got == expected));
          if (inside) in_data += 1, refused_in_data += got.starts_with("error: ");
        }
      }
    CHECK(in_data > 0);
    CHECK(refused_in_data == in_data);
  }
}

TEST_CASE("zip: the CRC-32 of stored entries is checked once per entry, and only when verifying", "[zip]") {
  // pt_crc_flipped.pt: a bit of storage 0 flipped, the storage of "w", "w_t" and "row".
  ReadOptions trusting;
  trusting.verify_checksums = false;
  auto reader = open("bad/pt_crc_flipped.pt", trusting);
  CHECK_NOTHROW(reader->read("row"));
  reader = open("bad/pt_crc_flipped.pt");
  CHECK_THROWS_WITH(reader->read("row"),
                    Catch::Matchers::StartsWith("bad/pt_crc_flipped.pt: tensor 'row': zip entry 'torch_save/data/0': CRC-32 ") &&
                        Catch::Matchers::Contains(" does not match the stored "));
  CHECK_THROWS_AS(reader->read("w"), Error);  // not marked verified after a mismatch
  // A good file: the entry shared by three tensors is checked when the first is read; verify()
  // counts every tensor as checked.
  auto good = open("good/torch_save.pt");
  CHECK(good->verify() == 4);
  CHECK(open("good/numpy_savez.npz")->verify() == 3);
}

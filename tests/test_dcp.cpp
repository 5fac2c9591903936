// PyTorch distributed checkpoints: the hand-made torch 2.x and 1.13 directories of tests/data/good
// and the hostile ones of tests/data/bad (tests/peers/make_dcp_fixtures.py); real ones written by
// torch 1.13 are judged by torch in tests/peers/test_dcp_peer.py. Paths are relative to
// tests/data, the working directory of these tests.
#include <catch2/catch.hpp>

#include <cstring>
#include <fstream>
#include <random>

#include "helpers.h"

using namespace ckpt;
namespace fs = std::filesystem;

namespace {

struct Golden {
  const char* dir;
  ErrorCode code;
  const char* message;  // the whole error, "FILE: ..."
};

const Golden kGolden[] = {
    {"bad/dcp_chunk_outside", ErrorCode::format,
     "bad/dcp_chunk_outside/.metadata: key 'model.w': chunk at [2, 0] of sizes [3, 3] lies outside the tensor's size [4, 3]"},
    {"bad/dcp_overlap", ErrorCode::format, "bad/dcp_overlap/.metadata: key 'model.w': chunks at [0, 0] and [1, 0] overlap"},
    {"bad/dcp_missing_chunk", ErrorCode::format,
     "bad/dcp_missing_chunk/.metadata: key 'model.w': its chunks hold 6 of its 12 elements (data is missing)"},
    {"bad/dcp_offset_past_file", ErrorCode::format,
     "bad/dcp_offset_past_file/.metadata: key 'model.w', chunk at [2, 0]: bytes [1099511627776, 1099511628412) lie past "
     "the end of '__1_0.distcp' (1345 bytes)"},
    {"bad/dcp_huge_size", ErrorCode::format,
     "bad/dcp_huge_size/.metadata: key 'model.w': its chunks hold 12 of its 3298534883328 elements (data is missing)"},
    {"bad/dcp_size_overflow", ErrorCode::format,
     "bad/dcp_size_overflow/.metadata: key 'model.w': size [4611686018427387904, 4611686018427387904] overflows"},
    {"bad/dcp_rank65", ErrorCode::format, "bad/dcp_rank65/.metadata: key 'model.w': its size has 65 dimensions, more than 64"},
    {"bad/dcp_chunk_claims", ErrorCode::format,
     "bad/dcp_chunk_claims/.metadata: key 'model.w': chunk at [2, 0] needs 12884901888 bytes, its storage holds 636"},
    {"bad/dcp_shared_bytes", ErrorCode::format,
     "bad/dcp_shared_bytes/.metadata: key 'optim.w.momentum', chunk at [0, 0]: bytes [636, 1345) of '__1_0.distcp' "
     "overlap those of key 'model.w', chunk at [2, 0]"},
    {"bad/dcp_path_escape", ErrorCode::format,
     "bad/dcp_path_escape/.metadata: storage_data names file '../dcp_v113/__0_0.distcp', not a file in the checkpoint's "
     "directory"},
    {"bad/dcp_symlink", ErrorCode::format,
     "bad/dcp_symlink/__1_0.distcp: is a symbolic link: a distributed checkpoint's files must lie in its directory"},
    {"bad/dcp_no_storage_entry", ErrorCode::format,
     "bad/dcp_no_storage_entry/.metadata: key 'model.b': its chunk at [0] has no storage_data entry"},
    {"bad/dcp_dtype_lies", ErrorCode::format,
     "bad/dcp_dtype_lies/__0_0.distcp at offset 0: tensor 'model.w': chunk at [0, 0] holds a float32 tensor of shape "
     "[2, 3], the metadata says float64 [2, 3]"},
    {"bad/dcp_shape_lies", ErrorCode::format,
     "bad/dcp_shape_lies/__0_0.distcp at offset 0: tensor 'model.w': chunk at [0, 0] holds a float32 tensor of shape "
     "[2, 3], the metadata says float32 [2, 4]"},
    {"bad/dcp_sparse", ErrorCode::unsupported,
     "bad/dcp_sparse/.metadata: key 'model.w': layout 'torch.sparse_coo' is not supported (only strided tensors)"},
    {"bad/dcp_unknown_transform", ErrorCode::unsupported,
     "bad/dcp_unknown_transform/.metadata: tensor 'model.w': chunk at [2, 0] is stored through transform "
     "'stream.rot13/1', which ckpt does not read (it reads stream.zstd/1)"},
    {"bad/dcp_version2", ErrorCode::unsupported,
     "bad/dcp_version2/.metadata: DCP metadata version '2.0.0' is not supported (this reader reads none and 1.x)"},
    {"bad/dcp_unsafe", ErrorCode::unsupported,
     "bad/dcp_unsafe/.metadata: unsafe pickle: it calls 'posix.system' (ckpt never runs pickled code; DCP metadata "
     "needs only its dataclasses, torch.Size, dtypes and layouts)"},
    {"bad/dcp_getattr_gadget", ErrorCode::unsupported,
     "bad/dcp_getattr_gadget/.metadata: unsafe pickle: it calls 'builtins.getattr' (ckpt never runs pickled code; DCP "
     "metadata needs only its dataclasses, torch.Size, dtypes and layouts)"},
    {"bad/dcp_shared_references", ErrorCode::unsupported,
     "bad/dcp_shared_references/.metadata: shared references expand the metadata to more than 89755 items and chunks "
     "(each reference is a copy); refused"},
    {"bad/dcp_crc_flipped", ErrorCode::integrity,
     "bad/dcp_crc_flipped/__1_0.distcp at offset 0: tensor 'model.w': zip entry 'archive/data/0': CRC-32 a9dd26b0 does "
     "not match the stored f49b4344"},
};

std::vector<float> floats(const Tensor& t) { return {t.as<float>().begin(), t.as<float>().end()}; }

std::vector<float> arange(std::size_t n, float start = 0) {
  std::vector<float> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = start + static_cast<float>(i);
  return v;
}

void copy_dir(const fs::path& from, const fs::path& to) {
  fs::create_directories(to);
  for (const auto& e : fs::directory_iterator(from)) fs::copy_file(e.path(), to / e.path().filename());
}

}  // namespace

TEST_CASE("hostile distributed checkpoints are refused with one exact error", "[dcp][golden]") {
  for (const auto& g : kGolden) {
    SECTION(g.dir) {
      try {
        auto reader = open(g.dir);
        reader->verify();
        FAIL("no error for " << g.dir);
      } catch (const Error& e) {
        CHECK(std::string(e.what()) == g.message);
        CHECK(error_code_name(e.code()) == std::string(error_code_name(g.code)));
      }
    }
  }
}

TEST_CASE("a torch 2.x distributed checkpoint: a 2-D grid of chunks, zstd, version, storage_meta, values",
          "[dcp]") {
  auto reader = open("good/dcp_torch2");
  CHECK(reader->format() == "dcp");
  CHECK(reader->format_version() == "1.0.0");
  CHECK(reader->model_key() == "model");
  CHECK(reader->role_source() == RoleSource::heuristic);
  REQUIRE(reader->tensors().size() == 3);
  CHECK(reader->verify() == 3);  // every chunk's zip CRC-32

  // model.w: [4, 6] in four chunks of [2, 3] over two files.
  const Tensor w = reader->read("w");
  CHECK(w.shape() == Shape{4, 6});
  CHECK(floats(w) == arange(24));
  // model.b: one chunk written through the zstd stream transform.
  CHECK(floats(reader->read("b")) == arange(6, 0.5f));
  const auto& step = reader->tensors()[reader->find("state.w.step", "optim")];
  CHECK(step.role == Role::extra);
  CHECK(reader->read("state.w.step", "optim").as<std::int64_t>()[0] == 12);

  // Slices that meet one, two and four chunks read just those, in place.
  for (const auto& [offsets, sizes] : std::vector<std::pair<std::vector<std::uint64_t>, std::vector<std::uint64_t>>>{
           {{0, 0}, {2, 3}}, {{0, 1}, {1, 4}}, {{1, 2}, {2, 3}}, {{3, 5}, {1, 1}}, {{0, 0}, {4, 6}}}) {
    const Tensor s = reader->read_slice("w", offsets, sizes);
    std::vector<float> want;
    for (std::uint64_t r = offsets[0]; r < offsets[0] + sizes[0]; ++r)
      for (std::uint64_t c = offsets[1]; c < offsets[1] + sizes[1]; ++c) want.push_back(static_cast<float>(r * 6 + c));
    CHECK(floats(s) == want);
  }
  CHECK_THROWS_AS(reader->read_slice("w", {3, 0}, {2, 6}), Error);

  const Metadata& m = reader->metadata();
  CHECK(m["step"] == 100);
  CHECK(m["optim"]["param_groups"][0]["lr"] == 0.25);
  CHECK(m[std::string(kDcpMetadataKey)]["version"] == "1.0.0");
  CHECK(m[std::string(kDcpMetadataKey)]["storage_meta"]["checkpoint_id"] == "/ckpt/step100");
  CHECK(m[std::string(kTorchCheckpointKey)]["model_key"] == "model");
  // The value that is not plain data (a fractions.Fraction) is left out, with a note.
  REQUIRE(reader->notes().size() == 1);
  CHECK_THAT(reader->notes()[0], Catch::Matchers::StartsWith("value of key 'rng' is not plain data, left out: unsafe "
                                                             "pickle: it calls 'fractions.Fraction'"));
  CHECK_FALSE(m.contains("rng"));

  // The same through the .metadata file, open_dcp, and with copies instead of views.
  CHECK(open("good/dcp_torch2/.metadata")->tensors().size() == 3);
  ReadOptions copies;
  copies.zero_copy = false;
  test::require_same(open_dcp("good/dcp_torch2", copies)->read_all(), reader->read_all());
}

TEST_CASE("a torch 1.13 distributed checkpoint: keys as saved, --key splits model and sections", "[dcp]") {
  auto flat = open("good/dcp_v113");
  CHECK(flat->format_version().empty());
  CHECK(flat->model_key().empty());  // no planner_data: the keys are the saved dict's own
  REQUIRE(flat->tensors().size() == 3);
  CHECK(flat->tensors()[0].name == "model.w");
  CHECK(floats(flat->read("model.w")) == arange(12));
  CHECK(flat->metadata()["epoch"] == 7);
  CHECK_FALSE(flat->metadata().contains(std::string(kDcpMetadataKey)));

  ReadOptions options;
  options.model_key = "model";
  auto nested = open("good/dcp_v113", options);
  CHECK(nested->model_key() == "model");
  CHECK(nested->tensors()[nested->find("w")].role == Role::parameter);
  const auto& momentum = nested->tensors()[nested->find("w.momentum", "optim")];
  CHECK(momentum.dtype == DType::float64);
  CHECK(nested->read("w.momentum", "optim").as<double>()[11] == 10.0);

  options.model_key = "nope";
  CHECK_THROWS_WITH(open("good/dcp_v113", options),
                    "good/dcp_v113/.metadata: no tensor lies under key 'nope' (asked for the model with 'nope')");
}

TEST_CASE("a distributed checkpoint converts like any other and is never written", "[dcp]") {
  test::TempDir dir;
  ConvertOptions options;
  std::vector<std::string> notes;
  options.write.notice = [&](const std::string& note) { notes.push_back(note); };
  convert("good/dcp_torch2", dir / "out.safetensors", options);
  CHECK(notes.size() == 1);  // the value left out
  auto back = open(dir / "out.safetensors");
  CHECK(floats(back->read("w")) == arange(24));
  CHECK(back->metadata()["optim"]["param_groups"][0]["lr"] == 0.25);

  const StateDict state = load("good/dcp_v113");
  WriteOptions dcp;
  dcp.format = "dcp";
  CHECK_THROWS_WITH(save(state, dir / "x", dcp),
                    Catch::Matchers::Contains("ckpt reads dcp but does not write it (output formats: ckpt-h5,"));
}

TEST_CASE("a distributed checkpoint converts into every format with the same tensors", "[dcp]") {
  test::TempDir dir;
  const StateDict source = load("good/dcp_torch2");
  for (const auto& format : test::kFormats) {
    SECTION(format.label) {
      ConvertOptions options;
      options.write.compression = format.compression;
      const auto out = dir / (std::string("out") + format.extension);
      convert("good/dcp_torch2", out, options);
      const StateDict back = load(out);
      REQUIRE(back.size() == source.size());
      for (const auto& e : source.entries()) {
        const Entry* got = nullptr;
        for (const auto& b : back.entries())
          if (b.name == e.name && b.section == e.section) got = &b;
        REQUIRE(got != nullptr);
        CHECK(got->role == e.role);
        CHECK(got->tensor.shape() == e.tensor.shape());
        CHECK(std::equal(got->tensor.bytes().begin(), got->tensor.bytes().end(), e.tensor.bytes().begin(),
                         e.tensor.bytes().end()));
      }
    }
  }
}

TEST_CASE("a directory that is not a distributed checkpoint, or one held in memory", "[dcp]") {
  CHECK_THROWS_WITH(open("good"), "good: is a directory without a .metadata file (a PyTorch distributed checkpoint's "
                                  "directory holds one; other checkpoints are files)");
  const std::string bytes = test::read_file("good/dcp_v113/.metadata");
  std::vector<std::byte> copy(bytes.size());
  std::memcpy(copy.data(), bytes.data(), bytes.size());
  CHECK_THROWS_WITH(open_memory(std::move(copy)),
                    "<memory>: a distributed checkpoint's .metadata names the files beside it: open its directory");
}

// Seeded damage to the metadata and the data files of good checkpoints: every case opens and
// reads, or is refused with ckpt::Error; nothing may crash.
TEST_CASE("damaged distributed checkpoints never crash the reader", "[dcp][fuzz]") {
  test::TempDir dir;
  for (const char* good : {"good/dcp_torch2", "good/dcp_v113"}) {
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(good)) files.push_back(e.path().filename());
    std::sort(files.begin(), files.end());
    std::mt19937 rng(20261201);
    std::size_t refused = 0;
    const int cases = 120;
    for (int i = 0; i < cases; ++i) {
      const fs::path copy = dir / ("case" + std::to_string(i));
      fs::remove_all(copy);
      copy_dir(good, copy);
      const fs::path victim = copy / files[rng() % files.size()];
      std::string bytes = test::read_file(victim);
      if (rng() % 3 == 0) bytes.resize(rng() % (bytes.size() + 1));
      else
        for (int flips = 1 + static_cast<int>(rng() % 4); flips-- > 0 && !bytes.empty();)
          bytes[rng() % bytes.size()] ^= static_cast<char>(1u << (rng() % 8));
      std::ofstream(victim, std::ios::binary | std::ios::trunc).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      try {
        auto reader = open(copy);
        (void)reader->read_all();
        for (std::size_t t = 0; t < reader->tensors().size(); ++t)
          if (reader->tensors()[t].shape.size() == 2) (void)reader->read_slice(t, {1, 1}, {1, 1});
      } catch (const Error&) {
        ++refused;
      }
    }
    INFO(good << ": " << refused << " of " << cases << " refused");
    CHECK(refused > 0);
  }
}

TEST_CASE("values under the names of ckpt's own records are left out, and a value's pickle may not inflate without bound",
          "[dcp]") {
  auto dcp = open("good/dcp_reserved_and_bomb");
  const auto& notes = dcp->notes();
  REQUIRE(notes.size() == 2);
  CHECK(notes[0].find("'ckpt.torch': a name ckpt keeps for its own records, left out") != std::string::npos);
  CHECK(notes[1].find("archive/data.pkl inflates to 2097156 bytes, more than an item of") != std::string::npos);
  CHECK(!dcp->metadata().contains("bomb"));
  CHECK(!dcp->metadata().contains("ckpt.torch"));
  CHECK(dcp->model_key().empty());

  // The same for a .pt: torch.save({"w": ..., "ckpt.torch": {"model_key": "zzz", ...}}).
  auto pt = open("good/reserved_key.pt");
  REQUIRE(pt->notes().size() == 1);
  CHECK(pt->notes()[0] == "value of key 'ckpt.torch': a name ckpt keeps for its own records, left out");
  CHECK(!pt->metadata().contains("ckpt.torch"));
  CHECK(pt->model_key().empty());
  CHECK(pt->tensors().size() == 1);
}

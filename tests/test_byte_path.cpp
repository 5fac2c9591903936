// The one byte path (core/deliver.h) seen from outside: slices in every format against a slicing
// written here independently, checkpoints opened from memory in every format, and writable loads.
#include <catch2/catch.hpp>

#include <cstring>
#include <fstream>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "helpers.h"

using namespace ckpt;
using test::TempDir;

namespace {

using test::Format;

// Every way of the round-trip matrix, and deflated .npz entries.
const std::vector<Format> kFormats = [] {
  std::vector<Format> all = test::kFormats;
  all.push_back({"numpy deflated", ".npz", Compression::deflate});
  return all;
}();

WriteOptions options_for(const Format& f) {
  WriteOptions o;
  o.compression = f.compression;
  // Small chunks, so that slices straddle chunks and chunks are partial at the edges.
  o.chunk_bytes = 96;
  o.min_compress_bytes = 0;
  return o;
}

// The reference: element by element, row-major, nothing shared with the library's code.
Tensor slice_of(const Tensor& t, const std::vector<std::uint64_t>& offsets, const std::vector<std::uint64_t>& sizes) {
  const Shape shape(sizes.begin(), sizes.end());
  Tensor out = Tensor::zeros(t.dtype(), shape);
  const std::size_t itemsize = dtype_size(t.dtype()), rank = sizes.size();
  const std::uint64_t numel = shape_numel(shape);
  std::vector<std::uint64_t> index(rank, 0);
  for (std::uint64_t n = 0; n < numel; ++n) {
    std::uint64_t at = 0;
    for (std::size_t k = 0; k < rank; ++k) at = at * static_cast<std::uint64_t>(t.shape()[k]) + offsets[k] + index[k];
    std::memcpy(out.mutable_bytes().data() + n * itemsize, t.bytes().data() + at * itemsize, itemsize);
    for (std::size_t k = rank; k-- > 0;) {
      if (++index[k] < sizes[k]) break;
      index[k] = 0;
    }
  }
  return out;
}

StateDict slice_state() {
  StateDict s;
  s.add_parameter("m", test::pattern_tensor(DType::float32, {9, 13}, 1));
  s.add_parameter("c", test::pattern_tensor(DType::float16, {4, 5, 6}, 2));
  s.add_parameter("d", test::pattern_tensor(DType::float64, {17}, 3));
  s.add_buffer("i", test::pattern_tensor(DType::int64, {3, 1, 7}, 4));
  s.add_buffer("b", test::pattern_tensor(DType::bool_, {5, 6}, 5));
  s.add_parameter("z", test::pattern_tensor(DType::complex64, {3, 4}, 6));
  s.add_parameter("s", test::pattern_tensor(DType::float32, {}, 7));
  return s;
}

// Regions of every kind: whole, rows (one run), a column (strided), interior boxes that cross
// chunk edges, single elements, empty ones.
std::vector<std::pair<std::vector<std::uint64_t>, std::vector<std::uint64_t>>> regions(const Shape& shape) {
  std::vector<std::pair<std::vector<std::uint64_t>, std::vector<std::uint64_t>>> out;
  const std::vector<std::uint64_t> dims(shape.begin(), shape.end());
  out.push_back({std::vector<std::uint64_t>(dims.size(), 0), dims});
  if (dims.empty()) return out;
  auto region = [&](auto fn) {
    std::vector<std::uint64_t> off(dims.size()), size(dims.size());
    for (std::size_t k = 0; k < dims.size(); ++k) fn(k, off[k], size[k]);
    out.push_back({off, size});
  };
  region([&](std::size_t k, auto& o, auto& n) { o = k == 0 ? dims[0] / 3 : 0; n = k == 0 ? (dims[0] + 1) / 2 - o + 1 : dims[k]; });
  region([&](std::size_t k, auto& o, auto& n) { o = k + 1 == dims.size() ? dims[k] / 2 : 0; n = k + 1 == dims.size() ? 1 : dims[k]; });
  region([&](std::size_t k, auto& o, auto& n) { o = dims[k] > 2 ? 1 : 0; n = dims[k] > 2 ? dims[k] - 2 : dims[k]; });
  region([&](std::size_t k, auto& o, auto& n) { o = dims[k] - 1; n = 1; });
  region([&](std::size_t k, auto& o, auto& n) { o = dims[k] / 2; n = k == 0 ? 0 : 1; });
  return out;
}

}  // namespace

TEST_CASE("read_slice gives exactly the slice in every format", "[slice]") {
  TempDir dir;
  const StateDict state = slice_state();
  for (const auto& f : kFormats) {
    INFO(f.label);
    const auto path = dir / (std::string("s") + f.label[0] + f.extension);
    save(state, path, options_for(f));
    for (const bool writable : {true, false}) {
      ReadOptions read;
      read.writable = writable;
      auto reader = open(path, read);
      for (const auto& e : state.entries()) {
        for (const auto& [offsets, sizes] : regions(e.tensor.shape())) {
          INFO(e.name << " at [" << fmt::format("{}", fmt::join(offsets, ",")) << "] sizes ["
                      << fmt::format("{}", fmt::join(sizes, ",")) << "]");
          const Tensor got = reader->read_slice(e.name, offsets, sizes);
          CHECK(got.equals(slice_of(e.tensor, offsets, sizes)));
        }
      }
    }
  }
}

TEST_CASE("a slice that is one aligned run is a zero-copy view; others are copies", "[slice]") {
  TempDir dir;
  StateDict s;
  s.add_parameter("w", test::pattern_tensor(DType::float32, {256, 512}, 1));  // 512 KiB
  save(s, dir / "w.safetensors");
  ReadOptions shared;
  shared.writable = false;
  auto reader = open(dir / "w.safetensors", shared);
  CHECK(reader->read_slice("w", {3, 0}, {5, 512}).is_view());     // whole rows: one run
  CHECK(reader->read_slice("w", {3, 7}, {1, 20}).is_view());      // part of one row
  CHECK_FALSE(reader->read_slice("w", {3, 7}, {2, 20}).is_view());  // parts of two rows
  // Writable: a private mapping of the run when it is large enough, else a copy.
  auto writable = open(dir / "w.safetensors");
  Tensor rows = writable->read_slice("w", {0, 0}, {200, 512});
  CHECK(rows.is_view());
  rows.as_mutable<float>()[0] = 42.0f;
  CHECK(writable->read_slice("w", {0, 0}, {1, 1}).equals(slice_of(s.at("w"), {0, 0}, {1, 1})));
}

TEST_CASE("a slice outside the tensor is an invalid argument naming the tensor", "[slice]") {
  TempDir dir;
  StateDict s;
  s.add_parameter("w", test::pattern_tensor(DType::float32, {4, 6}, 1));
  save(s, dir / "w.ckpt.h5");
  auto reader = open(dir / "w.ckpt.h5");
  const std::string file = (dir / "w.ckpt.h5").string();
  CHECK_THROWS_WITH(reader->read_slice("w", {2, 0}, {3, 6}),
                    file + ": tensor 'w': slice at [2, 0] of sizes [3, 6] lies outside shape [4, 6]");
  CHECK_THROWS_WITH(reader->read_slice("w", {0}, {1}),
                    file + ": tensor 'w': a slice of a rank-2 tensor needs 2 offsets and sizes, got 1 and 1");
  try {
    reader->read_slice("w", {UINT64_MAX, 0}, {2, 1});
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::invalid_argument);
  }
}

TEST_CASE("every format opens from memory", "[memory]") {
  TempDir dir;
  // Every dtype, a buffer in a collection, a non-persistent one, an optimizer section, metadata.
  StateDict state;
  unsigned seed = 1;
  for (DType d : all_dtypes())
    if (d != DType::complex128) state.add_parameter("p_" + std::string(dtype_name(d)), test::pattern_tensor(d, {3, 5}, seed++));
  state.add_parameter("scalar", test::pattern_tensor(DType::float32, {}, seed++));
  state.add_parameter("empty", Tensor::zeros(DType::float32, {0, 4}));
  state.add_buffer("bn.mean", test::pattern_tensor(DType::float32, {6}, seed++), true, "batch_stats");
  state.add_buffer("scratch", test::pattern_tensor(DType::float32, {2}, seed++), false);
  state.add_extra("optimizer", "state.0.exp_avg", test::pattern_tensor(DType::float32, {3, 5}, seed++));
  state.metadata() = Metadata::parse(R"({"epoch": 3, "config": {"depth": 18}})");
  for (const auto& f : kFormats) {
    INFO(f.label);
    StateDict fits;
    for (const auto& e : state.entries())
      if ((std::string(f.label) != "pytorch" || (e.tensor.dtype() != DType::float8_e4m3fn && e.tensor.dtype() != DType::float8_e5m2 &&
                                                  e.tensor.dtype() != DType::uint16 && e.tensor.dtype() != DType::uint32 &&
                                                  e.tensor.dtype() != DType::uint64)) &&
          (std::string(f.label) != "safetensors" || e.role != Role::buffer || e.persistent))
        fits.add(static_cast<const EntryInfo&>(e), e.tensor);
    fits.metadata() = state.metadata();
    const auto path = dir / (std::string("m") + f.label[0] + f.extension);
    save(fits, path, options_for(f));
    const std::string text = test::read_file(path);
    std::vector<std::byte> bytes(text.size());
    std::memcpy(bytes.data(), text.data(), text.size());
    auto reader = open_memory(std::move(bytes), {}, "model-in-memory");
    CHECK(reader->path() == "model-in-memory");
    CHECK(reader->format() == open(path)->format());
    const StateDict got = reader->read_all();
    reader.reset();  // tensors keep the memory alive
    test::require_same(fits, got);
    CHECK(reader == nullptr);
    // load_memory copies: the caller's bytes may go away at once.
    std::vector<std::byte> once(text.size());
    std::memcpy(once.data(), text.data(), text.size());
    const StateDict copied = load_memory(once);
    once.assign(once.size(), std::byte{0});
    test::require_same(fits, copied);
  }
  // Errors name the memory source.
  const std::vector<std::byte> junk(100, std::byte{7});
  CHECK_THROWS_WITH(open_memory(junk, nullptr, {}, "upload"),
                    Catch::Matchers::StartsWith("upload: unrecognized file format at offset 0"));
}

TEST_CASE("loaded tensors are writable; writes reach neither the file nor later reads", "[mutable]") {
  TempDir dir;
  StateDict s;
  s.add_parameter("big", test::pattern_tensor(DType::float32, {512, 256}, 1));  // 512 KiB: a private mapping
  s.add_parameter("small", test::pattern_tensor(DType::float32, {8}, 2));       // a copy
  for (const char* ext : {".safetensors", ".ckpt.h5", ".pt", ".npz", ".msgpack", ".boost.bin"}) {
    INFO(ext);
    const auto path = dir / (std::string("w") + ext);
    save(s, path);
    const std::string before = test::read_file(path);
    StateDict loaded = load(path);
    for (auto& e : loaded.entries()) {
      REQUIRE(e.tensor.is_writable());
      for (float& x : e.tensor.as_mutable<float>()) x = 1.5f;
    }
    // ckpt aligns tensor data in these formats: the big tensor is zero-copy.
    const bool aligned = std::string(ext) == ".safetensors" || std::string(ext) == ".ckpt.h5" || std::string(ext) == ".pt";
    if (aligned) CHECK(loaded.at("big").is_view());
    CHECK_FALSE(loaded.at("small").is_view());
    CHECK(test::read_file(path) == before);
    test::require_same(s, load(path));
    // Read-only views when asked for: writing throws.
    ReadOptions shared;
    shared.writable = false;
    Tensor view = open(path, shared)->read("big");
    if (aligned) CHECK(view.is_view());
    if (view.is_view()) CHECK_THROWS_AS(view.mutable_bytes(), Error);
  }
}

TEST_CASE("a file truncated while a reader holds it is an error, not stray memory or a crash", "[truncate]") {
  TempDir dir;
  StateDict s;
  s.add_parameter("w", test::pattern_tensor(DType::float32, {512, 256}, 1));  // 512 KiB
  for (const char* ext : {".safetensors", ".ckpt.h5", ".npz"}) {
    INFO(ext);
    const auto path = dir / (std::string("t") + ext);
    save(s, path);
    for (const std::uint64_t keep : {std::uint64_t{300000}, std::uint64_t{1000}, std::uint64_t{0}}) {
      INFO("truncated to " << keep);
      auto reader = open(path);
      (void)reader->read_slice("w", {0, 0}, {1, 256});  // located (ckpt-h5: HDF5 has the file open)
      std::filesystem::resize_file(path, keep);
      // A column (a strided gather), whole rows (one run), a writable and a read-only view.
      CHECK_THROWS_AS(reader->read_slice("w", {0, 7}, {512, 1}), Error);
      CHECK_THROWS_AS(reader->read_slice("w", {100, 0}, {300, 256}), Error);
      CHECK_THROWS_AS(reader->read("w"), Error);
      ReadOptions shared;
      shared.writable = false;
      save(s, path);  // whole again, then cut under a reader that maps it read-only
      auto mapped = open(path, shared);
      (void)mapped->read_slice("w", {0, 0}, {1, 256});
      std::filesystem::resize_file(path, keep);
      CHECK_THROWS_AS(mapped->read("w"), Error);
      save(s, path);
    }
  }
}

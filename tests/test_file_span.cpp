// Source::file_span: where a reader says a tensor's bytes lie in its file, they must be exactly the
// bytes read() returns (writers copy them from there inside the kernel); and AtomicFile's copying
// write falls back to memory wherever the kernel cannot copy.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include "helpers.h"
#include "util/atomic_file.h"
#include "util/file_read.h"
#include "util/mapped_file.h"

using namespace ckpt;

TEST_CASE("file spans hold exactly the bytes read() returns", "[convert]") {
  test::TempDir dir;
  StateDict state;
  state.add_parameter("layer.weight", test::pattern_tensor(DType::float32, {3, 4}, 1));
  state.add_parameter("layer.bias", test::pattern_tensor(DType::float64, {2, 2, 2}, 2));
  state.add_parameter("other.empty", Tensor::zeros(DType::float32, {0, 3}));
  state.add_buffer("layer.count", test::pattern_tensor(DType::int64, {5}, 3));
  state.add_buffer("layer.mask", test::pattern_tensor(DType::bool_, {3}, 4));
  state.add_buffer("layer.bytes", test::pattern_tensor(DType::uint8, {7}, 5));
  // Every format whose reader can point into its file.
  for (const char* ext : {".safetensors", ".pt", ".msgpack", ".npz", ".boost.bin", ".ckpt.h5"}) {
    INFO(ext);
    const auto path = dir / (std::string("s") + ext);
    save(state, path);
    auto reader = open(path);
    std::size_t spans = 0;
    for (std::size_t i = 0; i < reader->tensors().size(); ++i) {
      const Tensor tensor = reader->read(i);  // ckpt-h5 knows the span of the tensor read last
      const auto span = reader->file_span(i);
      if (!span) continue;
      ++spans;
      std::vector<std::byte> at(tensor.nbytes());
      detail::read_at(span->fd, span->offset, at, false, path.string());
      CHECK(std::equal(at.begin(), at.end(), tensor.bytes().begin(), tensor.bytes().end()));
    }
    CHECK(spans == 5);  // all but the empty tensor
  }
  // Sharded safetensors: each tensor's span in its shard.
  WriteOptions sharded;
  sharded.max_shard_bytes = 64;
  save(state, dir / "model.safetensors", sharded);
  auto reader = open(dir / "model.safetensors.index.json");
  REQUIRE(reader->format() == "safetensors-sharded");
  std::size_t spans = 0;
  for (std::size_t i = 0; i < reader->tensors().size(); ++i) {
    const Tensor tensor = reader->read(i);
    if (const auto span = reader->file_span(i)) {
      ++spans;
      std::vector<std::byte> at(tensor.nbytes());
      detail::read_at(span->fd, span->offset, at, false, "shard");
      CHECK(std::equal(at.begin(), at.end(), tensor.bytes().begin(), tensor.bytes().end()));
    }
  }
  CHECK(spans == 5);
}

TEST_CASE("a copying write falls back to memory where the kernel cannot copy", "[convert]") {
  test::TempDir dir;
  std::vector<std::byte> bytes(100000);
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::byte>(i * 13);
  {  // the source file holds the bytes' first half only: the rest comes from memory
    detail::AtomicFile source(dir / "half.bin", false);
    source.write(std::span(bytes).first(50000));
    source.commit();
  }
  const auto fd = detail::open_readonly(dir / "half.bin");
  detail::AtomicFile out(dir / "out.bin", false);
  out.write(std::span(bytes).first(10));
  out.write(std::span(bytes).subspan(10), Source::FileSpan{fd.get(), 10});
  out.write(std::span(bytes).first(3), Source::FileSpan{-1, 0});  // not a descriptor at all
  out.commit();
  const std::string written = test::read_file(dir / "out.bin");
  REQUIRE(written.size() == bytes.size() + 3);
  CHECK(std::memcmp(written.data(), bytes.data(), bytes.size()) == 0);
  CHECK(std::memcmp(written.data() + bytes.size(), bytes.data(), 3) == 0);
}

TEST_CASE("conversions into ckpt-h5 and Boost binary copy tensors file to file, exactly", "[convert]") {
  test::TempDir dir;
  StateDict state;
  for (int i = 0; i < 20; ++i)  // small and large, interleaved with HDF5's own metadata writes
    state.add_parameter("layer" + std::to_string(i) + ".weight",
                        test::pattern_tensor(i % 3 ? DType::float32 : DType::int64, {i * 37 + 1, i % 5 + 1}, i));
  state.add_buffer("empty", Tensor::zeros(DType::float32, {0}));
  state.metadata()["note"] = "converted";
  for (const char* ext : {".safetensors", ".pt", ".npz", ".msgpack"}) {
    for (const char* to : {".ckpt.h5", ".boost.bin"}) {  // HDF5's space for the data; Boost's stream
      INFO(ext << " -> " << to);
      const auto in = dir / (std::string("in") + ext), out = dir / (std::string("out") + ext + to);
      save(state, in);
      ckpt::convert(in, out);
      auto reader = open(out);
      CHECK(reader->verify() == state.size());  // stored checksums (both formats keep them) match
      StateDict back = reader->read_all();
      back.metadata().erase("ckpt.torch");
      for (const auto& e : state.entries()) CHECK(back.at(e.name).equals(e.tensor));
    }
  }
}

#include <catch2/catch.hpp>

#include <mutex>
#include <thread>

#include "core/read_ahead.h"
#include "helpers.h"

using namespace ckpt;
using ckpt::test::TempDir;

TEST_CASE("ckpt-h5 <-> safetensors round trips are bit-exact with roles and metadata", "[convert]") {
  TempDir dir;
  const StateDict original = test::kitchen_sink(/*with_complex128=*/false);
  save(original, dir / "a.ckpt.h5");
  ConvertOptions options;
  CHECK(convert(dir / "a.ckpt.h5", dir / "b.safetensors", options) == original.size());
  options.write.compression = Compression::zstd;
  convert(dir / "b.safetensors", dir / "c.ckpt.h5", options);
  // zstd is for ckpt-h5 only: refused for safetensors, never ignored.
  CHECK_THROWS_WITH(convert(dir / "c.ckpt.h5", dir / "d.safetensors", options),
                    (dir / "d.safetensors").string() + ": safetensors cannot be compressed with zstd (only ckpt-h5)");
  options.write.compression = Compression::none;
  convert(dir / "c.ckpt.h5", dir / "d.safetensors", options);
  const StateDict in_safetensors = test::without_non_persistent(original);  // as a state_dict
  test::require_same(in_safetensors, load(dir / "b.safetensors"));
  test::require_same(in_safetensors, load(dir / "c.ckpt.h5"));
  test::require_same(in_safetensors, load(dir / "d.safetensors"));
  // Same input, same bytes: the files are reproducible.
  CHECK(test::read_file(dir / "b.safetensors") == test::read_file(dir / "d.safetensors"));
}

TEST_CASE("output format comes from --to or the extension", "[convert]") {
  TempDir dir;
  StateDict s;
  s.add_parameter("w", Tensor::zeros(DType::float32, {2}));
  save(s, dir / "a.ckpt.h5");
  ConvertOptions options;
  options.write.format = "safetensors";
  convert(dir / "a.ckpt.h5", dir / "out.bin", options);
  CHECK(open(dir / "out.bin")->format() == "safetensors");
  CHECK(format_for_extension("x.ckpt.h5")->name == "ckpt-h5");
  CHECK(format_for_extension("x.safetensors")->name == "safetensors");
  CHECK(format_for_extension("x.bin")->name == "pytorch");  // pytorch_model.bin
  CHECK(format_for_extension("x.dat") == nullptr);
  CHECK_THROWS_WITH(save(s, dir / "x.dat"),
                    (dir / "x.dat").string() +
                        ": cannot tell the output format from the extension; name one (ckpt-h5, safetensors, safetensors-sharded, pytorch, flax, numpy, boost-text, boost-xml, boost-binary)");
}

namespace {

// A Source that logs each read (index and thread) and can be told to fail on one index.
class LoggingSource final : public Source {
 public:
  explicit LoggingSource(std::vector<std::int64_t> sizes) {
    for (std::size_t i = 0; i < sizes.size(); ++i) {
      TensorInfo info;
      info.name = "t" + std::to_string(i);
      info.dtype = DType::uint8;
      info.shape = {sizes[i]};
      infos_.push_back(std::move(info));
    }
  }
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const Metadata& metadata() const override { return metadata_; }
  Tensor read(std::size_t index) override {
    {
      std::lock_guard lock(mutex);
      reads.push_back(index);
      threads.push_back(std::this_thread::get_id());
    }
    last = index;
    if (fail_on && *fail_on == index) throw Error(ErrorCode::io, "src", "cannot read " + std::to_string(index));
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(infos_[index].shape[0]), static_cast<std::uint8_t>(index + 1));
    return Tensor::copy_of(DType::uint8, infos_[index].shape, std::as_bytes(std::span(bytes)));
  }
  // Like ckpt-h5: known only for the tensor read last.
  std::optional<FileSpan> file_span(std::size_t index) const override {
    if (last != index) return std::nullopt;
    return FileSpan{100, 1000 + index};
  }
  std::vector<std::size_t> logged() {
    std::lock_guard lock(mutex);
    return reads;
  }

  std::mutex mutex;
  std::vector<std::size_t> reads;
  std::vector<std::thread::id> threads;
  std::optional<std::size_t> fail_on;
  std::optional<std::size_t> last;

 private:
  std::vector<TensorInfo> infos_;
  Metadata metadata_ = Metadata::object();
};

}  // namespace

TEST_CASE("Read-ahead: the next tensor is read on the helper thread while this one is used", "[convert]") {
  LoggingSource inner({10, 20, 30, 1000, 40});
  {
    detail::ReadAheadSource ahead(inner, /*max_ahead_bytes=*/100);
    CHECK(ahead.tensors().size() == 5);
    const Tensor t0 = ahead.read(0);
    CHECK(t0.bytes().size() == 10);
    CHECK(t0.bytes()[0] == std::byte{1});
    // The span the inner source gave right after reading 0, though it has read 1 since.
    const Tensor t1 = ahead.read(1);
    REQUIRE(ahead.file_span(1).has_value());
    CHECK(ahead.file_span(1)->offset == 1001);
    CHECK_FALSE(ahead.file_span(0).has_value());
    CHECK(t1.bytes()[0] == std::byte{2});
    // 3 (1000 bytes) is over the limit: not read ahead after 2, read when asked.
    CHECK(ahead.read(2).bytes()[0] == std::byte{3});
    CHECK(inner.logged() == std::vector<std::size_t>{0, 1, 2});
    CHECK(ahead.read(3).bytes().size() == 1000);
    // Out of order: the read ahead of 4 is dropped, then 0 and 1 again.
    CHECK(ahead.read(0).bytes()[0] == std::byte{1});
    CHECK(ahead.read(1).bytes()[0] == std::byte{2});
    const auto log = inner.logged();  // and perhaps 2 by now, read ahead
    CHECK(std::vector<std::size_t>(log.begin(), log.begin() + 7) == std::vector<std::size_t>{0, 1, 2, 3, 4, 0, 1});
  }
  for (const auto id : inner.threads) CHECK(id != std::this_thread::get_id());
}

TEST_CASE("Read-ahead: an error reading a tensor is thrown where that tensor is asked for", "[convert]") {
  LoggingSource inner({10, 10, 10});
  inner.fail_on = 1;
  detail::ReadAheadSource ahead(inner, 100);
  CHECK(ahead.read(0).bytes()[0] == std::byte{1});  // 1 fails on the helper, unseen so far
  CHECK_THROWS_WITH(ahead.read(1), "src: cannot read 1");
  CHECK(ahead.read(2).bytes()[0] == std::byte{3});
  CHECK_THROWS_WITH(ahead.read(1), "src: cannot read 1");
}

TEST_CASE("Inferred roles are recorded as inferred, and exact ones are not", "[convert]") {
  ckpt::StateDict guessed;
  guessed.add_parameter("w", ckpt::Tensor::zeros(ckpt::DType::float32, {2}));
  guessed.add_buffer("n", ckpt::Tensor::zeros(ckpt::DType::int64, {}));
  guessed.set_role_source(ckpt::RoleSource::heuristic);
  const TempDir dir;
  for (const std::string ext : {".ckpt.h5", ".safetensors", ".pt", ".npz", ".msgpack"}) {
    INFO(ext);
    const auto path = dir / ("guessed" + ext);
    ckpt::save(guessed, path);
    auto state = ckpt::load(path);
    CHECK(state.role_source() == ckpt::RoleSource::heuristic);
    CHECK(state.metadata()[std::string(ckpt::kRoleSourceKey)] == "heuristic");
    // Saved again with the roles declared exact, the record goes.
    state.set_role_source(ckpt::RoleSource::stored);
    const auto exact = dir / ("exact" + ext);
    ckpt::save(state, exact);
    const auto again = ckpt::load(exact);
    CHECK(again.role_source() != ckpt::RoleSource::heuristic);
    CHECK(!again.metadata().contains(std::string(ckpt::kRoleSourceKey)));
  }
}

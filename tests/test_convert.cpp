#include <catch2/catch.hpp>

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
  convert(dir / "c.ckpt.h5", dir / "d.safetensors", options);
  test::require_same(original, load(dir / "b.safetensors"));
  test::require_same(original, load(dir / "c.ckpt.h5"));
  test::require_same(original, load(dir / "d.safetensors"));
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

// Shared test fixtures: state dicts that exercise every dtype and awkward key, temp dirs.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "ckpt/ckpt.h"

namespace ckpt::test {

// A tensor of `dtype` and `shape` whose bytes follow a seeded pattern (bool: 0/1).
Tensor pattern_tensor(DType dtype, Shape shape, unsigned seed);

// Every dtype (as parameters; non-floating ones as buffers), rank 0, empty tensors, awkward keys
// ("", ".", "a" and "a.b", "a/b", "%", unicode, 10,000-byte keys), buffers in two collections,
// a non-persistent buffer, an "optimizer" section and nested metadata.
StateDict kitchen_sink(bool with_complex128 = true);
// `s` without its non-persistent buffers: what a safetensors file of it holds.
StateDict without_non_persistent(const StateDict& s);

// Same entries (names, roles, sections, collections, persistence), same bytes, same metadata.
void require_same(const StateDict& a, const StateDict& b);

// A way of writing a file: a format (by extension) and a compression.
struct Format {
  const char* label;
  const char* extension;
  Compression compression = Compression::none;
};
// The nine ways the round-trip matrix covers: ckpt-h5 (plain and zstd), safetensors, pytorch,
// flax, numpy, Boost text, xml and binary.
extern const std::vector<Format> kFormats;

// A fresh empty directory under the system temp dir, removed on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

std::string read_file(const std::filesystem::path& path);

}  // namespace ckpt::test

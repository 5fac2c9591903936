// NumPy .npz / .npy in the format registry.
#include "ckpt/numpy.h"
#include "numpy/format.h"

namespace ckpt {

namespace detail {

FormatHandler numpy_format() {
  return {"numpy", "NumPy .npz (and .npy); roles in zip comments (format-spec/conventions.md)", {".npz", ".npy"},
          numpy::sniff, numpy::open_reader, write_numpy, {Compression::deflate}, false};
}

}  // namespace detail

std::unique_ptr<Reader> open_numpy(const std::filesystem::path& path, const ReadOptions& options) {
  return detail::make_reader(detail::numpy::open_reader(detail::ByteSource::open_file(path), options));
}

}  // namespace ckpt

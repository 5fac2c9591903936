// ckpt-h5 in the format registry.
#include "ckpt/ckpt_h5.h"
#include "ckpt_h5/format.h"
#include "h5/h5.h"

namespace ckpt {

namespace detail {
namespace {

bool sniff(std::span<const std::byte> head, std::uint64_t) { return h5::has_signature(head); }

// HDF5's signature after a user block of 4 KiB or more: at 4096, 8192, ... (user blocks are
// powers of two).
bool sniff_further(const ByteSource& source) {
  for (std::uint64_t at = 4096; at + 8 <= source.size() && at != 0; at *= 2) {
    std::byte head[8];
    (void)source.read(at, head);
    if (h5::has_signature(head)) return true;
  }
  return false;
}

}  // namespace

FormatHandler ckpt_h5_format() {
  return {"ckpt-h5", "ckpt's HDF5 schema: parameters and buffers in separate sections (format-spec/ckpt-h5.md)",
          {".ckpt.h5", ".h5", ".hdf5", ".ckpt"}, sniff, ckpt_h5::open_reader, write_ckpt_h5, {Compression::zstd}, false,
          sniff_further};
}

}  // namespace detail

std::unique_ptr<Reader> open_ckpt_h5(const std::filesystem::path& path, const ReadOptions& options) {
  return detail::make_reader(detail::ckpt_h5::open_reader(detail::ByteSource::open_file(path), options));
}

}  // namespace ckpt

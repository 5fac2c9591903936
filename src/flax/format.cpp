// Flax msgpack in the format registry.
#include "ckpt/flax.h"
#include "flax/format.h"

namespace ckpt {

namespace detail {

FormatHandler flax_format() {
  return {"flax", "Flax msgpack (flax.serialization.to_bytes); collections give roles (format-spec/conventions.md)",
          {".msgpack", ".flax"}, flax::sniff, flax::open_reader, write_flax, {}, false};
}

}  // namespace detail

std::unique_ptr<Reader> open_flax(const std::filesystem::path& path, const ReadOptions& options) {
  return detail::make_reader(detail::flax::open_reader(detail::ByteSource::open_file(path), options));
}

}  // namespace ckpt

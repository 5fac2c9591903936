// Where a tensor's bytes are: what every format's reader says about each tensor, and all that the
// one delivery routine (core/deliver.h) needs to hand the tensor, or a slice of it, out.
//
// A tensor's elements lie in a *stream* of bytes: ranges of the source (a file or memory), or the
// output of a decoder (an inflated zip entry, base64 text), at a first byte offset with strides
// and a byte order. Three layouts are not streams: ckpt-h5's compressed chunks (decoded here, from
// where each chunk lies in the file), a tensor assembled from tiles that each have a location of
// their own (a distributed checkpoint's chunks, each saved by the rank that held it), and
// anything the format's library must read itself (HDF5 converting a type, filters ckpt does not
// know): a region reader.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/byte_source.h"
#include "ckpt/tensor.h"

namespace ckpt::detail {

// A byte range of the source.
struct Extent {
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};

// Produces bytes [skip, skip + out.size()) of a decoded stream into `out` (decoding and dropping
// the first `skip` bytes). Errors are thrown as ckpt::Error naming the source and the place.
using StreamDecoder = std::function<void(std::uint64_t skip, std::span<std::byte> out)>;

// ckpt-h5's compressed layout (format-spec/ckpt-h5.md §8): a row-major little-endian tensor cut
// into chunks of `chunk` elements, each stored through a filter pipeline.
struct ChunkedData {
  enum class Filter { shuffle, zstd };
  std::vector<std::uint64_t> chunk;  // chunk dimensions, one per tensor dimension
  std::vector<Filter> filters;       // in the order they were applied when writing
  struct Chunk {
    std::vector<std::uint64_t> origin;  // element offset of the chunk in the tensor
    Extent extent;                      // the stored (filtered) bytes in the source
    std::uint32_t skipped = 0;          // bit k set: filters[k] was not applied to this chunk
  };
  std::vector<Chunk> chunks;  // every chunk of the grid, in row-major order of the grid
  // Largest stored size a chunk may claim (a bound from the filters; checked before reading).
  std::uint64_t max_stored_bytes = 0;
};

// The CRC-32 of a zip entry: of `whole`, the source range that holds a stored entry (and the
// stream in it), or of a decoded stream's bytes, which its decoder checks when it decodes the
// stream's last byte (decoded(decoded_size, {}) decodes all of it to check).
struct StreamCrc {
  std::string what;  // "zip entry 'archive/data/0'", for messages
  Extent whole;
  std::uint32_t expected = 0;
  bool verified = false;  // set once checked
};

struct Location;

// A box of a tensor whose elements have a location of their own: of the tensor's dtype, its shape
// the box's extent, a stream (not tiled itself).
struct Tile {
  std::vector<std::uint64_t> origin;  // element offset of the box in the tensor
  std::shared_ptr<const Location> data;
};

// Reads the region of `sizes` elements at `offsets` into `out` (row-major, little-endian).
using RegionReader = std::function<void(const std::vector<std::uint64_t>& offsets,
                                        const std::vector<std::uint64_t>& sizes, std::span<std::byte> out)>;

struct Location {
  std::shared_ptr<const ByteSource> source;
  DType dtype = DType::float32;
  Shape shape;

  // --- a stream: exactly one of `extents` and `decoded` ---------------------------------------
  // The source's bytes in these ranges, concatenated (usually one range; several for Flax's
  // chunked arrays).
  std::vector<Extent> extents;
  // Or the stream a decoder produces, of `decoded_size` bytes.
  StreamDecoder decoded;
  std::uint64_t decoded_size = 0;
  // The elements in the stream: element [0, ..., 0] at byte `first`; element strides per
  // dimension (empty: row-major contiguous); stored big-endian (delivered little-endian).
  std::uint64_t first = 0;
  std::vector<std::uint64_t> strides;
  bool big_endian = false;

  // A CRC-32 the stream's container records (a zip entry's), checked when checksums are
  // verified (Delivery::crc), once however many tensors share the entry (they share this object).
  std::shared_ptr<StreamCrc> crc;

  // --- or not a stream ---------------------------------------------------------------------
  std::shared_ptr<const ChunkedData> chunked;
  // Tiles that lie inside the tensor, are disjoint and cover it (the format checks the last two
  // when it lists the tensor; delivery checks the rest).
  std::shared_ptr<const std::vector<Tile>> tiles;
  RegionReader read_region;
  // The region reader checks a checksum of the data itself (a compressed chunk of a distributed
  // checkpoint, read whole through its own archive with its CRC-32): verify() counts it.
  bool region_verified = false;

  bool is_stream() const { return !chunked && !tiles && !read_region; }
};

}  // namespace ckpt::detail

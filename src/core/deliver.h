// The one routine that hands a tensor's bytes out, whatever the format: from a Location
// (core/location.h) it makes a zero-copy view, reads with pread, gathers strided elements, swaps
// byte order, decodes streams and compressed chunks, computes the checksum on the way, and cuts
// slices. Formats say where bytes are; only this file moves them, so a tensor's read(), its
// slices and its file span agree by construction.
#pragma once

#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "core/location.h"

namespace ckpt::detail {

struct Delivery {
  bool zero_copy = true;  // views where the bytes lie as they are (one aligned little-endian run)
  bool writable = true;   // views are private copy-on-write mappings (else read-only, shared)
  bool hash = false;      // also compute the XXH3-64 of the whole tensor's bytes
  // Check the location's StreamCrc, if it has one not yet checked: the CRC of the tensor's own
  // bytes is computed as they are read (pread) or from the view, the rest of the entry (a header,
  // other tensors sharing a storage) is read for it; throws integrity on a mismatch.
  bool crc = false;
  unsigned threads = 0;   // decompressing chunks; 0 = one per core
};

// Views of fewer bytes than this are copies instead when they must be writable: a private
// mapping per tensor costs two system calls and counts against the process's mappings.
inline constexpr std::uint64_t kPrivateViewMinBytes = 256u << 10;

struct Delivered {
  Tensor tensor;
  std::optional<std::uint64_t> hash;  // when asked for
};

// Buffers reused from one delivery to the next (a reader keeps one): compressed chunks are read
// and decompressed in them, and fresh buffers per tensor would cost page faults each time.
struct DeliveryScratch {
  struct Slot {
    std::vector<std::byte> raw, plain, unshuffled;
  };
  std::vector<Slot> slots;
};

// Throws format (naming the source) unless every byte the location claims lies in its stream and
// its stream in the source; deliver() calls it.
void check_location(const Location& location);

// The whole tensor.
Delivered deliver(const Location& location, const Delivery& how, DeliveryScratch& scratch);

// The region of `sizes` elements at `offsets` (one of each per dimension), as a tensor of shape
// `sizes`, reading only the bytes the region needs where the layout allows it (a zero-copy view
// when the region is one aligned run of the stream). Throws invalid_argument for a region
// outside the tensor.
Tensor deliver_slice(const Location& location, const std::vector<std::uint64_t>& offsets,
                     const std::vector<std::uint64_t>& sizes, const Delivery& how, DeliveryScratch& scratch);

// Whether reading the whole tensor checks a CRC-32 its container records (its zip entry's, or
// every tile's).
bool carries_crc(const Location& location);

// Where the whole tensor's logical bytes lie verbatim in a file: its descriptor and offset.
std::optional<std::pair<int, std::uint64_t>> file_span(const Location& location);

// Copies the box of `box` elements from `src` (row-major, dims `src_dims`, box at `src_at`) to
// `dst` (dims `dst_dims`, box at `dst_at`), row by row.
void copy_box(const std::byte* src, const std::vector<std::uint64_t>& src_dims, const std::vector<std::uint64_t>& src_at,
              std::byte* dst, const std::vector<std::uint64_t>& dst_dims, const std::vector<std::uint64_t>& dst_at,
              const std::vector<std::uint64_t>& box, std::size_t itemsize);

}  // namespace ckpt::detail

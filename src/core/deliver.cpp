#include "core/deliver.h"

#include <zstd.h>

#include <algorithm>
#include <cstring>

#include "core/chunks.h"
#include "util/bytes.h"
#include "util/checksum.h"
#include "util/parallel.h"

namespace ckpt::detail {
namespace {

// A gather whose elements lie within this many bytes of a file reads them with one pread first;
// beyond it, runs of at least kPreadMinBytes are read with pread and shorter ones (a column of a
// large matrix) are copied from the file's mapping.
constexpr std::uint64_t kWindowMaxBytes = 64u << 20;
constexpr std::uint64_t kPreadMinBytes = 64u << 10;

std::vector<std::uint64_t> dims_of(const Shape& shape) { return {shape.begin(), shape.end()}; }

std::vector<std::uint64_t> row_major(const std::vector<std::uint64_t>& dims) {
  std::vector<std::uint64_t> strides(dims.size(), 1);
  for (std::size_t k = dims.size(); k-- > 1;) strides[k - 1] = strides[k] * std::max<std::uint64_t>(dims[k], 1);
  return strides;
}

std::vector<std::uint64_t> strides_of(const Location& l) {
  return l.strides.empty() ? row_major(dims_of(l.shape)) : l.strides;
}

// Row-major contiguous: no strides given, or the row-major ones (a dimension of size 1 may have
// any stride).
bool contiguous(const Location& l) {
  if (l.strides.empty()) return true;
  std::uint64_t expected = 1;
  for (std::size_t k = l.shape.size(); k-- > 0;) {
    if (l.shape[k] != 1 && l.strides[k] != expected) return false;
    expected *= static_cast<std::uint64_t>(l.shape[k]);
  }
  return true;
}

// Whether a box of `box` elements is one run of a row-major array of `dims` (every dimension after
// the first that is not 1 whole).
bool one_run(const std::vector<std::uint64_t>& box, const std::vector<std::uint64_t>& dims) {
  std::size_t k = 0;
  while (k < box.size() && box[k] == 1) ++k;
  for (++k; k < box.size(); ++k)
    if (box[k] != dims[k]) return false;
  return true;
}

std::uint64_t stream_size(const Location& l) {
  if (l.decoded) return l.decoded_size;
  std::uint64_t total = 0;
  for (const auto& e : l.extents) total += e.length;  // each checked against the source: no overflow
  return total;
}

// Byte-swaps each element (complex numbers one part at a time).
void swap_units(std::span<std::byte> bytes, DType dtype) {
  const std::size_t unit = dtype_is_complex(dtype) ? dtype_size(dtype) / 2 : dtype_size(dtype);
  if (unit == 1) return;
  for (std::size_t i = 0; i + unit <= bytes.size(); i += unit) std::reverse(bytes.begin() + i, bytes.begin() + i + unit);
}

// The bytes of a stream: ranges of the source, or a decoder's output decoded once for a window.
class StreamBytes {
 public:
  explicit StreamBytes(const Location& l) : l_(l) {
    std::uint64_t at = 0;
    for (const auto& e : l.extents) {
      starts_.push_back(at);
      at += e.length;
    }
  }

  // Every read() that follows lies in [lo, hi): a decoded stream decodes just that, and a file
  // reads it at once when it is not too large (copies then never touch the file's mapping).
  void window(std::uint64_t lo, std::uint64_t hi) {
    if (!l_.decoded && (!l_.source->is_file() || hi - lo > kWindowMaxBytes)) return;
    window_lo_ = lo;
    window_.resize(static_cast<std::size_t>(hi - lo));
    if (l_.decoded) l_.decoded(lo, window_);
    else read_stream(lo, window_);
    windowed_ = true;
  }

  void read(std::uint64_t pos, std::span<std::byte> out) {
    if (windowed_) std::memcpy(out.data(), window_.data() + (pos - window_lo_), out.size());
    else read_stream(pos, out);
  }

 private:
  void read_stream(std::uint64_t pos, std::span<std::byte> out) {
    std::size_t k = static_cast<std::size_t>(std::upper_bound(starts_.begin(), starts_.end(), pos) - starts_.begin()) - 1;
    for (std::size_t done = 0; done < out.size(); ++k) {
      const Extent& e = l_.extents[k];
      const std::uint64_t inside = pos + done - starts_[k];
      const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(e.length - inside, out.size() - done));
      const std::span<std::byte> piece = out.subspan(done, n);
      if (n >= kPreadMinBytes || !l_.source->is_file())
        (void)l_.source->read(e.offset + inside, piece);
      else
        std::memcpy(piece.data(), l_.source->bytes().data() + e.offset + inside, n);
      done += n;
    }
  }

  const Location& l_;
  std::vector<std::uint64_t> starts_;  // of each extent in the stream
  bool windowed_ = false;
  std::uint64_t window_lo_ = 0;
  std::vector<std::byte> window_;
};

// Where a region goes: a box at `at` of a row-major array of `dims` (the whole of `bytes` when
// the region is delivered on its own).
struct Target {
  std::byte* bytes;
  std::vector<std::uint64_t> dims, at;
};

// Copies the region's elements of a stream location into `out` (row-major), in runs as long as
// the layout allows: whole rows or more where they are contiguous in the stream and in `out`,
// else single elements. Runs of kPreadMinBytes or more are read straight into place; shorter
// ones (and decoded streams) come from one read of the span they lie in.
void gather(const Location& l, const std::vector<std::uint64_t>& offsets, const std::vector<std::uint64_t>& sizes,
            const Target& out) {
  const std::size_t rank = sizes.size(), itemsize = dtype_size(l.dtype);
  const auto dims = dims_of(l.shape);
  const auto strides = strides_of(l);
  const auto out_strides = row_major(out.dims);
  std::uint64_t run = 1;
  std::size_t outer = rank;
  if (rank > 0 && strides[rank - 1] == 1) {
    std::size_t j = rank - 1;
    run = sizes[j];
    while (j > 0 && sizes[j] == dims[j] && sizes[j] == out.dims[j] && strides[j - 1] == strides[j] * dims[j]) run *= sizes[--j];
    outer = j;
  }
  const std::uint64_t run_bytes = run * itemsize;
  std::uint64_t base = 0, last = 0, out_base = 0;  // element offsets of the region's first and last elements
  std::uint64_t count = 1;                          // runs
  for (std::size_t k = 0; k < rank; ++k) {
    base += offsets[k] * strides[k];
    last += (offsets[k] + sizes[k] - 1) * strides[k];
    out_base += out.at[k] * out_strides[k];
    if (k < outer) count *= sizes[k];
  }
  StreamBytes stream(l);
  // A window pays for many short runs; runs of kPreadMinBytes or more (a region of whole rows, a
  // block of a tensor split by rows) are read straight into place, not copied through one.
  if (l.decoded || run_bytes < kPreadMinBytes) stream.window(l.first + base * itemsize, l.first + (last + 1) * itemsize);
  std::vector<std::uint64_t> index(outer, 0);
  for (std::uint64_t n = 0; n < count; ++n) {
    std::uint64_t element = base, target = out_base;
    for (std::size_t k = 0; k < outer; ++k) {
      element += index[k] * strides[k];
      target += index[k] * out_strides[k];
    }
    stream.read(l.first + element * itemsize,
                std::span<std::byte>(out.bytes + target * itemsize, static_cast<std::size_t>(run_bytes)));
    for (std::size_t k = outer; k-- > 0;) {
      if (++index[k] < sizes[k]) break;
      index[k] = 0;
    }
  }
}

std::uint64_t chunk_bytes(const ChunkedData& c, std::size_t itemsize) {
  std::uint64_t bytes = itemsize;
  for (auto d : c.chunk) bytes *= d;  // bounded by check_location
  return bytes;
}

// Reads, decompresses and unshuffles the chunks that meet the region, on worker threads, and puts
// their part of the region in place; a chunk that is one run of the tensor is decompressed
// straight into it when the whole tensor is read.
void read_chunks(const Location& l, const std::vector<std::uint64_t>& offsets, const std::vector<std::uint64_t>& sizes,
                 std::span<std::byte> out, const Delivery& how, DeliveryScratch& scratch) {
  const ChunkedData& c = *l.chunked;
  const std::size_t itemsize = dtype_size(l.dtype);
  const auto dims = dims_of(l.shape);
  const std::uint64_t expected = chunk_bytes(c, itemsize);
  const bool whole = offsets == std::vector<std::uint64_t>(dims.size(), 0) && sizes == dims;
  const bool runs = chunk_is_one_run(dims, c.chunk);
  std::vector<const ChunkedData::Chunk*> needed;
  for (const auto& chunk : c.chunks) {
    bool meets = true;
    for (std::size_t k = 0; k < dims.size() && meets; ++k)
      meets = chunk.origin[k] < offsets[k] + sizes[k] && chunk.origin[k] + c.chunk[k] > offsets[k];
    if (meets) needed.push_back(&chunk);
  }
  const unsigned workers = static_cast<unsigned>(std::min<std::size_t>(worker_count(how.threads), needed.size()));
  if (scratch.slots.size() < workers) scratch.slots.resize(workers);
  const std::string& name = l.source->name();
  parallel_for(needed.size(), workers, [&](unsigned worker, std::size_t i) {
    const ChunkedData::Chunk& chunk = *needed[i];
    auto where = [&] { return fmt::format("chunk at [{}]", fmt::join(chunk.origin, ", ")); };
    DeliveryScratch::Slot& slot = scratch.slots[worker];
    slot.raw.resize(static_cast<std::size_t>(chunk.extent.length));
    (void)l.source->read(chunk.extent.offset, slot.raw);
    std::span<const std::byte> data = slot.raw;
    std::span<std::byte> in_place;
    if (whole && runs)
      if (const auto start = interior_chunk_start(dims, c.chunk, chunk.origin))
        in_place = out.subspan(static_cast<std::size_t>(*start * itemsize), static_cast<std::size_t>(expected));
    // Undo the filters in reverse order; a set bit in `skipped` means that filter was not applied.
    for (std::size_t k = c.filters.size(); k-- > 0;) {
      if (chunk.skipped & (1u << k)) continue;
      const std::uint32_t below = (1u << k) - 1;  // the filters still to undo after this one
      const bool direct = (chunk.skipped & below) == below && !in_place.empty();
      if (c.filters[k] == ChunkedData::Filter::zstd) {
        const unsigned long long content = ZSTD_getFrameContentSize(data.data(), data.size());
        if (content != expected)
          fail(ErrorCode::format, name, "{}: zstd frame holds {} bytes, expected {}", where(),
               content == ZSTD_CONTENTSIZE_ERROR     ? std::string("an invalid frame, not")
               : content == ZSTD_CONTENTSIZE_UNKNOWN ? std::string("an unknown number of")
                                                     : std::to_string(content),
               expected);
        if (!direct) slot.plain.resize(static_cast<std::size_t>(expected));
        const std::span<std::byte> target = direct ? in_place : std::span<std::byte>(slot.plain);
        const std::size_t n = ZSTD_decompress(target.data(), target.size(), data.data(), data.size());
        if (ZSTD_isError(n) || n != expected)
          fail(ErrorCode::format, name, "{}: zstd data is corrupt ({})", where(),
               ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short");
        data = target;
      } else {
        if (data.size() != expected)
          fail(ErrorCode::format, name, "{} has {} bytes, expected {}", where(), data.size(), expected);
        if (!direct) slot.unshuffled.resize(static_cast<std::size_t>(expected));
        const std::span<std::byte> target = direct ? in_place : std::span<std::byte>(slot.unshuffled);
        unshuffle(data, target, itemsize);
        data = target;
      }
    }
    if (data.size() != expected) fail(ErrorCode::format, name, "{} has {} bytes, expected {}", where(), data.size(), expected);
    if (!in_place.empty() && data.data() == in_place.data()) return;
    std::vector<std::uint64_t> lo(dims.size()), box(dims.size()), in_chunk(dims.size()), in_out(dims.size());
    for (std::size_t k = 0; k < dims.size(); ++k) {
      lo[k] = std::max(chunk.origin[k], offsets[k]);
      box[k] = std::min(chunk.origin[k] + c.chunk[k], offsets[k] + sizes[k]) - lo[k];
      in_chunk[k] = lo[k] - chunk.origin[k];
      in_out[k] = lo[k] - offsets[k];
    }
    copy_box(data.data(), c.chunk, in_chunk, out.data(), sizes, in_out, box, itemsize);
  });
}

void read_tiles(const Location& l, const std::vector<std::uint64_t>& offsets, const std::vector<std::uint64_t>& sizes,
                std::span<std::byte> out, const Delivery& how, DeliveryScratch& scratch);

// The region of any location as a fresh tensor.
Tensor read_region(const Location& l, const std::vector<std::uint64_t>& offsets, const std::vector<std::uint64_t>& sizes,
                   const Delivery& how, DeliveryScratch& scratch) {
  Tensor out = Tensor::uninitialized(l.dtype, Shape(sizes.begin(), sizes.end()));
  if (out.nbytes() == 0) return out;
  if (l.read_region) l.read_region(offsets, sizes, out.mutable_bytes());
  else if (l.chunked) read_chunks(l, offsets, sizes, out.mutable_bytes(), how, scratch);
  else if (l.tiles) read_tiles(l, offsets, sizes, out.mutable_bytes(), how, scratch);
  else gather(l, offsets, sizes, Target{out.mutable_bytes().data(), sizes, std::vector<std::uint64_t>(sizes.size(), 0)});
  if (l.is_stream() && l.big_endian) swap_units(out.mutable_bytes(), l.dtype);
  return out;
}

// A zero-copy tensor of `shape` at source offset `at`, if the options and alignment allow one.
std::optional<Tensor> try_view(const Location& l, std::uint64_t at, const Shape& shape, const Delivery& how) {
  if (!how.zero_copy || !l.source->aligned(at, dtype_size(l.dtype))) return std::nullopt;
  if (!how.writable) return l.source->view(l.dtype, shape, at);
  if (shape_nbytes(l.dtype, shape) < kPrivateViewMinBytes) return std::nullopt;
  return l.source->private_view(l.dtype, shape, at);
}

// The CRC-32 of source bytes [offset, offset + length), continued from `crc`; files are read in
// blocks (no page of the mapping is kept for it).
std::uint32_t crc_of(const ByteSource& source, std::uint64_t offset, std::uint64_t length, std::uint32_t crc) {
  if (length == 0) return crc;
  if (!source.is_file()) {
    source.check_range(offset, length, "zip entry");
    return crc32(crc, source.bytes().subspan(static_cast<std::size_t>(offset), static_cast<std::size_t>(length)));
  }
  std::vector<std::byte> block(static_cast<std::size_t>(std::min<std::uint64_t>(length, 1u << 20)));
  for (std::uint64_t done = 0; done < length;) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(block.size(), length - done));
    crc = static_cast<std::uint32_t>(*source.read(offset + done, std::span(block).first(n), Digest::crc32, crc));
    done += n;
  }
  return crc;
}

void expect_crc(const Location& l, std::uint32_t crc) {
  if (crc != l.crc->expected)
    fail(ErrorCode::integrity, l.source->name(), "{}: CRC-32 {:08x} does not match the stored {:08x}", l.crc->what, crc,
         l.crc->expected);
}

// Whether source bytes [at, at + n) lie in the entry the CRC covers.
bool inside_entry(const Location& l, std::uint64_t at, std::uint64_t n) {
  const Extent& whole = l.crc->whole;
  return at >= whole.offset && at - whole.offset <= whole.length && n <= whole.length - (at - whole.offset);
}

// The tiles that meet the region, each read into its part of `out` (little-endian streams straight
// from the file, row runs in place); with how.crc, the CRC-32 of each tile's zip entry not yet
// checked (how.crc is set only when the whole tensor, so every tile, is read).
void read_tiles(const Location& l, const std::vector<std::uint64_t>& offsets, const std::vector<std::uint64_t>& sizes,
                std::span<std::byte> out, const Delivery& how, DeliveryScratch& scratch) {
  const std::size_t rank = sizes.size(), itemsize = dtype_size(l.dtype);
  for (const Tile& tile : *l.tiles) {
    const Location& t = *tile.data;
    std::vector<std::uint64_t> in_tile(rank), box(rank), at(rank);
    bool meets = true;
    for (std::size_t k = 0; k < rank && meets; ++k) {
      const std::uint64_t lo = std::max(tile.origin[k], offsets[k]);
      const std::uint64_t hi = std::min(tile.origin[k] + static_cast<std::uint64_t>(t.shape[k]), offsets[k] + sizes[k]);
      meets = lo < hi;
      in_tile[k] = lo - tile.origin[k];
      box[k] = meets ? hi - lo : 0;
      at[k] = lo - offsets[k];
    }
    if (!meets) continue;
    const bool check = how.crc && t.crc && !t.crc->verified;
    // A whole tile that is one run of its entry and of `out` (a tensor split along its first
    // dimension): one read, its CRC-32 computed on the way.
    if (check && t.is_stream() && !t.big_endian && t.extents.size() == 1 && contiguous(t) &&
        box == dims_of(t.shape) && one_run(box, sizes)) {
      std::uint64_t start = 0;
      for (std::size_t k = 0; k < rank; ++k) start = start * sizes[k] + at[k];
      const std::uint64_t from = t.extents[0].offset + t.first, n = shape_nbytes(t.dtype, t.shape);
      check_location(t);
      if (inside_entry(t, from, n)) {
        const Extent& whole = t.crc->whole;
        const std::uint32_t before = crc_of(*t.source, whole.offset, from - whole.offset, 0);
        const auto c = static_cast<std::uint32_t>(*t.source->read(
            from, out.subspan(static_cast<std::size_t>(start * itemsize), static_cast<std::size_t>(n)), Digest::crc32, before));
        expect_crc(t, crc_of(*t.source, from + n, whole.offset + whole.length - from - n, c));
        t.crc->verified = true;
        continue;
      }
    }
    if (t.is_stream() && !t.big_endian) {
      gather(t, in_tile, box, Target{out.data(), sizes, at});
    } else {
      const Tensor piece = read_region(t, in_tile, box, how, scratch);
      copy_box(piece.bytes().data(), box, std::vector<std::uint64_t>(rank, 0), out.data(), sizes, at, box, itemsize);
    }
    if (check) {
      if (t.decoded) t.decoded(t.decoded_size, {});
      else expect_crc(t, crc_of(*t.source, t.crc->whole.offset, t.crc->whole.length, 0));
      t.crc->verified = true;
    }
  }
}

}  // namespace

void copy_box(const std::byte* src, const std::vector<std::uint64_t>& src_dims, const std::vector<std::uint64_t>& src_at,
              std::byte* dst, const std::vector<std::uint64_t>& dst_dims, const std::vector<std::uint64_t>& dst_at,
              const std::vector<std::uint64_t>& box, std::size_t itemsize) {
  const std::size_t rank = box.size();
  if (rank == 0) {
    std::memcpy(dst, src, itemsize);
    return;
  }
  for (auto b : box)
    if (b == 0) return;
  const auto src_strides = row_major(src_dims), dst_strides = row_major(dst_dims);
  const std::uint64_t row = box[rank - 1] * itemsize;
  std::vector<std::uint64_t> index(rank - 1, 0);
  while (true) {
    std::uint64_t s = 0, d = 0;
    for (std::size_t k = 0; k < rank; ++k) {
      const std::uint64_t i = k + 1 < rank ? index[k] : 0;
      s += (src_at[k] + i) * src_strides[k];
      d += (dst_at[k] + i) * dst_strides[k];
    }
    std::memcpy(dst + d * itemsize, src + s * itemsize, row);
    std::size_t k = rank - 1;
    while (k-- > 0) {
      if (++index[k] < box[k]) break;
      index[k] = 0;
    }
    if (k == static_cast<std::size_t>(-1)) return;
  }
}

void check_location(const Location& l) {
  const std::string& name = l.source->name();
  const std::uint64_t numel = shape_numel(l.shape);
  const std::size_t itemsize = dtype_size(l.dtype);
  if (l.read_region) return;  // the format's library checks its own reads
  if (l.tiles) {
    std::uint64_t covered = 0;
    for (const Tile& tile : *l.tiles) {
      const Location& t = *tile.data;
      // A stream, or a region its format reads (a compressed chunk of a distributed checkpoint).
      if ((!t.is_stream() && !t.read_region) || t.dtype != l.dtype || t.shape.size() != l.shape.size() ||
          tile.origin.size() != l.shape.size())
        fail(ErrorCode::format, name, "a tile of the tensor is not a {} stream of rank {}", dtype_name(l.dtype), l.shape.size());
      for (std::size_t k = 0; k < l.shape.size(); ++k)
        if (tile.origin[k] > static_cast<std::uint64_t>(l.shape[k]) ||
            static_cast<std::uint64_t>(t.shape[k]) > static_cast<std::uint64_t>(l.shape[k]) - tile.origin[k])
          fail(ErrorCode::format, name, "tile at [{}] of shape {} lies outside shape {}", fmt::join(tile.origin, ", "),
               shape_to_string(t.shape), shape_to_string(l.shape));
      check_location(t);
      const auto sum = checked_add(covered, shape_numel(t.shape));
      if (!sum) fail(ErrorCode::format, name, "tiles hold more elements than the tensor");
      covered = *sum;
    }
    if (covered != numel)
      fail(ErrorCode::format, name, "tiles hold {} elements, the tensor {}", covered, numel);
    return;
  }
  if (l.chunked) {
    const ChunkedData& c = *l.chunked;
    if (c.chunk.size() != l.shape.size())
      fail(ErrorCode::format, name, "chunk rank {} differs from tensor rank {}", c.chunk.size(), l.shape.size());
    std::uint64_t bytes = itemsize, grid = 1;
    for (std::size_t k = 0; k < c.chunk.size(); ++k) {
      const auto m = c.chunk[k] == 0 ? std::nullopt : checked_mul(bytes, c.chunk[k]);
      if (!m || *m > kMaxChunkBytes)
        fail(ErrorCode::format, name, "chunk dims [{}] are invalid or over HDF5's 4 GiB chunk limit",
             fmt::join(c.chunk, ", "));
      bytes = *m;
      grid *= (static_cast<std::uint64_t>(l.shape[k]) + c.chunk[k] - 1) / c.chunk[k];
    }
    if (numel > 0 && c.chunks.size() != grid)
      fail(ErrorCode::format, name, "{} chunks stored, the chunk grid has {}", c.chunks.size(), grid);
    for (const auto& chunk : c.chunks) {
      for (std::size_t k = 0; k < c.chunk.size(); ++k)
        if (chunk.origin.size() != c.chunk.size() || chunk.origin[k] % c.chunk[k] != 0 ||
            chunk.origin[k] >= static_cast<std::uint64_t>(l.shape[k]))
          fail(ErrorCode::format, name, "a chunk lies off the chunk grid");
      if (chunk.extent.length > c.max_stored_bytes)
        fail(ErrorCode::format, name, "chunk at [{}] claims {} bytes, more than a {}-byte chunk needs",
             fmt::join(chunk.origin, ", "), chunk.extent.length, bytes);
      l.source->check_range(chunk.extent.offset, chunk.extent.length, "chunk");
    }
    return;
  }
  for (const auto& e : l.extents) l.source->check_range(e.offset, e.length, "tensor data");
  if (numel == 0) return;
  if (!l.strides.empty() && l.strides.size() != l.shape.size())
    fail(ErrorCode::format, name, "{} strides for a tensor of rank {}", l.strides.size(), l.shape.size());
  // The last byte the elements reach must lie in the stream (overflow-checked).
  const auto strides = strides_of(l);
  std::uint64_t last = 0;
  for (std::size_t k = 0; k < strides.size(); ++k) {
    const auto step = checked_mul(static_cast<std::uint64_t>(l.shape[k] - 1), strides[k]);
    const auto sum = step ? checked_add(last, *step) : std::nullopt;
    if (!sum) fail(ErrorCode::format, name, "the tensor's strides overflow");
    last = *sum;
  }
  const auto end_element = checked_add(last, 1);
  const auto end_bytes = end_element ? checked_mul(*end_element, itemsize) : std::nullopt;
  const auto end = end_bytes ? checked_add(l.first, *end_bytes) : std::nullopt;
  if (!end || *end > stream_size(l))
    fail(ErrorCode::format, name, "the tensor's elements reach byte {} of data that holds {}",
         end ? *end : UINT64_MAX, stream_size(l));
}

Delivered deliver(const Location& l, const Delivery& how, DeliveryScratch& scratch) {
  check_location(l);
  Delivered out;
  const std::uint64_t nbytes = shape_nbytes(l.dtype, l.shape);
  const bool crc = how.crc && l.crc && !l.crc->verified;
  bool crc_checked = false;  // on the way
  if (nbytes == 0) {
    out.tensor = Tensor::zeros(l.dtype, l.shape);
  } else if (l.is_stream() && contiguous(l) && !l.big_endian && (l.extents.size() == 1 || l.decoded)) {
    const std::uint64_t at = l.decoded ? 0 : l.extents[0].offset + l.first;
    if (l.decoded) {
      out.tensor = Tensor::uninitialized(l.dtype, l.shape);
      l.decoded(l.first, out.tensor.mutable_bytes());
      crc_checked = l.first + nbytes == l.decoded_size;  // the decoder checked it at the end
    } else if (auto view = try_view(l, at, l.shape, how)) {
      out.tensor = std::move(*view);
      if (crc && inside_entry(l, at, nbytes)) {  // the entry's bytes before, in and after the view
        const Extent& whole = l.crc->whole;
        std::uint32_t c = crc_of(*l.source, whole.offset, at - whole.offset, 0);
        c = crc32(c, out.tensor.bytes());
        expect_crc(l, crc_of(*l.source, at + nbytes, whole.offset + whole.length - at - nbytes, c));
        crc_checked = true;
      }
    } else {
      out.tensor = Tensor::uninitialized(l.dtype, l.shape);
      if (crc && !how.hash && inside_entry(l, at, nbytes)) {  // computed as the tensor is read
        const Extent& whole = l.crc->whole;
        const std::uint32_t before = crc_of(*l.source, whole.offset, at - whole.offset, 0);
        const auto c = static_cast<std::uint32_t>(*l.source->read(at, out.tensor.mutable_bytes(), Digest::crc32, before));
        expect_crc(l, crc_of(*l.source, at + nbytes, whole.offset + whole.length - at - nbytes, c));
        crc_checked = true;
      } else {
        out.hash = l.source->read(at, out.tensor.mutable_bytes(), how.hash);
      }
    }
  } else {
    out.tensor = read_region(l, std::vector<std::uint64_t>(l.shape.size(), 0), dims_of(l.shape), how, scratch);
  }
  if (crc && !crc_checked) {  // the whole entry, read again for it
    if (l.decoded) l.decoded(l.decoded_size, {});
    else expect_crc(l, crc_of(*l.source, l.crc->whole.offset, l.crc->whole.length, 0));
  }
  if (crc) l.crc->verified = true;
  if (how.hash && !out.hash) out.hash = xxh3_64(out.tensor.bytes());
  return out;
}

Tensor deliver_slice(const Location& l, const std::vector<std::uint64_t>& offsets,
                     const std::vector<std::uint64_t>& sizes, const Delivery& how, DeliveryScratch& scratch) {
  check_location(l);
  const auto dims = dims_of(l.shape);
  if (offsets.size() != dims.size() || sizes.size() != dims.size())
    fail(ErrorCode::invalid_argument, l.source->name(), "a slice of a rank-{} tensor needs {} offsets and sizes, got {} and {}",
         dims.size(), dims.size(), offsets.size(), sizes.size());
  for (std::size_t k = 0; k < dims.size(); ++k)
    if (offsets[k] > dims[k] || sizes[k] > dims[k] - offsets[k])
      fail(ErrorCode::invalid_argument, l.source->name(), "slice at [{}] of sizes [{}] lies outside shape {}",
           fmt::join(offsets, ", "), fmt::join(sizes, ", "), shape_to_string(l.shape));
  const Shape shape(sizes.begin(), sizes.end());
  if (shape_numel(shape) == 0) return Tensor::zeros(l.dtype, shape);
  // One run of a single-range stream: zero-copy when aligned.
  if (l.is_stream() && l.extents.size() == 1 && !l.big_endian && contiguous(l)) {
    std::size_t first_partial = 0;  // the region is one run if only its first non-1 dimension is partial
    while (first_partial < dims.size() && sizes[first_partial] == 1) ++first_partial;
    bool one_run = true;
    for (std::size_t k = first_partial + 1; k < dims.size(); ++k) one_run = one_run && sizes[k] == dims[k];
    if (one_run) {
      const auto strides = row_major(dims);
      std::uint64_t element = 0;
      for (std::size_t k = 0; k < dims.size(); ++k) element += offsets[k] * strides[k];
      if (auto view = try_view(l, l.extents[0].offset + l.first + element * dtype_size(l.dtype), shape, how))
        return std::move(*view);
    }
  }
  return read_region(l, offsets, sizes, how, scratch);
}

std::optional<std::pair<int, std::uint64_t>> file_span(const Location& l) {
  if (!l.is_stream() || l.extents.size() != 1 || l.big_endian || !contiguous(l) || !l.source->is_file() ||
      shape_nbytes(l.dtype, l.shape) == 0)
    return std::nullopt;
  check_location(l);
  return std::pair{l.source->fd(), l.source->file_offset(l.extents[0].offset + l.first)};
}

bool carries_crc(const Location& location) {
  if (location.crc || location.region_verified) return true;
  if (!location.tiles || location.tiles->empty()) return false;
  return std::all_of(location.tiles->begin(), location.tiles->end(),
                     [](const Tile& t) { return t.data->crc != nullptr || t.data->region_verified; });
}

}  // namespace ckpt::detail

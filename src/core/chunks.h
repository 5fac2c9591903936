// Chunk geometry and the byte-shuffle transform of compressed chunks (ckpt-h5 §8): shared by the
// ckpt-h5 writer and the delivery of chunked data (core/deliver.h).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

namespace ckpt::detail {

// HDF5 limits one chunk to 4 GiB.
inline constexpr std::uint64_t kMaxChunkBytes = 0xffffffffull;

// Chunk dims for a tensor: whole trailing dimensions while they fit in `target_bytes`, a part of
// the next one, 1 for the rest, so each chunk is one contiguous run of the row-major bytes.
std::vector<std::uint64_t> choose_chunk(const std::vector<std::uint64_t>& shape, std::size_t itemsize,
                                        std::uint64_t target_bytes);

// Element offsets of every chunk of a dataset, in row-major order of the chunk grid.
std::vector<std::vector<std::uint64_t>> chunk_origins(const std::vector<std::uint64_t>& shape,
                                                      const std::vector<std::uint64_t>& chunk);

// Whether every chunk of these dims that lies wholly inside the tensor is one contiguous run of
// its row-major elements: 1 in the leading dimensions, then any extent in one dimension, then
// whole dimensions (as choose_chunk makes them). Other chunkings (h5py's automatic ones, say)
// interleave with their neighbours and must be scattered row by row.
bool chunk_is_one_run(const std::vector<std::uint64_t>& shape, const std::vector<std::uint64_t>& chunk);

// Row-major index of the first element of the chunk at `origin` when the chunk is one contiguous
// run of the tensor (chunk_is_one_run, and the chunk lies wholly inside the tensor). nullopt
// otherwise: an edge chunk (padded) or a chunking whose chunks are not runs.
std::optional<std::uint64_t> interior_chunk_start(const std::vector<std::uint64_t>& shape,
                                                  const std::vector<std::uint64_t>& chunk,
                                                  const std::vector<std::uint64_t>& origin);

// HDF5's shuffle filter (id 2): byte k of element i goes to position k * n + i. Hand-written
// because we compress chunks ourselves (H5Dwrite_chunk) and must produce exactly HDF5's bytes.
void shuffle(std::span<const std::byte> in, std::span<std::byte> out, std::size_t itemsize);
void unshuffle(std::span<const std::byte> in, std::span<std::byte> out, std::size_t itemsize);

// Copy between a full chunk buffer and the tensor (row-major `shape`): the part of the chunk at
// `origin` that lies inside the tensor. Edge chunks are padded (to_chunk zero-fills).
void copy_chunk_to_tensor(std::span<const std::byte> chunk_data, std::span<std::byte> tensor,
                          const std::vector<std::uint64_t>& shape, const std::vector<std::uint64_t>& chunk,
                          const std::vector<std::uint64_t>& origin, std::size_t itemsize);
void copy_tensor_to_chunk(std::span<const std::byte> tensor, std::span<std::byte> chunk_data,
                          const std::vector<std::uint64_t>& shape, const std::vector<std::uint64_t>& chunk,
                          const std::vector<std::uint64_t>& origin, std::size_t itemsize);

}  // namespace ckpt::detail

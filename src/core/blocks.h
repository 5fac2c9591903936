// Boxes of a tensor (element offsets and sizes per dimension) and the per-block checksums of
// ckpt-h5 1.1 (format-spec/ckpt-h5.md §7.1): a tensor written in pieces by many processes
// carries one XXH3-64 per piece, each computable by the process that holds the piece.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ckpt/tensor.h"

namespace ckpt::detail {

struct Box {
  std::vector<std::uint64_t> offsets, sizes;
};

// The checksum of one block: the XXH3-64 of the block's elements in row-major order of the block
// itself (as if it were a tensor of shape `box.sizes`), little-endian.
struct BlockChecksum {
  Box box;
  std::uint64_t xxh3 = 0;
};

// Number of elements (1 for rank 0); nullopt on overflow.
std::optional<std::uint64_t> box_volume(const Box& box);
// Whether the box has the tensor's rank and lies inside it.
bool box_inside(const Box& box, const Shape& shape);
// The common part of two boxes of one rank, or nullopt when they share no element.
std::optional<Box> box_intersection(const Box& a, const Box& b);
// "[0:4, 2:3]"
std::string box_to_string(const Box& box);

// The first two boxes found to share an element (indices into `boxes`), or nullopt. Boxes are
// swept dimension by dimension (a regular tiling, a grid of any rank, costs O(B log B)); boxes
// whose intervals overlap without being equal are compared pairwise, each comparison taking one
// from `budget`, and when none is left `exhausted` is set and nullopt returned: hostile input
// cannot make the check quadratic.
// The comparisons a reader allows find_overlap for all the tensors of one file (spec §7.1).
inline constexpr std::uint64_t kOverlapBudget = 1u << 26;

std::optional<std::pair<std::size_t, std::size_t>> find_overlap(const std::vector<Box>& boxes, std::uint64_t& budget,
                                                                bool& exhausted);

// The XXH3-64 of box `box` of a row-major tensor of dims `dims` held at `data` (items of
// `itemsize` bytes), hashed row run by row run, without a copy.
std::uint64_t hash_box(const std::byte* data, const std::vector<std::uint64_t>& dims, const Box& box,
                       std::size_t itemsize);

}  // namespace ckpt::detail

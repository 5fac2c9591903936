#include "core/blocks.h"

#include <algorithm>
#include <numeric>

#include <fmt/format.h>
#include <xxhash.h>

#include "util/bytes.h"

namespace ckpt::detail {

std::optional<std::uint64_t> box_volume(const Box& box) {
  std::uint64_t n = 1;
  for (auto s : box.sizes) {
    const auto m = checked_mul(n, s);
    if (!m) return std::nullopt;
    n = *m;
  }
  return n;
}

bool box_inside(const Box& box, const Shape& shape) {
  if (box.offsets.size() != shape.size() || box.sizes.size() != shape.size()) return false;
  for (std::size_t k = 0; k < shape.size(); ++k) {
    const auto d = static_cast<std::uint64_t>(shape[k]);
    if (box.offsets[k] > d || box.sizes[k] > d - box.offsets[k]) return false;
  }
  return true;
}

std::optional<Box> box_intersection(const Box& a, const Box& b) {
  Box out;
  for (std::size_t k = 0; k < a.offsets.size(); ++k) {
    const std::uint64_t lo = std::max(a.offsets[k], b.offsets[k]);
    const std::uint64_t hi = std::min(a.offsets[k] + a.sizes[k], b.offsets[k] + b.sizes[k]);
    if (hi <= lo) return std::nullopt;
    out.offsets.push_back(lo);
    out.sizes.push_back(hi - lo);
  }
  return out;
}

std::string box_to_string(const Box& box) {
  std::string out = "[";
  for (std::size_t k = 0; k < box.offsets.size(); ++k)
    out += fmt::format("{}{}:{}", k ? ", " : "", box.offsets[k], box.offsets[k] + box.sizes[k]);
  return out + "]";
}

namespace {

// Overlap among `ids`, which agree on dimensions [0, dim): sorted by their interval along `dim`,
// boxes with the very same interval are checked among themselves on the next dimension (a tiling
// of any rank costs O(B log B) so), and groups whose intervals overlap without being equal are
// compared box by box, each comparison taking one from `budget`.
std::optional<std::pair<std::size_t, std::size_t>> overlap_from(const std::vector<Box>& boxes, std::vector<std::size_t> ids,
                                                                std::size_t dim, std::uint64_t& budget, bool& exhausted) {
  if (ids.size() < 2) return std::nullopt;
  const std::size_t rank = boxes[ids[0]].offsets.size();
  if (dim == rank) return std::pair(std::min(ids[0], ids[1]), std::max(ids[0], ids[1]));  // equal boxes
  std::sort(ids.begin(), ids.end(), [&](std::size_t a, std::size_t b) {
    return std::pair(boxes[a].offsets[dim], boxes[a].sizes[dim]) < std::pair(boxes[b].offsets[dim], boxes[b].sizes[dim]);
  });
  struct Group {
    std::uint64_t begin, end;
    std::vector<std::size_t> ids;
  };
  std::vector<Group> active;  // groups whose interval reaches the current start
  for (std::size_t i = 0; i < ids.size();) {
    const Box& first = boxes[ids[i]];
    Group g{first.offsets[dim], first.offsets[dim] + first.sizes[dim], {}};
    while (i < ids.size() && boxes[ids[i]].offsets[dim] == g.begin && boxes[ids[i]].sizes[dim] == g.end - g.begin)
      g.ids.push_back(ids[i++]);
    if (const auto found = overlap_from(boxes, g.ids, dim + 1, budget, exhausted); found || exhausted) return found;
    std::erase_if(active, [&](const Group& a) { return a.end <= g.begin; });
    for (const auto& a : active)
      for (auto x : a.ids)
        for (auto y : g.ids) {
          if (budget == 0) {
            exhausted = true;
            return std::nullopt;
          }
          --budget;
          if (box_intersection(boxes[x], boxes[y])) return std::pair(std::min(x, y), std::max(x, y));
        }
    active.push_back(std::move(g));
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::pair<std::size_t, std::size_t>> find_overlap(const std::vector<Box>& boxes, std::uint64_t& budget,
                                                                bool& exhausted) {
  exhausted = false;
  // Empty boxes share no element with anything.
  std::vector<std::size_t> ids;
  for (std::size_t i = 0; i < boxes.size(); ++i)
    if (std::none_of(boxes[i].sizes.begin(), boxes[i].sizes.end(), [](auto s) { return s == 0; })) ids.push_back(i);
  return overlap_from(boxes, std::move(ids), 0, budget, exhausted);
}

std::uint64_t hash_box(const std::byte* data, const std::vector<std::uint64_t>& dims, const Box& box,
                       std::size_t itemsize) {
  XXH3_state_t* state = XXH3_createState();
  if (!state) throw std::bad_alloc();
  XXH3_64bits_reset(state);
  const std::size_t rank = dims.size();
  bool empty = false;
  for (auto s : box.sizes) empty = empty || s == 0;
  if (rank == 0) {
    XXH3_64bits_update(state, data, itemsize);
  } else if (!empty) {
    // The box's runs: trailing dimensions it covers whole merge into one run with the last one
    // it does not.
    std::size_t k = rank - 1;
    while (k > 0 && box.offsets[k] == 0 && box.sizes[k] == dims[k]) --k;
    std::vector<std::uint64_t> strides(rank, 1);
    for (std::size_t d = rank - 1; d > 0; --d) strides[d - 1] = strides[d] * dims[d];
    const std::uint64_t run = box.sizes[k] * strides[k] * itemsize;
    std::vector<std::uint64_t> index(k, 0);  // position in the outer dimensions 0..k-1
    while (true) {
      std::uint64_t at = box.offsets[k] * strides[k];
      for (std::size_t d = 0; d < k; ++d) at += (box.offsets[d] + index[d]) * strides[d];
      XXH3_64bits_update(state, data + at * itemsize, run);
      std::size_t d = k;
      while (d > 0 && ++index[d - 1] == box.sizes[d - 1]) index[--d] = 0;
      if (d == 0) break;
    }
  }
  const std::uint64_t h = XXH3_64bits_digest(state);
  XXH3_freeState(state);
  return h;
}

}  // namespace ckpt::detail

#include "core/blocks.h"

#include <algorithm>
#include <numeric>
#include <set>

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

std::optional<std::pair<std::size_t, std::size_t>> find_overlap(const std::vector<Box>& boxes, std::uint64_t& budget,
                                                                bool& exhausted) {
  exhausted = false;
  if (boxes.size() < 2) return std::nullopt;
  const std::size_t rank = boxes[0].offsets.size();
  // Empty boxes share no element with anything.
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < boxes.size(); ++i)
    if (std::none_of(boxes[i].sizes.begin(), boxes[i].sizes.end(), [](auto s) { return s == 0; })) order.push_back(i);
  if (rank == 0) {
    if (order.size() >= 2) return std::pair(order[0], order[1]);
    return std::nullopt;
  }
  // Sweep along the dimension whose starts differ most: tensors split along one dimension then
  // compare each block with its neighbours only.
  std::size_t dim = 0, most = 0;
  for (std::size_t k = 0; k < rank; ++k) {
    std::set<std::uint64_t> starts;
    for (auto i : order) starts.insert(boxes[i].offsets[k]);
    if (starts.size() > most) most = starts.size(), dim = k;
  }
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return boxes[a].offsets[dim] < boxes[b].offsets[dim]; });
  std::vector<std::size_t> active;  // boxes whose extent along `dim` reaches the current start
  for (auto i : order) {
    const std::uint64_t start = boxes[i].offsets[dim];
    std::erase_if(active, [&](std::size_t a) { return boxes[a].offsets[dim] + boxes[a].sizes[dim] <= start; });
    for (auto a : active) {
      if (budget == 0) {
        exhausted = true;
        return std::nullopt;
      }
      --budget;
      if (box_intersection(boxes[a], boxes[i])) return std::pair(std::min(a, i), std::max(a, i));
    }
    active.push_back(i);
  }
  return std::nullopt;
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

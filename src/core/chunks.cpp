#include "core/chunks.h"

#include <algorithm>
#include <cstring>
#include <type_traits>

namespace ckpt::detail {

std::vector<std::uint64_t> choose_chunk(const std::vector<std::uint64_t>& shape, std::size_t itemsize,
                                        std::uint64_t target_bytes) {
  std::vector<std::uint64_t> chunk(shape.size(), 1);
  std::uint64_t bytes = itemsize;
  for (std::size_t k = shape.size(); k-- > 0;) {
    if (bytes * shape[k] <= target_bytes) {
      chunk[k] = shape[k];
      bytes *= shape[k];
      continue;
    }
    chunk[k] = std::max<std::uint64_t>(1, target_bytes / bytes);
    break;
  }
  return chunk;
}

bool chunk_is_one_run(const std::vector<std::uint64_t>& shape, const std::vector<std::uint64_t>& chunk) {
  // 1 in every dimension before the first that is not, whole dimensions after it.
  std::size_t k = 0;
  while (k < chunk.size() && chunk[k] == 1) ++k;
  for (std::size_t j = k + 1; j < chunk.size(); ++j)
    if (chunk[j] != shape[j]) return false;
  return true;
}

std::optional<std::uint64_t> interior_chunk_start(const std::vector<std::uint64_t>& shape,
                                                  const std::vector<std::uint64_t>& chunk,
                                                  const std::vector<std::uint64_t>& origin) {
  if (!chunk_is_one_run(shape, chunk)) return std::nullopt;
  std::uint64_t first = 0;
  for (std::size_t k = 0; k < shape.size(); ++k) {
    if (origin[k] + chunk[k] > shape[k]) return std::nullopt;
    first = first * shape[k] + origin[k];
  }
  return first;
}

std::vector<std::vector<std::uint64_t>> chunk_origins(const std::vector<std::uint64_t>& shape,
                                                      const std::vector<std::uint64_t>& chunk) {
  std::vector<std::vector<std::uint64_t>> origins;
  std::vector<std::uint64_t> origin(shape.size(), 0);
  for (std::size_t k = 0; k < shape.size(); ++k)
    if (shape[k] == 0) return origins;
  while (true) {
    origins.push_back(origin);
    std::size_t k = shape.size();
    while (k-- > 0) {
      origin[k] += chunk[k];
      if (origin[k] < shape[k]) break;
      origin[k] = 0;
    }
    if (k == static_cast<std::size_t>(-1)) return origins;
  }
}

namespace {

// Item size as a template parameter lets the compiler unroll and vectorize the transposition.
template <std::size_t Size>
void shuffle_items(const std::byte* in, std::byte* out, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t b = 0; b < Size; ++b) out[b * n + i] = in[i * Size + b];
}

template <std::size_t Size>
void unshuffle_items(const std::byte* in, std::byte* out, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i)
    for (std::size_t b = 0; b < Size; ++b) out[i * Size + b] = in[b * n + i];
}

template <bool Forward>
void transpose(std::span<const std::byte> in, std::span<std::byte> out, std::size_t itemsize) {
  const std::size_t n = in.size() / itemsize;
  auto run = [&](auto size) {
    if constexpr (Forward) shuffle_items<decltype(size)::value>(in.data(), out.data(), n);
    else unshuffle_items<decltype(size)::value>(in.data(), out.data(), n);
  };
  switch (itemsize) {
    case 1: std::memcpy(out.data(), in.data(), in.size()); return;
    case 2: run(std::integral_constant<std::size_t, 2>{}); break;
    case 4: run(std::integral_constant<std::size_t, 4>{}); break;
    case 8: run(std::integral_constant<std::size_t, 8>{}); break;
    case 16: run(std::integral_constant<std::size_t, 16>{}); break;
    default:
      for (std::size_t i = 0; i < n; ++i)
        for (std::size_t b = 0; b < itemsize; ++b) {
          if constexpr (Forward) out[b * n + i] = in[i * itemsize + b];
          else out[i * itemsize + b] = in[b * n + i];
        }
  }
  const std::size_t tail = n * itemsize;  // HDF5 leaves a partial trailing element as it is
  std::memcpy(out.data() + tail, in.data() + tail, in.size() - tail);
}

}  // namespace

void shuffle(std::span<const std::byte> in, std::span<std::byte> out, std::size_t itemsize) {
  transpose<true>(in, out, itemsize);
}

void unshuffle(std::span<const std::byte> in, std::span<std::byte> out, std::size_t itemsize) {
  transpose<false>(in, out, itemsize);
}

namespace {

// Visit every innermost row of the chunk that lies inside the tensor:
// fn(byte offset in chunk, byte offset in tensor, bytes in the row).
template <typename Fn>
void for_each_row(const std::vector<std::uint64_t>& shape, const std::vector<std::uint64_t>& chunk,
                  const std::vector<std::uint64_t>& origin, std::size_t itemsize, Fn&& fn) {
  const std::size_t rank = shape.size();
  if (rank == 0) {
    fn(0, 0, itemsize);
    return;
  }
  const std::uint64_t row = std::min(chunk[rank - 1], shape[rank - 1] - origin[rank - 1]) * itemsize;
  std::vector<std::uint64_t> index(rank, 0);  // position inside the chunk, last dim fixed at 0
  while (true) {
    bool inside = true;
    std::uint64_t chunk_offset = 0, tensor_offset = 0;
    for (std::size_t k = 0; k < rank; ++k) {
      if (origin[k] + index[k] >= shape[k]) inside = false;
      chunk_offset = chunk_offset * chunk[k] + index[k];
      tensor_offset = tensor_offset * shape[k] + origin[k] + index[k];
    }
    if (inside) fn(chunk_offset * itemsize, tensor_offset * itemsize, row);
    std::size_t k = rank - 1;
    while (k-- > 0) {
      if (++index[k] < chunk[k]) break;
      index[k] = 0;
    }
    if (k == static_cast<std::size_t>(-1)) return;
  }
}

}  // namespace

void copy_chunk_to_tensor(std::span<const std::byte> chunk_data, std::span<std::byte> tensor,
                          const std::vector<std::uint64_t>& shape, const std::vector<std::uint64_t>& chunk,
                          const std::vector<std::uint64_t>& origin, std::size_t itemsize) {
  for_each_row(shape, chunk, origin, itemsize, [&](std::uint64_t c, std::uint64_t t, std::uint64_t n) {
    std::memcpy(tensor.data() + t, chunk_data.data() + c, n);
  });
}

void copy_tensor_to_chunk(std::span<const std::byte> tensor, std::span<std::byte> chunk_data,
                          const std::vector<std::uint64_t>& shape, const std::vector<std::uint64_t>& chunk,
                          const std::vector<std::uint64_t>& origin, std::size_t itemsize) {
  std::memset(chunk_data.data(), 0, chunk_data.size());
  for_each_row(shape, chunk, origin, itemsize, [&](std::uint64_t c, std::uint64_t t, std::uint64_t n) {
    std::memcpy(chunk_data.data() + c, tensor.data() + t, n);
  });
}

}  // namespace ckpt::detail

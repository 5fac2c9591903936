// The Flax writer with its chunk size as a parameter (tests use small chunks to exercise the
// chunked form flax uses beyond 2**30 bytes).
#pragma once

#include <cstdint>
#include <filesystem>

#include "ckpt/io.h"

namespace ckpt::detail::flax {

inline constexpr std::uint64_t kMaxChunkBytes = 1ull << 30;  // flax's MAX_CHUNK_SIZE

void write(Source& source, const std::filesystem::path& path, const WriteOptions& options, std::uint64_t max_chunk_bytes);

}  // namespace ckpt::detail::flax

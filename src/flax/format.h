// The flax folder's entry points for the rest of ckpt.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>

#include "core/format_reader.h"

namespace ckpt::detail::flax {

// A msgpack map whose first key is a string.
bool sniff(std::span<const std::byte> head, std::uint64_t file_size);
std::unique_ptr<FormatReader> open_reader(std::shared_ptr<const ByteSource> source, const ReadOptions& options);

inline constexpr std::uint64_t kMaxChunkBytes = 1ull << 30;  // flax's MAX_CHUNK_SIZE
// The writer with its chunk size as a parameter (tests use small chunks to exercise the chunked
// form flax uses beyond 2**30 bytes).
void write(Source& source, const std::filesystem::path& path, const WriteOptions& options, std::uint64_t max_chunk_bytes);

}  // namespace ckpt::detail::flax

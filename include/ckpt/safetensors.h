// safetensors (huggingface): u64 little-endian header length, a JSON header, then the data.
// Roles survive through `__metadata__` by the convention in format-spec/conventions.md; a file
// without it gets inferred roles (BufferRule in ckpt/roles.h; format-spec/conventions.md §1).
#pragma once

#include "ckpt/api.h"

#include <filesystem>
#include <memory>

#include "ckpt/io.h"

CKPT_API_BEGIN

namespace ckpt {

std::unique_ptr<Reader> open_safetensors(const std::filesystem::path& path,
                                         const ReadOptions& options = {});
// Fails before creating any file if a tensor's dtype has no safetensors code (complex128).
void write_safetensors(Source& source, const std::filesystem::path& path,
                       const WriteOptions& options = {});

// Sharded safetensors (huggingface): an index `NAME.safetensors.index.json` holding
// {"metadata": {"total_size": N, ...}, "weight_map": {tensor: shard file}} beside shards
// `NAME-00001-of-0000K.safetensors`. The reader opens the index and presents every shard's
// tensors as one checkpoint (shards in file-name order, tensors in file order); shard names must
// be plain file names in the index's directory. Roles come from the shards (ckpt's convention)
// or are inferred.
std::unique_ptr<Reader> open_safetensors_index(const std::filesystem::path& index_path,
                                               const ReadOptions& options = {});

// Writes `path` (NAME.safetensors, or NAME.safetensors.index.json) as shards of at most
// options.max_shard_bytes plus the index; when everything fits in one shard, a single
// NAME.safetensors and no index, as huggingface does. Shards written before a failure are
// removed.
void write_safetensors_sharded(Source& source, const std::filesystem::path& path, const WriteOptions& options = {});

}  // namespace ckpt

CKPT_API_END

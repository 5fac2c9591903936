// The safetensors folder's entry points for the rest of ckpt: its readers (single files and
// huggingface's sharded form) and what its writers keep.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "ckpt/io.h"
#include "core/format_reader.h"

namespace ckpt::detail {
class AtomicFile;
}

namespace ckpt::detail::safetensors {

std::unique_ptr<FormatReader> open_reader(std::shared_ptr<const ByteSource> source, const ReadOptions& options);
// NAME.safetensors.index.json and the shards it names (beside it: files only).
std::unique_ptr<FormatReader> open_index_reader(std::shared_ptr<const ByteSource> source, const ReadOptions& options);

// The tensors a safetensors file holds: all but non-persistent buffers, which a state_dict leaves
// out (load_state_dict(strict=True) refuses them); those are named through options.notice.
std::vector<std::size_t> kept_tensors(const Source& source, const WriteOptions& options, const std::string& file);

// Writes `source` (all of it: the caller chose what is kept) as a safetensors file into `file`,
// not committed; `name` labels errors. Returns the XXH3-64 of the file's header (its length
// field and JSON), which names every tensor, its place and (with options.checksums) its checksum.
std::uint64_t write_into(Source& source, AtomicFile& file, const WriteOptions& options, const std::string& name);

}  // namespace ckpt::detail::safetensors

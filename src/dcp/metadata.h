// The `.metadata` file of a PyTorch distributed checkpoint (torch.distributed.checkpoint, and
// torch.distributed._shard.checkpoint before it): one pickle of a Metadata dataclass, read as
// data. The pickle is parsed by ckpt's pickle reader, which runs nothing, and then walked against
// an allow-list of the classes DCP pickles (Metadata, TensorStorageMetadata, TensorProperties,
// ChunkStorageMetadata, BytesStorageMetadata, MetadataIndex, _StorageInfo, StorageMeta, in
// either module), torch.Size, dtypes, the strided layout and the memory-format enum
// (builtins.getattr on that enum class only). Anything else is refused.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "ckpt/dtype.h"
#include "ckpt/options.h"
#include "ckpt/state_dict.h"

namespace ckpt::detail::dcp {

// Where an item's bytes are (_StorageInfo): [offset, offset + length) of a file of the
// checkpoint's directory, written through `transforms` (torch's stream extensions, such as
// "stream.zstd/1"; the first is undone first).
struct Storage {
  std::string file;
  std::uint64_t offset = 0, length = 0;
  std::vector<std::string> transforms;
};

// A box of a tensor saved on its own (ChunkStorageMetadata and its _StorageInfo).
struct Chunk {
  std::vector<std::uint64_t> offsets, sizes;
  Storage storage;
};

// A key of the saved state: the place it had in the nested state_dict (Metadata.planner_data of
// a flattened state: ("optim", "param_groups", 0, "lr")), dict keys as strings and list indices
// as numbers; or the key itself when the state was not flattened.
using PathPart = std::variant<std::string, std::uint64_t>;

struct Item {
  std::string fqn;
  std::vector<PathPart> path;
  bool tensor = false;
  // Tensors (TensorStorageMetadata): dtype, size and chunks, in the order they were listed.
  DType dtype = DType::float32;
  std::vector<std::uint64_t> size;
  std::vector<Chunk> chunks;
  // Values (BytesStorageMetadata): one torch.save of the value.
  Storage storage;
};

struct Checkpoint {
  std::vector<Item> items;  // in the order of state_dict_metadata
  bool flattened = false;   // planner_data gave every item its path
  std::string version;      // Metadata.version ("1.0.0"), empty when absent
  Metadata storage_meta;    // Metadata.storage_meta as JSON (null when absent)
  std::vector<std::string> notes;
};

// Parses `bytes`, the .metadata file named `name` in messages. Throws format (not a DCP
// metadata pickle, inconsistent), unsupported (a callable or class outside the allow-list, a
// layout or version ckpt does not read). Chunks are not yet checked against each other or the
// files (reader.cpp does that).
Checkpoint parse_metadata(std::span<const std::byte> bytes, const std::string& name, const ReadOptions& options);

}  // namespace ckpt::detail::dcp

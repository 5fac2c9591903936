// PyTorch distributed checkpoints (DCP: torch.distributed.checkpoint, and
// torch.distributed._shard.checkpoint in torch 1.13), read on one process without torch: a
// directory holding `.metadata` (a pickle of DCP's Metadata, read as data, never run) and the data
// files it names (`__<rank>_<n>.distcp`), each item a small torch.save archive at a byte range.
// Tensors are assembled from the chunks the ranks saved, one tensor at a time; slices read only
// the chunks they meet. Keys flattened by torch 2.x (planner_data) keep their nesting: the model
// and the other sections (optimizer state) are told apart as in .pt checkpoints, and values that
// are not tensors become metadata when they are plain data (format-spec/conventions.md §8).
#pragma once

#include "ckpt/api.h"

#include <filesystem>
#include <memory>
#include <string_view>

#include "ckpt/io.h"

CKPT_API_BEGIN

namespace ckpt {

// The metadata key under which the reader records what DCP's Metadata says of the checkpoint
// itself: {"version": "1.0.0" or null, "storage_meta": {"checkpoint_id": ..., "save_id": ...}}.
inline constexpr std::string_view kDcpMetadataKey = "ckpt.dcp";

// `path`: the checkpoint's directory or its `.metadata` file.
std::unique_ptr<Reader> open_dcp(const std::filesystem::path& path, const ReadOptions& options = {});

}  // namespace ckpt

CKPT_API_END

// The dcp folder's entry points for the rest of ckpt: PyTorch distributed checkpoints, read only.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "core/format_reader.h"

namespace ckpt::detail::dcp {

// A pickle whose first global is DCP's Metadata class (a checkpoint's `.metadata`).
bool sniff(std::span<const std::byte> head, std::uint64_t file_size);
// `source` is the `.metadata` file; the data files are read from its directory.
std::unique_ptr<FormatReader> open_reader(std::shared_ptr<const ByteSource> source, const ReadOptions& options);

}  // namespace ckpt::detail::dcp

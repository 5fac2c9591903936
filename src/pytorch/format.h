// The pytorch folder's entry points for the rest of ckpt.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "core/format_reader.h"

namespace ckpt::detail::pytorch {

// A zip whose first entry lies in one folder as torch.save and torch.jit.save write them, or the
// legacy format's pickled magic number.
bool sniff(std::span<const std::byte> head, std::uint64_t file_size);
std::unique_ptr<FormatReader> open_reader(std::shared_ptr<const ByteSource> source, const ReadOptions& options);

}  // namespace ckpt::detail::pytorch

// The ckpt_h5 folder's entry points for the rest of ckpt.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "core/format_reader.h"

namespace ckpt::detail::ckpt_h5 {

// Opens a ckpt-h5 file; a checkpoint given in memory is copied into an anonymous memory file
// first (HDF5 and the isolation helper open files by path).
std::unique_ptr<FormatReader> open_reader(std::shared_ptr<const ByteSource> source, const ReadOptions& options);

}  // namespace ckpt::detail::ckpt_h5

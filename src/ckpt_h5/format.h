// The ckpt_h5 folder's entry points for the rest of ckpt.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "core/format_reader.h"

namespace ckpt::detail::ckpt_h5 {

// Opens a ckpt-h5 file, or a checkpoint held in memory (read in place through ckpt's HDF5 file driver).
std::unique_ptr<FormatReader> open_reader(std::shared_ptr<const ByteSource> source, const ReadOptions& options);

}  // namespace ckpt::detail::ckpt_h5

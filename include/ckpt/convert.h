// Any supported format to any other, streaming one tensor at a time.
#pragma once

#include "ckpt/api.h"

#include <filesystem>
#include <optional>

#include "ckpt/io.h"
#include "ckpt/layout.h"

CKPT_API_BEGIN

namespace ckpt {

struct ConvertOptions {
  ReadOptions read;
  WriteOptions write;
  std::optional<LayoutOptions> layout;       // map between torch and Flax layouts on the way
  LayoutReport* layout_report = nullptr;     // receives what the mapping dropped or left
};

// Reads `input` (format by content) and writes `output` (format from options.write.format or the
// output's extension), one tensor at a time (copied, whatever options.read.zero_copy says, so
// memory stays at about one tensor). Roles, sections and metadata are kept. Returns the number of
// tensors.
std::size_t convert(const std::filesystem::path& input, const std::filesystem::path& output,
                    const ConvertOptions& options = {});

}  // namespace ckpt

CKPT_API_END

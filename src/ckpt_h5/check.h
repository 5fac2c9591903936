// The ckpt-h5 structure check run in a child process (see util/isolate.h and
// tools/ckpt-h5-check.cpp): everything HDF5 parses to list a file, or to read its datasets.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "ckpt/options.h"

namespace ckpt::detail::ckpt_h5 {

enum class CheckStage { listing, datasets };

// Runs the stage in this process (throws ckpt::Error; may crash on a malformed file).
void check_structure(const std::filesystem::path& path, CheckStage stage, const ReadOptions& options);

// Arguments for ckpt-h5-check that make it run the same check, and their parser.
std::vector<std::string> check_arguments(const std::filesystem::path& path, CheckStage stage,
                                         const ReadOptions& options);
// Returns false on arguments it does not understand.
bool parse_check_arguments(int argc, char** argv, std::filesystem::path& path, CheckStage& stage,
                           ReadOptions& options);

}  // namespace ckpt::detail::ckpt_h5

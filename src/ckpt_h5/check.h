// The ckpt-h5 structure check run in a child process (util/isolate.h, tools/ckpt-h5-check.cpp):
// the HDF5 calls the reader is about to make, made first where a crash does no harm.
#pragma once

#include <cstddef>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "ckpt/options.h"
#include "core/byte_source.h"

namespace ckpt::detail::ckpt_h5 {

enum class CheckStage {
  listing,       // superblock, root group, attributes, index
  all_datasets,  // listing, then every dataset's header and chunk index
  one_dataset,   // listing, then one dataset's header and chunk index
};

struct CheckRequest {
  std::filesystem::path path;  // absolute: the helper has a working directory of its own
  std::string identity;        // "device:inode" of the file the reader has open; the check must see it
  CheckStage stage = CheckStage::listing;
  std::size_t tensor = 0;  // for one_dataset: the index of the tensor
  ReadOptions options;
};

std::vector<std::string> encode_check(const CheckRequest& request);
// Throws invalid_argument on a request it does not understand.
CheckRequest decode_check(const std::vector<std::string>& words);

// Runs the check in this process (may crash on a malformed file; errors are thrown): on the file
// at request.path, or on `memory` (a checkpoint held in memory; its path is empty).
void check_structure(const CheckRequest& request, std::shared_ptr<const ByteSource> memory = nullptr);

// The helper's loop: serves requests from stdin, answers on stdout, keeps the last file open
// while it is unchanged (so one_dataset checks do not parse the index again).
void serve_checks();

}  // namespace ckpt::detail::ckpt_h5

// The ckpt-h5 index (format-spec/ckpt-h5.md §6): one JSON document listing every tensor.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "ckpt/options.h"
#include "ckpt/state_dict.h"
#include "core/blocks.h"

namespace ckpt::detail::ckpt_h5 {

struct Index {
  std::vector<TensorInfo> tensors;
  std::vector<std::optional<std::uint64_t>> checksums;  // parallel to tensors
  std::vector<std::vector<BlockChecksum>> blocks;         // parallel to tensors (1.1; mostly empty)
  Metadata metadata = Metadata::object();
};

// Streams the JSON (SAX) straight into TensorInfo: listing 10,000 tensors builds no JSON tree.
// Throws format/unsupported errors naming `file` and the entry.
Index parse_index(std::string_view text, const ReadOptions& options, const std::string& file);

// Builds the index text entry by entry, as the writer goes.
class IndexWriter {
 public:
  void add(const TensorInfo& info, std::optional<std::uint64_t> checksum, const std::vector<BlockChecksum>& blocks = {});
  std::string finish(const Metadata& metadata);

 private:
  std::string text_ = R"({"tensors":[)";
  bool first_ = true;
};

}  // namespace ckpt::detail::ckpt_h5

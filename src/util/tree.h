// A nested dict of tensors and metadata values, built before a writer serializes it: the shape of
// a torch checkpoint (pytorch writer) or of a Flax variables dict (flax writer). Keys keep
// insertion order; children live in a std::list so that pointers to them stay valid while more
// entries are added.
#pragma once

#include <cstddef>
#include <list>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "ckpt/state_dict.h"
#include "util/bytes.h"

namespace ckpt::detail {

struct TreeNode {
  const Metadata* json = nullptr;          // a metadata leaf
  std::optional<std::size_t> tensor;       // a tensor leaf (index into the source)
  std::list<std::pair<std::string, TreeNode>> dict;  // otherwise a dict
  bool ordered = false;                    // writer-specific flags (torch: an OrderedDict)
  bool int_keys = false;                   // (torch: keys written back as integers)

  bool is_dict() const { return !json && !tensor; }
  TreeNode* child(const std::string& key) {
    for (auto& [k, v] : dict)
      if (k == key) return &v;
    return nullptr;
  }
};

// A metadata value as a tree: objects become dicts (so tensors can be inserted into them), every
// other value a leaf pointing at `m`, which must outlive the tree. Objects for which `whole`
// says so stay leaves (a format's encoding of a value it has its own type for).
inline TreeNode tree_from_metadata(const Metadata& m, bool (*whole)(const Metadata&) = nullptr) {
  TreeNode node;
  if (!m.is_object() || (whole && whole(m))) {
    node.json = &m;
    return node;
  }
  for (const auto& [k, item] : m.items()) node.dict.emplace_back(k, tree_from_metadata(item, whole));
  return node;
}

inline std::vector<std::string> split_dots(const std::string& text) {
  std::vector<std::string> parts;
  for (std::size_t start = 0;;) {
    const auto dot = text.find('.', start);
    parts.push_back(text.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) return parts;
    start = dot + 1;
  }
}

// The dict at `path` under `root`, created as needed. A leaf in the way fails (invalid_argument,
// naming `file` and `what` is being placed).
inline TreeNode& tree_dict_at(TreeNode& root, const std::vector<std::string>& path, const std::string& file,
                              const std::string& what) {
  TreeNode* node = &root;
  for (const auto& key : path) {
    TreeNode* next = node->child(key);
    if (!next) {
      node->dict.emplace_back(key, TreeNode{});
      next = &node->dict.back().second;
    }
    if (!next->is_dict()) fail(ErrorCode::invalid_argument, file, "{} would replace the value at {}", what, quote(key));
    node = next;
  }
  return *node;
}

// Puts tensor `index` at `path` (its last element is the key), creating dicts on the way.
inline void tree_put_tensor(TreeNode& root, std::vector<std::string> path, std::size_t index, const std::string& file,
                            const std::string& what) {
  const std::string last = path.back();
  path.pop_back();
  TreeNode& parent = tree_dict_at(root, path, file, what);
  if (parent.child(last)) fail(ErrorCode::invalid_argument, file, "{} would replace the value at {}", what, quote(last));
  TreeNode leaf;
  leaf.tensor = index;
  parent.dict.emplace_back(last, std::move(leaf));
}

}  // namespace ckpt::detail

// A msgpack document as an inert tree, parsed with msgpack-cxx's visitor API (msgpack::parse):
// the parser hands over each value as it meets it, and nothing is allocated from a count the
// file claims (msgpack-cxx's object unpacker would reserve array and map storage up front).
// Strings, binaries and extension payloads are not copied: nodes keep their offsets into the
// parsed bytes. Nesting is capped; errors name the byte offset.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ckpt::detail::msgpack_tree {

enum class Kind : std::uint8_t { nil, boolean, integer, unsigned_integer, floating, str, bin, ext, array, map };

struct Node {
  Kind kind = Kind::nil;
  bool boolean = false;
  std::int64_t integer = 0;
  std::uint64_t unsigned_integer = 0;
  double floating = 0;
  std::int8_t ext_type = 0;
  std::uint64_t offset = 0, size = 0;  // str, bin, ext payload (type byte excluded): where in the bytes
  // array: items; map: keys and values interleaved (k0, v0, k1, v1, ...).
  std::vector<std::uint32_t> children;
};

class Tree {
 public:
  // Parses exactly one msgpack value that spans all of `bytes` (trailing bytes are an error).
  // `base` is added to the offsets in errors (the value's position in the file); `where` names
  // it ("FILE" or "FILE: tensor payload"). Throws ckpt::Error (format).
  Tree(std::span<const std::byte> bytes, std::string where, std::uint64_t base = 0, std::size_t max_depth = 128);

  const Node& root() const { return nodes_.front(); }
  const Node& at(std::uint32_t id) const { return nodes_.at(id); }
  std::string_view text(const Node& n) const {
    return {reinterpret_cast<const char*>(bytes_.data()) + n.offset, static_cast<std::size_t>(n.size)};
  }
  std::span<const std::byte> data(const Node& n) const {
    return bytes_.subspan(static_cast<std::size_t>(n.offset), static_cast<std::size_t>(n.size));
  }
  // The value of string key `key` in map `n`, or nullptr.
  const Node* find(const Node& map, std::string_view key) const;

 private:
  friend struct Builder;
  std::span<const std::byte> bytes_;
  std::vector<Node> nodes_;
};

const char* kind_name(Kind kind);

}  // namespace ckpt::detail::msgpack_tree

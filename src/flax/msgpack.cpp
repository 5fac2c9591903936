#include "flax/msgpack.h"

#include <msgpack.hpp>

#include "util/bytes.h"

namespace ckpt::detail::msgpack_tree {

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::nil: return "nil";
    case Kind::boolean: return "a boolean";
    case Kind::integer:
    case Kind::unsigned_integer: return "an integer";
    case Kind::floating: return "a float";
    case Kind::str: return "a string";
    case Kind::bin: return "binary data";
    case Kind::ext: return "an extension value";
    case Kind::array: return "an array";
    case Kind::map: return "a map";
  }
  return "?";
}

// The visitor msgpack::parse calls; it appends nodes and links them to their container.
struct Builder {
  Tree& tree;
  const char* begin;
  std::size_t max_depth;
  std::vector<std::uint32_t> open;  // containers being filled
  std::string error;                // why the visitor stopped the parse

  bool add(Node node) {
    if (!open.empty() && tree.nodes_[open.back()].children.size() >= 0xffffffffu) return false;
    tree.nodes_.push_back(std::move(node));
    const auto id = static_cast<std::uint32_t>(tree.nodes_.size() - 1);
    if (!open.empty()) tree.nodes_[open.back()].children.push_back(id);
    return true;
  }
  Node at_offset(Kind kind, const char* v, std::uint32_t size) {
    Node n;
    n.kind = kind;
    // msgpack-cxx may hand over no pointer at all for an empty value.
    n.offset = size == 0 ? 0 : static_cast<std::uint64_t>(v - begin);
    n.size = size;
    return n;
  }
  bool visit_nil() { return add({}); }
  bool visit_boolean(bool v) {
    Node n;
    n.kind = Kind::boolean;
    n.boolean = v;
    return add(std::move(n));
  }
  bool visit_positive_integer(std::uint64_t v) {
    Node n;
    n.kind = Kind::unsigned_integer;
    n.unsigned_integer = v;
    if (v <= static_cast<std::uint64_t>(INT64_MAX)) {
      n.kind = Kind::integer;
      n.integer = static_cast<std::int64_t>(v);
    }
    return add(std::move(n));
  }
  bool visit_negative_integer(std::int64_t v) {
    Node n;
    n.kind = Kind::integer;
    n.integer = v;
    return add(std::move(n));
  }
  bool visit_float32(float v) { return visit_float64(v); }
  bool visit_float64(double v) {
    Node n;
    n.kind = Kind::floating;
    n.floating = v;
    return add(std::move(n));
  }
  bool visit_str(const char* v, std::uint32_t size) { return add(at_offset(Kind::str, v, size)); }
  bool visit_bin(const char* v, std::uint32_t size) { return add(at_offset(Kind::bin, v, size)); }
  bool visit_ext(const char* v, std::uint32_t size) {  // v[0] is the type
    if (size == 0) return false;
    Node n = at_offset(Kind::ext, v + 1, size - 1);
    n.ext_type = static_cast<std::int8_t>(v[0]);
    return add(std::move(n));
  }
  bool start_container(Kind kind) {
    if (open.size() >= max_depth) {
      error = fmt::format("values nested deeper than {}", max_depth);
      return false;
    }
    Node n;
    n.kind = kind;
    if (!add(std::move(n))) return false;
    open.push_back(static_cast<std::uint32_t>(tree.nodes_.size() - 1));
    return true;
  }
  // No reserve(num): the count is the file's claim; children are added as they are parsed.
  bool start_array(std::uint32_t) { return start_container(Kind::array); }
  bool start_map(std::uint32_t) { return start_container(Kind::map); }
  bool end_array() { return end_container(); }
  bool end_map() { return end_container(); }
  bool end_container() {
    open.pop_back();
    return true;
  }
  bool start_array_item() { return true; }
  bool end_array_item() { return true; }
  bool start_map_key() { return true; }
  bool end_map_key() { return true; }
  bool start_map_value() { return true; }
  bool end_map_value() { return true; }
  std::size_t error_offset = 0;
  void parse_error(std::size_t, std::size_t at) {
    error = "not valid msgpack";
    error_offset = at;
  }
  void insufficient_bytes(std::size_t, std::size_t at) {
    error = "the data ends inside a value";
    error_offset = at;
  }
  bool referenced() const { return false; }
  void set_referenced(bool) {}
};

Tree::Tree(std::span<const std::byte> bytes, std::string where, std::uint64_t base, std::size_t max_depth)
    : bytes_(bytes) {
  const char* data = reinterpret_cast<const char*>(bytes.data());
  Builder builder{*this, data, max_depth, {}, {}};
  std::size_t offset = 0;
  bool ok = false;
  try {
    ok = msgpack::parse(data, bytes.size(), offset, builder);
  } catch (const std::exception& e) {  // msgpack-cxx reports some limits by throwing
    fail(ErrorCode::format, where, "msgpack at offset {}: {}", base + offset, e.what());
  }
  if (!ok) {
    const std::uint64_t at = builder.error_offset ? builder.error_offset : offset;
    fail(ErrorCode::format, where, "msgpack at offset {}: {}", base + at,
         builder.error.empty() ? std::string("not valid msgpack") : builder.error);
  }
  if (nodes_.empty()) fail(ErrorCode::format, where, "msgpack at offset {}: no value", base);
  if (offset != bytes.size())
    fail(ErrorCode::format, where, "msgpack at offset {}: {} bytes follow the value", base + offset, bytes.size() - offset);
}

const Node* Tree::find(const Node& map, std::string_view key) const {
  for (std::size_t i = 0; i + 1 < map.children.size(); i += 2) {
    const Node& k = nodes_[map.children[i]];
    if (k.kind == Kind::str && text(k) == key) return &nodes_[map.children[i + 1]];
  }
  return nullptr;
}

}  // namespace ckpt::detail::msgpack_tree

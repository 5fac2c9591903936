// Flax msgpack reader: the document is parsed into an inert tree (flax/msgpack.h) whose array
// payloads stay where they are: each tensor is one range of the file (several, concatenated, for
// a chunked array).
#include <algorithm>
#include <cstring>
#include <optional>

#include <nlohmann/json.hpp>

#include "ckpt/flax.h"
#include "core/format_reader.h"
#include "flax/format.h"
#include "flax/msgpack.h"
#include "util/bytes.h"
#include "util/json_strict.h"

namespace ckpt {
namespace {

using detail::fail;
using detail::quote;
namespace mp = detail::msgpack_tree;

constexpr std::string_view kChunked = "__msgpack_chunked_array__";

// UTF-8 validity through nlohmann's serializer (it refuses invalid sequences), the check every
// name and string in ckpt's JSON goes through anyway.
bool valid_utf8(const std::string& text) {
  try {
    (void)nlohmann::json(text).dump();
    return true;
  } catch (const nlohmann::json::type_error&) {
    return false;
  }
}

// Where an array's bytes are: one range, or several for a chunked array (in order).
struct Pieces {
  std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges;  // file offset, bytes
};

class FlaxReader final : public detail::FormatReader {
 public:
  FlaxReader(std::shared_ptr<const detail::ByteSource> source, const ReadOptions& options)
      : FormatReader(std::move(source), options) {
    format_ = "flax";
    const mp::Tree tree(source_->bytes(), name_);
    interpret(tree);
    finish_listing();
  }

  detail::Location locate(std::size_t index) override {
    detail::Location l = location(index);
    for (const auto& [offset, bytes] : pieces_[index].ranges) l.extents.push_back({offset, bytes});
    return l;
  }

 private:
  [[noreturn]] void bad(const std::string& path, const std::string& what) {
    fail(ErrorCode::format, name_, "value at {}: {}", quote(path), what);
  }

  // Paths join keys with dots; at the top of a collection there is no prefix (an empty key
  // below it still adds its dot, so "" and "." survive).
  static std::string join(const std::optional<std::string>& prefix, std::string_view key) {
    return prefix ? *prefix + "." + std::string(key) : std::string(key);
  }

  // An ndarray extension value (type 1, or 3 for a numpy scalar): msgpack [shape, dtype, bytes].
  // Returns its dtype and shape and where its bytes are.
  std::pair<TensorInfo, std::pair<std::uint64_t, std::uint64_t>> ndarray(const mp::Tree& tree, const mp::Node& ext,
                                                                         const std::string& path) {
    const mp::Tree payload(tree.data(ext), fmt::format("{}: array {}", name_, quote(path)), ext.offset, 8);
    const mp::Node& root = payload.root();
    if (root.kind != mp::Kind::array || root.children.size() != 3)
      bad(path, "the array payload is not [shape, dtype, bytes]");
    const mp::Node& shape = payload.at(root.children[0]);
    const mp::Node& dtype = payload.at(root.children[1]);
    const mp::Node& data = payload.at(root.children[2]);
    TensorInfo info;
    info.name = path;
    if (shape.kind != mp::Kind::array) bad(path, "the array shape is not an array");
    if (shape.children.size() > options_.max_rank)
      bad(path, fmt::format("the array has more than {} dimensions", options_.max_rank));
    for (auto d : shape.children) {
      const mp::Node& n = payload.at(d);
      if (n.kind != mp::Kind::integer || n.integer < 0) bad(path, "the array shape holds a value that is not a size");
      info.shape.push_back(n.integer);
    }
    if (dtype.kind != mp::Kind::str && dtype.kind != mp::Kind::bin) bad(path, "the array dtype is not a name");
    const std::string dtype_text(payload.text(dtype));
    const auto found = dtype_from_name(dtype_text);
    if (!found) fail(ErrorCode::unsupported, name_, "value at {}: dtype {} is not supported", quote(path), quote(dtype_text));
    info.dtype = *found;
    if (data.kind != mp::Kind::bin && data.kind != mp::Kind::str) bad(path, "the array data is not binary");
    std::uint64_t nbytes = 0;
    try {
      nbytes = info.nbytes();
    } catch (const Error&) {
      bad(path, fmt::format("shape {} overflows", shape_to_string(info.shape)));
    }
    if (data.size != nbytes)
      bad(path, fmt::format("{} {} needs {} bytes, the array holds {}", dtype_name(info.dtype),
                            shape_to_string(info.shape), nbytes, data.size));
    return {std::move(info), {ext.offset + data.offset, data.size}};
  }

  bool is_array(const mp::Tree& tree, const mp::Node& n) const {
    return (n.kind == mp::Kind::ext && (n.ext_type == 1 || n.ext_type == 3)) ||
           (n.kind == mp::Kind::map && tree.find(n, kChunked) != nullptr);
  }

  // Adds the array `n` at `path` (an extension value or a chunked array) with the given role.
  void add_array(const mp::Tree& tree, const mp::Node& n, const std::string& path, const EntryInfo& role) {
    TensorInfo info;
    Pieces pieces;
    if (n.kind == mp::Kind::ext) {
      auto [i, range] = ndarray(tree, n, path);
      info = std::move(i);
      pieces.ranges.push_back(range);
    } else {
      // {"__msgpack_chunked_array__": true, "shape": {"0": d0, ...}, "chunks": {"0": ext, ...}}:
      // the flattened array in pieces, concatenated in key order.
      const mp::Node* shape = tree.find(n, "shape");
      const mp::Node* chunks = tree.find(n, "chunks");
      if (!shape || !chunks || shape->kind != mp::Kind::map || chunks->kind != mp::Kind::map)
        bad(path, "a chunked array without \"shape\" and \"chunks\" maps");
      info.name = path;
      for (std::size_t d = 0; d < shape->children.size() / 2; ++d) {
        const mp::Node* size = tree.find(*shape, std::to_string(d));
        if (!size || size->kind != mp::Kind::integer || size->integer < 0)
          bad(path, fmt::format("chunked array shape has no size at key \"{}\"", d));
        info.shape.push_back(size->integer);
      }
      if (info.shape.size() > options_.max_rank)
        bad(path, fmt::format("the array has more than {} dimensions", options_.max_rank));
      std::uint64_t total = 0;
      for (std::size_t c = 0; c < chunks->children.size() / 2; ++c) {
        const mp::Node* chunk = tree.find(*chunks, std::to_string(c));
        if (!chunk || chunk->kind != mp::Kind::ext || chunk->ext_type != 1)
          bad(path, fmt::format("chunked array has no array at chunk \"{}\"", c));
        auto [part, range] = ndarray(tree, *chunk, path);
        if (c == 0) info.dtype = part.dtype;
        if (part.dtype != info.dtype || part.shape.size() != 1)
          bad(path, fmt::format("chunk \"{}\" is not a 1-D {} array", c, dtype_name(info.dtype)));
        total += range.second;
        pieces.ranges.push_back(range);
      }
      if (pieces.ranges.empty()) bad(path, "a chunked array without chunks");
      std::uint64_t nbytes = 0;
      try {
        nbytes = info.nbytes();
      } catch (const Error&) {
        bad(path, fmt::format("shape {} overflows", shape_to_string(info.shape)));
      }
      if (total != nbytes)
        bad(path, fmt::format("chunks hold {} bytes, shape {} of {} needs {}", total, shape_to_string(info.shape),
                              dtype_name(info.dtype), nbytes));
    }
    static_cast<EntryInfo&>(info) = role;
    info.name = path;
    infos_.push_back(std::move(info));
    pieces_.push_back(std::move(pieces));
  }

  // A plain value as metadata: maps as objects, arrays as arrays, complex (ext 2) as
  // {"__complex__": [real, imag]}.
  Metadata to_metadata(const mp::Tree& tree, const mp::Node& n, const std::string& path) {
    switch (n.kind) {
      case mp::Kind::nil: return nullptr;
      case mp::Kind::boolean: return n.boolean;
      case mp::Kind::integer: return n.integer;
      case mp::Kind::unsigned_integer: return n.unsigned_integer;
      case mp::Kind::floating: return n.floating;
      case mp::Kind::str: {
        const std::string text(tree.text(n));
        if (!valid_utf8(text)) bad(path, "a string that is not valid UTF-8");
        return text;
      }
      case mp::Kind::array: {
        Metadata out = Metadata::array();
        for (auto c : n.children) out.push_back(to_metadata(tree, tree.at(c), path));
        return out;
      }
      case mp::Kind::map: {
        Metadata out = Metadata::object();
        for (std::size_t i = 0; i + 1 < n.children.size(); i += 2)
          out[key(tree, tree.at(n.children[i]), path)] = to_metadata(tree, tree.at(n.children[i + 1]), path);
        return out;
      }
      case mp::Kind::ext:
        if (n.ext_type == 2) {
          const mp::Tree payload(tree.data(n), fmt::format("{}: complex {}", name_, quote(path)), n.offset, 4);
          const mp::Node& pair = payload.root();
          if (pair.kind == mp::Kind::array && pair.children.size() == 2 &&
              payload.at(pair.children[0]).kind == mp::Kind::floating &&
              payload.at(pair.children[1]).kind == mp::Kind::floating)
            return Metadata{{"__complex__", {payload.at(pair.children[0]).floating, payload.at(pair.children[1]).floating}}};
          bad(path, "a complex value that is not [real, imag]");
        }
        fail(ErrorCode::unsupported, name_, "value at {}: msgpack extension type {} is not supported", quote(path),
             n.ext_type);
      case mp::Kind::bin:
        fail(ErrorCode::unsupported, name_, "value at {}: binary data outside an array is not supported", quote(path));
    }
    return nullptr;
  }

  std::string key(const mp::Tree& tree, const mp::Node& k, const std::string& path) {
    if (k.kind == mp::Kind::str) {
      std::string text(tree.text(k));
      if (!valid_utf8(text)) bad(path, "a key that is not valid UTF-8");
      return text;
    }
    if (k.kind == mp::Kind::integer) return std::to_string(k.integer);
    bad(path, fmt::format("a map key is {}, not a string", mp::kind_name(k.kind)));
  }

  bool holds_arrays(const mp::Tree& tree, const mp::Node& n, std::size_t depth = 0) const {
    if (is_array(tree, n)) return true;
    if (n.kind != mp::Kind::map || depth > 128) return false;
    for (std::size_t i = 1; i < n.children.size(); i += 2)
      if (holds_arrays(tree, tree.at(n.children[i]), depth + 1)) return true;
    return false;
  }

  // The arrays under map `n` get `role`, named by their dotted path below it; other values go
  // to `metadata`, nested as in the file.
  void walk(const mp::Tree& tree, const mp::Node& n, const std::optional<std::string>& prefix, const EntryInfo& role,
            Metadata& metadata) {
    for (std::size_t i = 0; i + 1 < n.children.size(); i += 2) {
      const std::string k = key(tree, tree.at(n.children[i]), prefix.value_or(""));
      const mp::Node& v = tree.at(n.children[i + 1]);
      const std::string path = join(prefix, k);
      if (is_array(tree, v)) {
        add_array(tree, v, path, role);
      } else if (v.kind == mp::Kind::map && holds_arrays(tree, v)) {
        Metadata child = Metadata::object();
        walk(tree, v, path, role, child);
        if (!child.empty()) metadata[k] = std::move(child);
      } else {
        metadata[k] = to_metadata(tree, v, path);
      }
    }
  }

  void interpret(const mp::Tree& tree) {
    const mp::Node& root = tree.root();
    if (root.kind != mp::Kind::map)
      fail(ErrorCode::format, name_, "the msgpack document is {}, not a map of collections", mp::kind_name(root.kind));
    const mp::Node* params = tree.find(root, "params");
    if (!params || params->kind != mp::Kind::map) {
      // A bare params tree.
      role_source_ = RoleSource::stored;
      walk(tree, root, std::nullopt, EntryInfo{}, metadata_);
      metadata_[std::string(kFlaxShapeKey)] = {{"collections", false}};
      return;
    }
    role_source_ = RoleSource::stored;
    // ckpt's own entry: extra sections and non-persistent buffers (format-spec/conventions.md §5).
    std::vector<std::string> sections = {"opt_state"};
    Metadata non_persistent = Metadata::object();
    if (const mp::Node* roles = tree.find(root, "ckpt.roles"); roles && roles->kind == mp::Kind::str) {
      Metadata parsed;
      if (const auto error = detail::parse_json_strict(tree.text(*roles), parsed); !error.empty())
        fail(ErrorCode::format, name_, "value at 'ckpt.roles' {}", error);
      if (parsed.contains("sections") && parsed["sections"].is_array())
        for (const auto& s : parsed["sections"])
          if (s.is_string()) sections.push_back(s.get<std::string>());
      if (parsed.contains("non_persistent") && parsed["non_persistent"].is_object())
        non_persistent = parsed["non_persistent"];
    }
    for (std::size_t i = 0; i + 1 < root.children.size(); i += 2) {
      const std::string k = key(tree, tree.at(root.children[i]), "");
      const mp::Node& v = tree.at(root.children[i + 1]);
      if (k == "ckpt.roles" && v.kind == mp::Kind::str) continue;
      EntryInfo role;
      if (k == "params") {
        role.role = Role::parameter;
      } else if (std::find(sections.begin(), sections.end(), k) != sections.end() && holds_arrays(tree, v)) {
        role.role = Role::extra;
        role.section = k;
      } else if (v.kind == mp::Kind::map && holds_arrays(tree, v)) {
        role.role = Role::buffer;
        role.collection = k;
      } else {
        metadata_[k] = to_metadata(tree, v, k);
        continue;
      }
      if (is_array(tree, v)) {  // an array directly at the top level of a collection
        add_array(tree, v, k, role);
        continue;
      }
      Metadata child = Metadata::object();
      const std::size_t first = infos_.size();
      walk(tree, v, std::nullopt, role, child);
      if (!child.empty()) metadata_[k] = std::move(child);
      if (role.role == Role::buffer && non_persistent.contains(k) && non_persistent[k].is_array())
        for (std::size_t t = first; t < infos_.size(); ++t)
          for (const auto& name : non_persistent[k])
            if (name.is_string() && name.get<std::string>() == infos_[t].name) infos_[t].persistent = false;
    }
  }

  std::vector<Pieces> pieces_;  // parallel to infos_
};

}  // namespace

namespace detail::flax {

// A map whose first key is a string: fixmap (0x80-0x8f), map16 (0xde) or map32 (0xdf), then a
// fixstr (0xa0-0xbf) or str8/16/32 (0xd9-0xdb). The empty map is a one-byte file.
bool sniff(std::span<const std::byte> head, std::uint64_t file_size) {
  if (head.empty()) return false;
  const auto b = static_cast<unsigned char>(head[0]);
  std::size_t key_at = 0;
  if (b >= 0x80 && b <= 0x8f) {
    if (b == 0x80) return file_size == 1;
    key_at = 1;
  } else if (b == 0xde) {
    key_at = 3;
  } else if (b == 0xdf) {
    key_at = 5;
  } else {
    return false;
  }
  if (head.size() <= key_at) return false;
  const auto k = static_cast<unsigned char>(head[key_at]);
  return (k >= 0xa0 && k <= 0xbf) || (k >= 0xd9 && k <= 0xdb);
}

std::unique_ptr<FormatReader> open_reader(std::shared_ptr<const ByteSource> source, const ReadOptions& options) {
  return std::make_unique<FlaxReader>(std::move(source), options);
}

}  // namespace detail::flax

}  // namespace ckpt

#include "dcp/metadata.h"

#include <algorithm>
#include <array>
#include <map>

#include "pickle/pickle.h"
#include "pytorch/interpret.h"
#include "util/bytes.h"

namespace ckpt::detail::dcp {
namespace {

namespace pk = detail::pickle;

// The dataclasses DCP pickles (instantiated by NEWOBJ, filled by BUILD), under the module names
// torch 1.13 (torch.distributed._shard...) and torch 2.x (torch.distributed.checkpoint...) use.
enum class Class { metadata, tensor, properties, chunk, bytes, index, storage, storage_meta, none };

Class class_named(std::string_view name) {
  static constexpr std::array<std::pair<std::string_view, Class>, 15> kClasses{{
      {"torch.distributed.checkpoint.metadata.Metadata", Class::metadata},
      {"torch.distributed._shard.checkpoint.metadata.Metadata", Class::metadata},
      {"torch.distributed.checkpoint.metadata.TensorStorageMetadata", Class::tensor},
      {"torch.distributed._shard.checkpoint.metadata.TensorStorageMetadata", Class::tensor},
      {"torch.distributed.checkpoint.metadata.TensorProperties", Class::properties},
      {"torch.distributed._shard.sharded_tensor.metadata.TensorProperties", Class::properties},
      {"torch.distributed.checkpoint.metadata.ChunkStorageMetadata", Class::chunk},
      {"torch.distributed._shard.checkpoint.metadata.ChunkStorageMetadata", Class::chunk},
      {"torch.distributed.checkpoint.metadata.BytesStorageMetadata", Class::bytes},
      {"torch.distributed._shard.checkpoint.metadata.BytesStorageMetadata", Class::bytes},
      {"torch.distributed.checkpoint.metadata.MetadataIndex", Class::index},
      {"torch.distributed._shard.checkpoint.metadata.MetadataIndex", Class::index},
      {"torch.distributed.checkpoint.filesystem._StorageInfo", Class::storage},
      {"torch.distributed._shard.checkpoint.filesystem._StorageInfo", Class::storage},
      {"torch.distributed.checkpoint.metadata.StorageMeta", Class::storage_meta},
  }};
  for (const auto& [n, c] : kClasses)
    if (n == name) return c;
  return Class::none;
}

// TensorProperties pickles its memory format as a member of this enum, fetched by
// builtins.getattr(enum class, member name) (Python >= 3.11) or by calling the class on the
// member's value (before).
bool memory_format_enum(std::string_view name) {
  return name == "torch.distributed._shard.sharded_tensor.metadata.MEM_FORMAT_ENCODING" ||
         name == "torch.distributed.checkpoint.metadata._MEM_FORMAT_ENCODING";
}
bool memory_format_member(std::string_view name) {
  return name == "TORCH_CONTIGUOUS_FORMAT" || name == "TORCH_CHANNELS_LAST" || name == "TORCH_PRESERVE_FORMAT";
}
// StorageMeta.checkpoint_id may be a pathlib path: reduced to the class called on its parts.
bool path_class(std::string_view name) {
  return name == "pathlib.PosixPath" || name == "pathlib.PurePosixPath" || name == "pathlib.Path" ||
         name == "pathlib.WindowsPath" || name == "pathlib.PureWindowsPath";
}

class Walker {
 public:
  Walker(const pk::Graph& g, const std::string& name, const ReadOptions& options, std::size_t budget)
      : g_(g), name_(name), options_(options), budget_(budget) {}

  // Every call and instantiation in the pickle must be one DCP makes; nothing is run either way.
  void refuse_unknown() const {
    for (pk::NodeId id = 0; id < g_.size(); ++id) {
      const pk::Node& n = g_.at(id);
      if (n.kind != pk::Kind::object) continue;
      const std::string callable = g_.global_name(id);
      const pk::Node& args = g_.at(n.args);
      if (n.newobj) {
        if (class_named(callable) == Class::none)
          fail(ErrorCode::unsupported, name_,
               "the pickle instantiates {}, which is not one of DCP's metadata classes (ckpt never runs pickled code)",
               quote(callable.empty() ? pk::render(g_, n.first, 2) : callable));
        if (args.kind != pk::Kind::tuple || !args.items.empty())
          fail(ErrorCode::format, name_, "the pickle instantiates {} with arguments", quote(callable));
        continue;
      }
      bool allowed = callable == "torch.Size" || callable == "torch.serialization._get_layout" ||
                     callable == "collections.OrderedDict" || path_class(callable) || memory_format_enum(callable);
      if ((callable == "builtins.getattr" || callable == "__builtin__.getattr") && args.kind == pk::Kind::tuple &&
          args.items.size() == 2 && memory_format_enum(g_.global_name(args.items[0])) &&
          g_.at(args.items[0]).kind == pk::Kind::global && g_.at(args.items[1]).kind == pk::Kind::string &&
          memory_format_member(g_.at(args.items[1]).text))
        allowed = true;
      if (!allowed)
        fail(ErrorCode::unsupported, name_,
             "unsafe pickle: it calls {} (ckpt never runs pickled code; DCP metadata needs only its dataclasses, "
             "torch.Size, dtypes and layouts)",
             quote(callable.empty() ? pk::render(g_, n.first, 2) : callable));
    }
  }

  Checkpoint walk() {
    Checkpoint out;
    const pk::Node& root = dict_state(state(g_.root(), Class::metadata, "the top level", "a Metadata object"), "Metadata");
    const pk::NodeId items = field(root, "state_dict_metadata");
    if (items == pk::kNoNode || !is_dict(items)) bad("Metadata.state_dict_metadata", "is not a dict");
    std::map<std::string, std::size_t> by_fqn;
    for (const auto& [k, v] : g_.at(items).entries) {
      visit();
      Item item;
      item.fqn = text(k, "state_dict_metadata", "a key");
      if (!by_fqn.emplace(item.fqn, out.items.size()).second) bad(fqn_place(item.fqn), "named twice");
      read_item(v, item);
      out.items.push_back(std::move(item));
    }
    attach_storage(field(root, "storage_data"), out, by_fqn);
    attach_paths(field(root, "planner_data"), out, by_fqn);
    if (const pk::NodeId version = field(root, "version"); version != pk::kNoNode && !none(version)) {
      const pk::Node& v = g_.at(version);
      out.version = v.kind == pk::Kind::integer ? std::to_string(v.integer) : text(version, "Metadata.version", "it");
      if (out.version.substr(0, out.version.find('.')) != "1")
        fail(ErrorCode::unsupported, name_, "DCP metadata version {} is not supported (this reader reads none and 1.x)",
             quote(out.version));
    }
    out.storage_meta = nullptr;
    if (const pk::NodeId meta = field(root, "storage_meta"); meta != pk::kNoNode && !none(meta)) {
      const pk::Node& s = state(meta, Class::storage_meta, "Metadata.storage_meta", "a StorageMeta object");
      out.storage_meta = Metadata::object();
      for (const auto& [k, v] : s.entries) out.storage_meta[text(k, "StorageMeta", "a field name")] = plain(v, 0);
    }
    return out;
  }

 private:
  [[noreturn]] void bad(const std::string& where, const std::string& what) const {
    fail(ErrorCode::format, name_, "{}: {}", where, what);
  }
  static std::string fqn_place(const std::string& fqn) { return "key " + quote(fqn); }

  void visit() {
    if (++visits_ > budget_)
      fail(ErrorCode::unsupported, name_,
           "shared references expand the metadata to more than {} items and chunks (each reference is a copy); refused",
           budget_);
  }

  bool none(pk::NodeId id) const { return g_.at(id).kind == pk::Kind::none; }
  bool is_dict(pk::NodeId id) const { return pytorch::Interpreter::is_dict(g_, id); }

  // The node an instance of `cls` got from BUILD (an empty dict for none), checking its class.
  const pk::Node& state(pk::NodeId id, Class cls, const std::string& where, const char* what) const {
    const pk::Node& n = g_.at(id);
    if (n.kind != pk::Kind::object || !n.newobj || class_named(g_.global_name(id)) != cls)
      bad(where, fmt::format("is {}, not {}", pk::render(g_, id, 2, 80), what));
    if (n.state == pk::kNoNode) return empty_;
    return g_.at(n.state);
  }
  // A dataclass's field from its state dict, or kNoNode.
  pk::NodeId field(const pk::Node& state, std::string_view key) const {
    for (const auto& [k, v] : state.entries)
      if (g_.at(k).kind == pk::Kind::string && g_.at(k).text == key) return v;
    return pk::kNoNode;
  }
  const pk::Node& dict_state(const pk::Node& state, const std::string& where) const {
    if (&state != &empty_ && state.kind != pk::Kind::dict) bad(where, "its state is not a dict of fields");
    return state;
  }

  std::string text(pk::NodeId id, const std::string& where, const char* what) const {
    if (id == pk::kNoNode || g_.at(id).kind != pk::Kind::string) bad(where, fmt::format("{} is not a string", what));
    return g_.at(id).text;
  }
  std::uint64_t count(pk::NodeId id, const std::string& where, const char* what) const {
    if (id == pk::kNoNode || g_.at(id).kind != pk::Kind::integer || g_.at(id).integer < 0)
      bad(where, fmt::format("{} is not a non-negative integer", what));
    return static_cast<std::uint64_t>(g_.at(id).integer);
  }
  // torch.Size((d0, d1, ...)), or a plain tuple or list of sizes.
  std::vector<std::uint64_t> sizes(pk::NodeId id, const std::string& where, const char* what) const {
    if (id == pk::kNoNode) bad(where, fmt::format("{} is missing", what));
    const pk::Node* n = &g_.at(id);
    if (n->kind == pk::Kind::object && !n->newobj && g_.global_name(id) == "torch.Size") {
      const pk::Node& args = g_.at(n->args);
      if (args.kind != pk::Kind::tuple || args.items.size() != 1) bad(where, fmt::format("{}: torch.Size takes one tuple", what));
      n = &g_.at(args.items[0]);
    }
    if (n->kind != pk::Kind::tuple && n->kind != pk::Kind::list) bad(where, fmt::format("{} is not a torch.Size", what));
    if (n->items.size() > options_.max_rank)
      bad(where, fmt::format("{} has {} dimensions, more than {}", what, n->items.size(), options_.max_rank));
    std::vector<std::uint64_t> out;
    for (const pk::NodeId d : n->items) out.push_back(count(d, where, what));
    return out;
  }

  void read_item(pk::NodeId id, Item& item) {
    const std::string where = fqn_place(item.fqn);
    const pk::Node& n = g_.at(id);
    const Class cls = n.kind == pk::Kind::object && n.newobj ? class_named(g_.global_name(id)) : Class::none;
    if (cls == Class::bytes) {
      (void)dict_state(state(id, Class::bytes, where, "BytesStorageMetadata"), where);
      return;
    }
    const pk::Node& s = dict_state(state(id, Class::tensor, where, "TensorStorageMetadata or BytesStorageMetadata"), where);
    item.tensor = true;
    read_properties(field(s, "properties"), item);
    for (const std::uint64_t d : item.size = sizes(field(s, "size"), where, "its size"))
      if (d > static_cast<std::uint64_t>(INT64_MAX)) bad(where, "a dimension of its size is too large");
    const pk::NodeId chunks = field(s, "chunks");
    if (chunks == pk::kNoNode || g_.at(chunks).kind != pk::Kind::list) bad(where, "its chunks are not a list");
    for (const pk::NodeId c : g_.at(chunks).items) {
      visit();
      const std::string at = where + " chunk " + std::to_string(item.chunks.size());
      const pk::Node& cs = dict_state(state(c, Class::chunk, at, "ChunkStorageMetadata"), at);
      Chunk chunk;
      chunk.offsets = sizes(field(cs, "offsets"), at, "its offsets");
      chunk.sizes = sizes(field(cs, "sizes"), at, "its sizes");
      if (chunk.offsets.size() != item.size.size() || chunk.sizes.size() != item.size.size())
        bad(at, fmt::format("offsets [{}] and sizes [{}] do not have the tensor's rank {}", fmt::join(chunk.offsets, ", "),
                            fmt::join(chunk.sizes, ", "), item.size.size()));
      item.chunks.push_back(std::move(chunk));
    }
  }

  // TensorProperties: its state is (dtype, layout, requires_grad, memory format, pin_memory), or a
  // dict of those fields.
  void read_properties(pk::NodeId id, Item& item) const {
    const std::string where = fqn_place(item.fqn);
    if (id == pk::kNoNode) bad(where, "it has no properties");
    const pk::Node& s = state(id, Class::properties, where, "TensorProperties");
    pk::NodeId dtype = pk::kNoNode, layout = pk::kNoNode;
    if (s.kind == pk::Kind::tuple && s.items.size() >= 2) {
      dtype = s.items[0];
      layout = s.items[1];
    } else if (s.kind == pk::Kind::dict) {
      dtype = field(s, "dtype");
      layout = field(s, "layout");
    }
    if (dtype == pk::kNoNode || g_.at(dtype).kind != pk::Kind::global) bad(where, "its properties name no dtype");
    const auto found = pytorch::torch_dtype(g_.global_name(dtype));
    if (!found) fail(ErrorCode::unsupported, name_, "{}: dtype {} is not supported", where, quote(g_.global_name(dtype)));
    item.dtype = *found;
    if (layout == pk::kNoNode) return;  // strided, the default
    std::string name = g_.global_name(layout);  // torch.strided
    if (g_.at(layout).kind == pk::Kind::object && name == "torch.serialization._get_layout") {
      const pk::Node& args = g_.at(g_.at(layout).args);
      name = args.kind == pk::Kind::tuple && args.items.size() == 1 && g_.at(args.items[0]).kind == pk::Kind::string
                 ? g_.at(args.items[0]).text
                 : std::string();
    }
    if (name != "torch.strided")
      fail(ErrorCode::unsupported, name_, "{}: layout {} is not supported (only strided tensors)", where,
           quote(name.empty() ? pk::render(g_, layout, 2) : name));
  }

  // storage_data: {MetadataIndex(fqn, offset): _StorageInfo(relative_path, offset, length[,
  // transform_descriptors])}; every chunk and every value must have an entry.
  void attach_storage(pk::NodeId id, Checkpoint& out, const std::map<std::string, std::size_t>& by_fqn) {
    if (id == pk::kNoNode || !is_dict(id)) bad("Metadata.storage_data", "is not a dict (written by a storage ckpt does not read?)");
    std::map<std::pair<std::string, std::vector<std::uint64_t>>, Storage> storage;
    std::map<std::string, Storage> values;
    for (const auto& [k, v] : g_.at(id).entries) {
      visit();
      const pk::Node& index = dict_state(state(k, Class::index, "storage_data", "a MetadataIndex"), "storage_data");
      const std::string fqn = text(field(index, "fqn"), "storage_data", "a MetadataIndex's fqn");
      const std::string where = "storage_data of " + fqn_place(fqn);
      const pk::NodeId offset = field(index, "offset");
      Storage s = read_storage(v, where);
      if (offset == pk::kNoNode || none(offset)) {
        if (!values.emplace(fqn, std::move(s)).second) bad(where, "listed twice");
      } else {
        auto key = std::make_pair(fqn, sizes(offset, where, "the MetadataIndex offset"));
        if (!storage.emplace(std::move(key), std::move(s)).second) bad(where, "a chunk is listed twice");
      }
    }
    for (auto& item : out.items) {
      if (!item.tensor) {
        const auto it = values.find(item.fqn);
        if (it == values.end()) bad(fqn_place(item.fqn), "its value has no storage_data entry");
        item.storage = it->second;
        continue;
      }
      for (auto& chunk : item.chunks) {
        const auto it = storage.find(std::make_pair(item.fqn, chunk.offsets));
        if (it == storage.end())
          bad(fqn_place(item.fqn), fmt::format("its chunk at [{}] has no storage_data entry", fmt::join(chunk.offsets, ", ")));
        chunk.storage = it->second;
      }
    }
    (void)by_fqn;
  }

  Storage read_storage(pk::NodeId id, const std::string& where) const {
    const pk::Node& s = dict_state(state(id, Class::storage, where, "a _StorageInfo"), where);
    Storage out;
    out.file = text(field(s, "relative_path"), where, "relative_path");
    out.offset = count(field(s, "offset"), where, "offset");
    out.length = count(field(s, "length"), where, "length");
    if (const pk::NodeId t = field(s, "transform_descriptors"); t != pk::kNoNode && !none(t)) {
      const pk::Node& list = g_.at(t);
      if (list.kind != pk::Kind::list && list.kind != pk::Kind::tuple) bad(where, "transform_descriptors is not a list");
      for (const pk::NodeId d : list.items) out.transforms.push_back(text(d, where, "a transform descriptor"));
    }
    return out;
  }

  // planner_data, when the state was flattened (torch 2.x's default): {fqn: (key, key, index, ...)}.
  // Used only when it gives every item a path whose parts, joined with dots, are its key.
  void attach_paths(pk::NodeId id, Checkpoint& out, const std::map<std::string, std::size_t>& by_fqn) {
    for (auto& item : out.items) item.path = {item.fqn};
    if (id == pk::kNoNode || none(id)) return;
    auto unusable = [&](const std::string& why) {
      for (auto& item : out.items) item.path = {item.fqn};
      out.notes.push_back(fmt::format("Metadata.planner_data {}: keys are kept as saved, not nested", why));
    };
    if (!is_dict(id)) return unusable("is not a map of keys to paths");
    std::vector<bool> seen(out.items.size());
    for (const auto& [k, v] : g_.at(id).entries) {
      visit();
      if (g_.at(k).kind != pk::Kind::string) continue;
      const auto it = by_fqn.find(g_.at(k).text);
      if (it == by_fqn.end()) continue;  // not a key of the state (a version marker, ...)
      const pk::Node& parts = g_.at(v);
      if ((parts.kind != pk::Kind::tuple && parts.kind != pk::Kind::list) || parts.items.empty() || parts.items.size() > 64)
        return unusable(fmt::format("gives key {} no path", quote(g_.at(k).text)));
      std::vector<PathPart> path;
      std::string joined;
      for (const pk::NodeId p : parts.items) {
        const pk::Node& part = g_.at(p);
        if (part.kind == pk::Kind::string) path.emplace_back(part.text);
        else if (part.kind == pk::Kind::integer && part.integer >= 0 && static_cast<std::uint64_t>(part.integer) < out.items.size())
          path.emplace_back(static_cast<std::uint64_t>(part.integer));
        else return unusable(fmt::format("gives key {} a path part that is not a key or a list index", quote(g_.at(k).text)));
        if (path.size() > 1) joined += '.';
        joined += part.kind == pk::Kind::string ? part.text : std::to_string(part.integer);
      }
      if (joined != g_.at(k).text) return unusable(fmt::format("gives key {} the path {}", quote(g_.at(k).text), quote(joined)));
      out.items[it->second].path = std::move(path);
      seen[it->second] = true;
    }
    if (const auto missing = std::find(seen.begin(), seen.end(), false); missing != seen.end())
      return unusable(fmt::format("gives key {} no path", quote(out.items[static_cast<std::size_t>(missing - seen.begin())].fqn)));
    out.flattened = true;
  }

  // A plain value (StorageMeta's fields) as JSON; pathlib paths as text.
  Metadata plain(pk::NodeId id, std::size_t depth) {
    visit();
    if (depth > 16) bad("Metadata.storage_meta", "nested too deeply");
    const pk::Node& n = g_.at(id);
    switch (n.kind) {
      case pk::Kind::none: return nullptr;
      case pk::Kind::boolean: return n.integer != 0;
      case pk::Kind::integer: return n.integer;
      case pk::Kind::floating: return n.floating;
      case pk::Kind::string: return n.text;
      case pk::Kind::list:
      case pk::Kind::tuple: {
        Metadata array = Metadata::array();
        for (const pk::NodeId item : n.items) array.push_back(plain(item, depth + 1));
        return array;
      }
      default: break;
    }
    if (n.kind == pk::Kind::object && !n.newobj && path_class(g_.global_name(id))) {
      std::string path;
      const pk::Node& args = g_.at(n.args);
      if (args.kind == pk::Kind::tuple)
        for (const pk::NodeId part : args.items) {
          const std::string piece = text(part, "Metadata.storage_meta", "a path part");
          path += path.empty() || path.back() == '/' ? piece : "/" + piece;
        }
      return path;
    }
    if (is_dict(id)) {
      Metadata object = Metadata::object();
      for (const auto& [k, v] : n.entries) object[text(k, "Metadata.storage_meta", "a key")] = plain(v, depth + 1);
      return object;
    }
    bad("Metadata.storage_meta", fmt::format("holds {}", pk::render(g_, id, 2, 60)));
  }

  const pk::Graph& g_;
  const std::string& name_;
  const ReadOptions& options_;
  std::size_t budget_;
  std::size_t visits_ = 0;
  const pk::Node empty_{};
};

}  // namespace

Checkpoint parse_metadata(std::span<const std::byte> bytes, const std::string& name, const ReadOptions& options) {
  const pk::Graph graph = pk::parse(bytes, name);
  Walker walker(graph, name, options, bytes.size() + (1u << 16));
  walker.refuse_unknown();
  return walker.walk();
}

}  // namespace ckpt::detail::dcp

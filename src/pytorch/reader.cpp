// PyTorch zip checkpoints: data.pkl interpreted against an allow-list, storages read from the
// zip entries data/<key> (in place when stored, as torch.save stores them, 64-byte aligned).

#include <array>
#include <cstring>
#include <map>

#include <nlohmann/json.hpp>

#include "ckpt/pytorch.h"
#include "ckpt/roles.h"
#include "pickle/pickle.h"
#include "pytorch/sniff.h"
#include "util/bytes.h"
#include "util/file_read.h"
#include "util/mapped_file.h"
#include "zip/zip.h"

namespace ckpt {
namespace {

using detail::fail;
using detail::quote;
namespace pk = detail::pickle;

constexpr std::array<std::pair<std::string_view, DType>, 12> kStorageTypes{{
    {"torch.DoubleStorage", DType::float64},
    {"torch.FloatStorage", DType::float32},
    {"torch.HalfStorage", DType::float16},
    {"torch.BFloat16Storage", DType::bfloat16},
    {"torch.LongStorage", DType::int64},
    {"torch.IntStorage", DType::int32},
    {"torch.ShortStorage", DType::int16},
    {"torch.CharStorage", DType::int8},
    {"torch.ByteStorage", DType::uint8},
    {"torch.BoolStorage", DType::bool_},
    {"torch.ComplexFloatStorage", DType::complex64},
    {"torch.ComplexDoubleStorage", DType::complex128},
}};

// The callables a pickle may call (REDUCE) for ckpt to read it. Classes it only instantiates
// (NEWOBJ, such as the nn.Module classes of a pickled model) stay inert objects and need no
// allow-listing: ckpt never constructs anything. Any other call is refused as unsafe.
bool allowed_call(const std::string& name) {
  return name == "collections.OrderedDict" || name == "torch._utils._rebuild_tensor_v2" ||
         name == "torch._utils._rebuild_parameter" || name == "builtins.set" || name == "__builtin__.set" ||
         name == "_codecs.encode";
}

struct Storage {
  std::string key;  // data/<key> in the zip; the key in the legacy format's list
  DType dtype;
  std::uint64_t numel;
  const detail::zip::Entry* entry = nullptr;  // zip format
  std::uint64_t data_offset = 0;              // of the bytes in the file, when stored in place
  bool located = false;
};

// Legacy files (before PyTorch 1.6, or _use_new_zipfile_serialization=False) start with the
// pickled magic number 0x1950a86a20f9469cfc6c (protocol 2, LONG1 of 10 bytes).
constexpr unsigned char kLegacyMagic[] = {0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46,
                                          0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19};

bool is_legacy(std::span<const std::byte> file) {
  return file.size() >= sizeof kLegacyMagic && std::memcmp(file.data(), kLegacyMagic, sizeof kLegacyMagic) == 0;
}

// Where a tensor's elements are in its storage.
struct View {
  std::size_t storage;  // index into storages
  std::uint64_t offset; // in elements
  std::vector<std::uint64_t> stride;
};

class PytorchReader final : public Reader {
 public:
  PytorchReader(const std::filesystem::path& path, const ReadOptions& options) : Reader(path, options) {
    format_ = "pytorch";
    name_ = path.string();
    fd_ = detail::open_readonly(path);
    mapping_ = detail::MappedFile::from_fd(fd_.get(), path);
    if (is_legacy(mapping_->bytes())) {
      open_legacy();
      finish_listing();
      return;
    }
    archive_ = std::make_unique<detail::zip::Archive>(mapping_->bytes(), name_);
    // Every entry sits under one folder, named after the file when it was saved.
    const detail::zip::Entry* pickle_entry = nullptr;
    for (const auto& e : archive_->entries())
      if (e.name.size() >= 9 && e.name.ends_with("/data.pkl") && e.name.find('/') == e.name.size() - 9) {
        pickle_entry = &e;
        prefix_ = e.name.substr(0, e.name.size() - 8);
      }
    if (!pickle_entry) fail(ErrorCode::format, name_, "zip has no <folder>/data.pkl: not a torch.save file");
    if (const auto* order = archive_->find(prefix_ + "byteorder")) {
      const auto bytes = archive_->read(*order);
      const std::string text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      if (text != "little" && text != "big")
        fail(ErrorCode::format, name_, "byteorder entry is {}, expected 'little' or 'big'", quote(text));
      big_endian_ = text == "big";
    }
    const auto pickle_bytes = archive_->read(*pickle_entry);
    const pk::Graph graph = pk::parse(pickle_bytes, name_ + ": " + pickle_entry->name);
    refuse_unsafe(graph);
    interpret(graph);
    if (const auto* roles = archive_->find(prefix_ + "ckpt_roles.json"); roles && role_source_ == RoleSource::heuristic)
      apply_roles(*roles);
    finish_listing();
  }

  Tensor read(std::size_t index) override {
    check_index(index);
    const TensorInfo& info = infos_[index];
    const View& view = views_[index];
    const Storage& storage = storages_[view.storage];
    const std::size_t itemsize = dtype_size(info.dtype);
    const std::uint64_t numel = shape_numel(info.shape);
    if (numel == 0) return Tensor::zeros(info.dtype, info.shape);
    const bool in_place = storage.entry == nullptr || storage.entry->method == 0;
    std::span<const std::byte> bytes;
    std::shared_ptr<const void> owner;
    if (in_place) {
      bytes = mapping_->bytes().subspan(static_cast<std::size_t>(storage.data_offset),
                                        static_cast<std::size_t>(storage.numel * itemsize));
      owner = mapping_;
    } else {
      auto copy = std::make_shared<std::vector<std::byte>>(archive_->read(*storage.entry));
      bytes = *copy;
      owner = copy;
    }
    const std::byte* base = bytes.data() + view.offset * itemsize;
    if (contiguous(info.shape, view.stride) && !big_endian_) {
      const bool aligned = reinterpret_cast<std::uintptr_t>(base) % itemsize == 0;
      if (options_.zero_copy && aligned && in_place) {
        mapping_->prefetch(storage.data_offset + view.offset * itemsize, numel * itemsize);
        return Tensor::view(info.dtype, info.shape, base, owner);
      }
      if (in_place) {  // pread: no page of the mapping is faulted in (and kept) for a copy
        Tensor out = Tensor::uninitialized(info.dtype, info.shape);
        detail::read_at(fd_.get(), storage.data_offset + view.offset * itemsize, out.mutable_bytes(), false, name_);
        return out;
      }
      return Tensor::copy_of(info.dtype, info.shape, {base, static_cast<std::size_t>(numel * itemsize)});
    }
    // Strided (transposed, sliced, expanded): gathered element by element into row-major order.
    Tensor out = Tensor::uninitialized(info.dtype, info.shape);
    std::byte* dst = out.mutable_bytes().data();
    std::vector<std::uint64_t> index_at(info.shape.size(), 0);
    for (std::uint64_t n = 0; n < numel; ++n) {
      std::uint64_t element = 0;
      for (std::size_t k = 0; k < index_at.size(); ++k) element += index_at[k] * view.stride[k];
      std::memcpy(dst + n * itemsize, base + element * itemsize, itemsize);
      for (std::size_t k = index_at.size(); k-- > 0;) {
        if (++index_at[k] < static_cast<std::uint64_t>(info.shape[k])) break;
        index_at[k] = 0;
      }
    }
    if (big_endian_) swap_bytes(out);
    return out;
  }

 private:
  static bool contiguous(const Shape& shape, const std::vector<std::uint64_t>& stride) {
    std::uint64_t expected = 1;
    for (std::size_t k = shape.size(); k-- > 0;) {
      if (shape[k] != 1 && stride[k] != expected) return false;
      expected *= static_cast<std::uint64_t>(shape[k]);
    }
    return true;
  }

  static void swap_bytes(Tensor& t) {
    // Complex values are pairs of floats, each swapped on its own.
    const std::size_t unit = dtype_is_complex(t.dtype()) ? dtype_size(t.dtype()) / 2 : dtype_size(t.dtype());
    auto b = t.mutable_bytes();
    for (std::size_t i = 0; i + unit <= b.size(); i += unit) std::reverse(b.begin() + i, b.begin() + i + unit);
  }

  // The legacy format: five pickles in a row (magic number, protocol version 1001, system info,
  // the object, the list of storage keys), then per key in that order an int64 element count and
  // the storage's bytes.
  void open_legacy() {
    const auto file = mapping_->bytes();
    std::size_t pos = 0;
    auto next = [&](const char* what) {
      std::size_t used = 0;
      pk::Graph graph = pk::parse(file.subspan(pos), fmt::format("{}: legacy {} at offset {}", name_, what, pos), {}, &used);
      pos += used;
      return graph;
    };
    (void)next("magic number");
    const pk::Graph version = next("protocol version");
    if (version.at(version.root()).kind != pk::Kind::integer || version.at(version.root()).integer != 1001)
      fail(ErrorCode::unsupported, name_, "legacy protocol version {} is not 1001", pk::render(version, version.root(), 1));
    const pk::Graph info = next("system info");
    if (is_dict(info, info.root()))
      if (const pk::NodeId little = member(info, info.at(info.root()), "little_endian"); little != pk::kNoNode)
        big_endian_ = info.at(little).kind == pk::Kind::boolean && info.at(little).integer == 0;
    const pk::Graph object = next("object");
    refuse_unsafe(object);
    interpret(object);
    const pk::Graph keys = next("storage keys");
    const pk::Node& list = keys.at(keys.root());
    if (list.kind != pk::Kind::list) fail(ErrorCode::format, name_, "legacy storage key list is not a list");
    for (const pk::NodeId item : list.items) {
      if (keys.at(item).kind != pk::Kind::string) fail(ErrorCode::format, name_, "legacy storage key is not a string");
      const std::string& key = keys.at(item).text;
      auto it = storage_index_.find(key);
      if (it == storage_index_.end())
        fail(ErrorCode::format, name_, "legacy storage {} at offset {} is not used by any tensor", quote(key), pos);
      Storage& s = storages_[it->second];
      if (file.size() - pos < 8) fail(ErrorCode::format, name_, "legacy storage {}: file ends at offset {}", quote(key), pos);
      const auto count = detail::load_le<std::uint64_t>(file.data() + pos);
      if (count != s.numel)
        fail(ErrorCode::format, name_, "legacy storage {} at offset {} holds {} elements, the pickle says {}", quote(key),
             pos, count, s.numel);
      const std::uint64_t bytes = s.numel * dtype_size(s.dtype);  // overflow checked when recorded
      if (bytes > file.size() - pos - 8)
        fail(ErrorCode::format, name_, "legacy storage {} at offset {} needs {} bytes, {} remain", quote(key), pos, bytes,
             file.size() - pos - 8);
      s.data_offset = pos + 8;
      s.located = true;
      pos += 8 + static_cast<std::size_t>(bytes);
    }
    for (const auto& s : storages_)
      if (!s.located) fail(ErrorCode::format, name_, "legacy storage {} has no data", quote(s.key));
  }

  // Roles and metadata that ckpt wrote beside the pickle (format-spec/conventions.md §4).
  void apply_roles(const detail::zip::Entry& entry) {
    const auto bytes = archive_->read(entry);
    Metadata roles;
    try {
      roles = Metadata::parse(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
    } catch (const nlohmann::json::exception& e) {
      fail(ErrorCode::format, name_, "{} is not valid JSON: {}", quote(entry.name), e.what());
    }
    if (!roles.is_object() || !roles.value("buffers", Metadata::object()).is_object())
      fail(ErrorCode::format, name_, "{} is not a JSON object with a \"buffers\" object", quote(entry.name));
    if (roles.value("version", 0) > 1)
      fail(ErrorCode::unsupported, name_, "{} version {} is newer than this reader (1)", quote(entry.name),
           roles["version"].dump());
    const Metadata buffers = roles.value("buffers", Metadata::object());
    for (auto& info : infos_) {
      if (info.role == Role::extra) continue;
      const auto it = buffers.find(info.name);
      if (it == buffers.end() || !it->is_object()) {
        info.role = Role::parameter;
        info.collection.clear();
        continue;
      }
      info.role = Role::buffer;
      const auto collection = it->value("collection", Metadata(std::string(kDefaultBufferCollection)));
      const auto persistent = it->value("persistent", Metadata(true));
      info.collection = collection.is_string() ? collection.get<std::string>() : std::string(kDefaultBufferCollection);
      info.persistent = !persistent.is_boolean() || persistent.get<bool>();
    }
    if (roles.contains("metadata") && roles["metadata"].is_object()) metadata_ = roles["metadata"];
    role_source_ = RoleSource::metadata;
  }

  void refuse_unsafe(const pk::Graph& graph) {
    for (pk::NodeId id = 0; id < graph.size(); ++id) {
      const pk::Node& n = graph.at(id);
      if (n.kind != pk::Kind::object || n.newobj) continue;
      const std::string name = graph.global_name(id);
      if (!allowed_call(name))
        fail(ErrorCode::unsupported, name_,
             "unsafe pickle: it calls {} (ckpt never runs pickled code; it only reads tensors, dicts and modules)",
             quote(name.empty() ? pk::render(graph, n.first, 2) : name));
    }
  }

  [[noreturn]] void bad(const std::string& key, const std::string& what) {
    fail(ErrorCode::format, name_, "data.pkl, value of {}: {}", quote(key), what);
  }

  std::int64_t integer(const pk::Graph& g, pk::NodeId id, const std::string& key, const char* what) {
    const auto& n = g.at(id);
    if (n.kind != pk::Kind::integer) bad(key, fmt::format("{} is not an integer", what));
    return n.integer;
  }

  std::vector<std::int64_t> integers(const pk::Graph& g, pk::NodeId id, const std::string& key, const char* what) {
    const auto& n = g.at(id);
    if (n.kind != pk::Kind::tuple) bad(key, fmt::format("{} is not a tuple", what));
    if (n.items.size() > options_.max_rank) bad(key, fmt::format("{} has more than {} dimensions", what, options_.max_rank));
    std::vector<std::int64_t> out;
    for (auto item : n.items) {
      out.push_back(integer(g, item, key, what));
      if (out.back() < 0) bad(key, fmt::format("{} holds a negative value", what));
    }
    return out;
  }

  std::size_t storage(const pk::Graph& g, pk::NodeId id, const std::string& key) {
    const auto& n = g.at(id);
    if (n.kind != pk::Kind::persistent) bad(key, "the storage is not a persistent id");
    const auto& pid = g.at(n.first);
    if (pid.kind != pk::Kind::tuple || pid.items.size() < 5 || g.at(pid.items[0]).kind != pk::Kind::string ||
        g.at(pid.items[0]).text != "storage")
      bad(key, "the persistent id is not ('storage', type, key, location, numel)");
    const std::string type = g.global_name(pid.items[1]);
    const auto found = std::find_if(kStorageTypes.begin(), kStorageTypes.end(), [&](auto& p) { return p.first == type; });
    if (found == kStorageTypes.end())
      fail(ErrorCode::unsupported, name_, "data.pkl, value of {}: storage type {} is not supported", quote(key), quote(type));
    const auto& storage_key = g.at(pid.items[2]);
    if (storage_key.kind != pk::Kind::string) bad(key, "the storage key is not a string");
    const std::int64_t numel = integer(g, pid.items[4], key, "the storage size");
    if (numel < 0) bad(key, "the storage size is negative");
    auto it = storage_index_.find(storage_key.text);
    if (it != storage_index_.end()) {  // shared storage (tied weights): described once
      const Storage& s = storages_[it->second];
      if (s.dtype != found->second || s.numel != static_cast<std::uint64_t>(numel))
        bad(key, fmt::format("storage {} is described twice, differently", quote(storage_key.text)));
      return it->second;
    }
    Storage s{storage_key.text, found->second, static_cast<std::uint64_t>(numel)};
    const auto bytes = detail::checked_mul(s.numel, dtype_size(s.dtype));
    if (!bytes) bad(key, fmt::format("storage {} of {} elements overflows", quote(s.key), numel));
    if (archive_) {
      s.entry = archive_->find(prefix_ + "data/" + s.key);
      if (!s.entry) bad(key, fmt::format("storage {} has no zip entry {}data/{}", quote(s.key), prefix_, s.key));
      if (*bytes > s.entry->size)
        bad(key, fmt::format("storage {} claims {} elements of {}, but its entry holds {} bytes", quote(s.key), numel,
                             dtype_name(s.dtype), s.entry->size));
      s.data_offset = s.entry->data_offset;
      s.located = true;
    } else if (pid.items.size() > 5 && g.at(pid.items[5]).kind != pk::Kind::none) {
      fail(ErrorCode::unsupported, name_, "data.pkl, value of {}: legacy storage views are not supported", quote(key));
    }
    storages_.push_back(std::move(s));
    storage_index_.emplace(storage_key.text, storages_.size() - 1);
    return storages_.size() - 1;
  }

  // A tensor: _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata]),
  // possibly wrapped in _rebuild_parameter(tensor, requires_grad, hooks).
  void add_tensor(const pk::Graph& g, pk::NodeId id, const std::string& key) {
    const pk::Node* n = &g.at(id);
    if (g.global_name(id) == "torch._utils._rebuild_parameter") {
      const auto& args = g.at(n->args);
      if (args.kind != pk::Kind::tuple || args.items.empty()) bad(key, "_rebuild_parameter without arguments");
      id = args.items[0];
      n = &g.at(id);
    }
    if (g.global_name(id) != "torch._utils._rebuild_tensor_v2") bad(key, "not a tensor");
    const auto& args = g.at(n->args);
    if (args.kind != pk::Kind::tuple || args.items.size() < 4) bad(key, "_rebuild_tensor_v2 needs at least 4 arguments");
    View view;
    view.storage = storage(g, args.items[0], key);
    const std::int64_t offset = integer(g, args.items[1], key, "the storage offset");
    if (offset < 0) bad(key, "the storage offset is negative");
    view.offset = static_cast<std::uint64_t>(offset);
    TensorInfo info;
    info.name = key;
    info.dtype = storages_[view.storage].dtype;
    info.shape = integers(g, args.items[2], key, "the size");
    const auto stride = integers(g, args.items[3], key, "the stride");
    if (stride.size() != info.shape.size()) bad(key, "size and stride differ in rank");
    view.stride.assign(stride.begin(), stride.end());
    // The last element the view reaches must lie inside the storage (overflow-checked).
    std::uint64_t numel = 0;
    try {
      numel = shape_numel(info.shape);
      (void)info.nbytes();
    } catch (const Error&) {
      bad(key, fmt::format("size {} overflows", shape_to_string(info.shape)));
    }
    if (numel > 0) {
      std::uint64_t last = view.offset;
      for (std::size_t k = 0; k < stride.size(); ++k) {
        const auto step = detail::checked_mul(static_cast<std::uint64_t>(info.shape[k] - 1), view.stride[k]);
        const auto sum = step ? detail::checked_add(last, *step) : std::nullopt;
        if (!sum) bad(key, "the view overflows");
        last = *sum;
      }
      if (last >= storages_[view.storage].numel)
        bad(key, fmt::format("the view (offset {}, size {}, stride [{}]) reaches element {} of a storage of {}", offset,
                             shape_to_string(info.shape), fmt::join(stride, ", "), last, storages_[view.storage].numel));
    }
    infos_.push_back(std::move(info));
    views_.push_back(std::move(view));
  }

  static bool is_tensor(const pk::Graph& g, pk::NodeId id) {
    const std::string callable = g.global_name(id);
    return g.at(id).kind == pk::Kind::object &&
           (callable == "torch._utils._rebuild_tensor_v2" || callable == "torch._utils._rebuild_parameter");
  }
  static bool is_dict(const pk::Graph& g, pk::NodeId id) {
    const auto& n = g.at(id);
    return n.kind == pk::Kind::dict || (n.kind == pk::Kind::object && g.global_name(id) == "collections.OrderedDict");
  }
  std::string key_text(const pk::Graph& g, pk::NodeId id, const std::string& where) {
    const auto& n = g.at(id);
    if (n.kind == pk::Kind::string) return n.text;
    if (n.kind == pk::Kind::integer) return std::to_string(n.integer);  // optimizer state is keyed by int
    fail(ErrorCode::unsupported, name_, "data.pkl{}: a dict key is {}, not a string or integer", where,
         pk::render(g, id, 1).substr(0, 40));
  }
  static std::size_t direct_tensors(const pk::Graph& g, pk::NodeId dict) {
    std::size_t n = 0;
    for (const auto& [k, v] : g.at(dict).entries) n += is_tensor(g, v);
    return n;
  }

  // A value that is not a tensor, as metadata (lists and tuples as arrays, sets too).
  Metadata to_metadata(const pk::Graph& g, pk::NodeId id, const std::string& path, std::size_t depth) {
    const auto& n = g.at(id);
    if (depth > 64) fail(ErrorCode::unsupported, name_, "data.pkl, {}: nested too deeply", quote(path));
    switch (n.kind) {
      case pk::Kind::none: return nullptr;
      case pk::Kind::boolean: return n.integer != 0;
      case pk::Kind::integer: return n.integer;
      case pk::Kind::floating: return n.floating;
      case pk::Kind::string: return n.text;
      case pk::Kind::list:
      case pk::Kind::tuple:
      case pk::Kind::set: {
        Metadata array = Metadata::array();
        for (auto item : n.items) array.push_back(to_metadata(g, item, path, depth + 1));
        return array;
      }
      default:
        if (is_dict(g, id)) {
          Metadata object = Metadata::object();
          for (const auto& [k, v] : n.entries) object[key_text(g, k, ", " + quote(path))] = to_metadata(g, v, path, depth + 1);
          return object;
        }
        fail(ErrorCode::unsupported, name_, "data.pkl, value of {} is {}, which ckpt does not read", quote(path),
             pk::render(g, id, 1).substr(0, 60));
    }
  }

  // Tensors of the model dict become parameters and buffers; tensors elsewhere go to an extra
  // section named after their top-level key (the rest of the path is their name); everything
  // else becomes metadata, nested as in the file.
  void walk(const pk::Graph& g, pk::NodeId dict, const std::vector<std::string>& path, pk::NodeId model,
            Metadata& metadata, const BufferRule& is_buffer) {
    if (path.size() > 64) fail(ErrorCode::unsupported, name_, "data.pkl: dicts nested too deeply");
    for (const auto& [k, v] : g.at(dict).entries) {
      std::vector<std::string> here = path;
      here.push_back(key_text(g, k, ""));
      const std::string dotted = fmt::format("{}", fmt::join(here, "."));
      if (is_tensor(g, v)) {
        add_tensor(g, v, dotted);
        TensorInfo& info = infos_.back();
        if (dict == model) {
          info.name = here.back();
          if (is_buffer(info.name, info.dtype)) {
            info.role = Role::buffer;
            info.collection = std::string(kDefaultBufferCollection);
          }
        } else {
          info.role = Role::extra;
          info.section = here.size() > 1 ? here.front() : "checkpoint";
          info.name = here.size() > 1 ? fmt::format("{}", fmt::join(here.begin() + 1, here.end(), ".")) : here.front();
        }
      } else if (is_dict(g, v)) {
        Metadata child = Metadata::object();
        walk(g, v, here, model, child, is_buffer);
        if (!child.empty() || g.at(v).entries.empty()) metadata[here.back()] = std::move(child);
      } else {
        metadata[here.back()] = to_metadata(g, v, dotted, 0);
      }
    }
  }

  // A module's __dict__ entry `key`, or kNoNode.
  static pk::NodeId member(const pk::Graph& g, const pk::Node& state, std::string_view key) {
    for (const auto& [k, v] : state.entries)
      if (g.at(k).kind == pk::Kind::string && g.at(k).text == key) return v;
    return pk::kNoNode;
  }

  static bool is_module(const pk::Graph& g, pk::NodeId id) {
    const pk::Node& n = g.at(id);
    return n.kind == pk::Kind::object && n.newobj && n.state != pk::kNoNode && g.at(n.state).kind == pk::Kind::dict &&
           member(g, g.at(n.state), "_parameters") != pk::kNoNode;
  }

  // A pickled nn.Module (torch.save(model)): exact roles from each module's _parameters,
  // _buffers and _non_persistent_buffers_set, in state_dict order (a module's parameters, its
  // buffers, then its children), non-persistent buffers included and marked.
  void walk_module(const pk::Graph& g, pk::NodeId id, const std::string& prefix, std::size_t depth) {
    if (depth > 256) fail(ErrorCode::unsupported, name_, "data.pkl: modules nested too deeply");
    const pk::Node& state = g.at(g.at(id).state);
    auto entries = [&](const char* key) -> const std::vector<std::pair<pk::NodeId, pk::NodeId>>* {
      const pk::NodeId v = member(g, state, key);
      if (v == pk::kNoNode || !is_dict(g, v)) return nullptr;
      return &g.at(v).entries;
    };
    std::vector<std::string> non_persistent;
    if (const pk::NodeId set = member(g, state, "_non_persistent_buffers_set"); set != pk::kNoNode) {
      const pk::Node& s = g.at(set);
      std::vector<pk::NodeId> items = s.items;
      if (s.kind == pk::Kind::object && s.args != pk::kNoNode) {  // set([...]) in protocol 2
        const pk::Node& args = g.at(s.args);
        if (args.kind == pk::Kind::tuple && !args.items.empty()) items = g.at(args.items[0]).items;
      }
      for (auto item : items)
        if (g.at(item).kind == pk::Kind::string) non_persistent.push_back(g.at(item).text);
    }
    for (const char* section : {"_parameters", "_buffers"}) {
      const auto* list = entries(section);
      if (!list) continue;
      for (const auto& [k, v] : *list) {
        if (g.at(v).kind == pk::Kind::none) continue;  // e.g. bias=False
        const std::string key = key_text(g, k, "");
        add_tensor(g, v, prefix + key);
        TensorInfo& info = infos_.back();
        if (std::string_view(section) == "_buffers") {
          info.role = Role::buffer;
          info.collection = std::string(kDefaultBufferCollection);
          info.persistent = std::find(non_persistent.begin(), non_persistent.end(), key) == non_persistent.end();
        }
      }
    }
    if (const auto* children = entries("_modules"))
      for (const auto& [k, v] : *children) {
        if (g.at(v).kind == pk::Kind::none) continue;
        if (!is_module(g, v))
          fail(ErrorCode::unsupported, name_, "data.pkl: submodule {} is not a module", quote(prefix + key_text(g, k, "")));
        walk_module(g, v, prefix + key_text(g, k, "") + ".", depth + 1);
      }
  }

  void interpret(const pk::Graph& g) {
    if (is_module(g, g.root())) {
      role_source_ = RoleSource::module;
      metadata_["module"] = g.global_name(g.at(g.root()).first);
      walk_module(g, g.root(), "", 0);
      return;
    }
    role_source_ = RoleSource::heuristic;
    if (!is_dict(g, g.root()))
      fail(ErrorCode::unsupported, name_, "data.pkl holds {}, not a dict (a state_dict or a checkpoint)",
           pk::render(g, g.root(), 2).substr(0, 80));
    // The model: the dict named by options.model_key; else the top level if it holds tensors
    // itself; else the top-level value that is a dict holding the most tensors.
    pk::NodeId model = g.root();
    if (!options_.model_key.empty()) {
      for (std::size_t start = 0; start <= options_.model_key.size();) {
        const auto dot = std::min(options_.model_key.find('.', start), options_.model_key.size());
        const std::string part = options_.model_key.substr(start, dot - start);
        pk::NodeId next = pk::kNoNode;
        for (const auto& [k, v] : g.at(model).entries)
          if ((g.at(k).kind == pk::Kind::string || g.at(k).kind == pk::Kind::integer) && key_text(g, k, "") == part)
            next = v;
        if (next == pk::kNoNode || !is_dict(g, next))
          fail(ErrorCode::invalid_argument, name_, "no dict at key {} (asked for the model with {})", quote(part),
               quote(options_.model_key));
        model = next;
        start = dot + 1;
      }
      model_key_ = options_.model_key;
    } else if (direct_tensors(g, g.root()) == 0) {
      std::size_t best = 0;
      for (const auto& [k, v] : g.at(g.root()).entries)
        if (is_dict(g, v) && direct_tensors(g, v) > best) {
          best = direct_tensors(g, v);
          model = v;
          model_key_ = key_text(g, k, "");
        }
    }
    const BufferRule is_buffer(options_.buffer_regex);
    walk(g, g.root(), {}, model, metadata_, is_buffer);
  }

  std::string name_;
  std::string prefix_;  // "<folder>/"
  bool big_endian_ = false;
  std::shared_ptr<const detail::MappedFile> mapping_;
  detail::UniqueFd fd_;  // copies of contiguous data come through pread, not the mapping
  std::unique_ptr<detail::zip::Archive> archive_;
  std::vector<Storage> storages_;
  std::map<std::string, std::size_t> storage_index_;
  std::vector<View> views_;  // parallel to infos_
};

}  // namespace

namespace detail::pytorch {

bool sniff(std::span<const std::byte> head, std::uint64_t) {
  if (is_legacy(head)) return true;
  if (head.size() < 30 || load_le<std::uint32_t>(head.data()) != 0x04034b50) return false;
  const auto name_len = load_le<std::uint16_t>(head.data() + 26);
  if (30u + name_len > head.size()) return false;
  return std::string_view(reinterpret_cast<const char*>(head.data()) + 30, name_len).ends_with("/data.pkl");
}

}  // namespace detail::pytorch

std::unique_ptr<Reader> open_pytorch(const std::filesystem::path& path, const ReadOptions& options) {
  return std::make_unique<PytorchReader>(path, options);
}

}  // namespace ckpt

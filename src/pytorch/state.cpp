// A .pt pickle as a state_dict or a training checkpoint: containers, tensors and their storages,
// and every other value as metadata (format-spec/conventions.md §4).
#include <algorithm>
#include <array>
#include <cstring>

#include <nlohmann/json.hpp>

#include "ckpt/dcp.h"
#include "ckpt/pytorch.h"
#include "ckpt/roles.h"
#include "pytorch/interpret.h"
#include "util/bytes.h"
#include "util/json_strict.h"
#include "util/json_get.h"

namespace ckpt::detail::pytorch {

namespace {

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
         name == "torch._utils._rebuild_tensor_v3" || name == "torch._utils._rebuild_parameter" ||
         name == "torch._utils._rebuild_parameter_with_state" || name == "builtins.set" ||
         name == "__builtin__.set" || name == "_codecs.encode" ||
         // TorchScript's typed containers (torch/jit/_pickle.py): pure data, lists and tags.
         name == "torch.jit._pickle.build_intlist" || name == "torch.jit._pickle.build_doublelist" ||
         name == "torch.jit._pickle.build_boollist" || name == "torch.jit._pickle.build_tensorlist" ||
         name == "torch.jit._pickle.restore_type_tag";
}

// The dtypes _rebuild_tensor_v3 names (GLOBAL torch.<dtype>), for storages without a type.
constexpr std::array<std::pair<std::string_view, DType>, 17> kTorchDtypes{{
    {"torch.float64", DType::float64},   {"torch.float32", DType::float32},
    {"torch.float16", DType::float16},   {"torch.bfloat16", DType::bfloat16},
    {"torch.float8_e4m3fn", DType::float8_e4m3fn}, {"torch.float8_e5m2", DType::float8_e5m2},
    {"torch.int64", DType::int64},       {"torch.int32", DType::int32},
    {"torch.int16", DType::int16},       {"torch.int8", DType::int8},
    {"torch.uint64", DType::uint64},     {"torch.uint32", DType::uint32},
    {"torch.uint16", DType::uint16},     {"torch.uint8", DType::uint8},
    {"torch.bool", DType::bool_},        {"torch.complex64", DType::complex64},
    {"torch.complex128", DType::complex128},
}};

}  // namespace

std::optional<DType> torch_dtype(std::string_view global_name) {
  const auto found =
      std::find_if(kTorchDtypes.begin(), kTorchDtypes.end(), [&](auto& p) { return p.first == global_name; });
  if (found == kTorchDtypes.end()) return std::nullopt;
  return found->second;
}

void Interpreter::refuse_unsafe(const pk::Graph& graph) {
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

void Interpreter::visit(const pk::Graph& g) {
  const std::size_t budget = kBaseVisits + kVisitsPerNode * g.size();
  if (++visits_ > budget)
    fail(ErrorCode::unsupported, name_,
         "data.pkl: shared references expand its {} values to more than {} (each reference is a copy); refused",
         g.size(), budget);
}

[[noreturn]] void Interpreter::bad(const std::string& key, const std::string& what) {
  fail(ErrorCode::format, name_, "data.pkl, value of {}: {}", quote(key), what);
}

std::int64_t Interpreter::integer(const pk::Graph& g, pk::NodeId id, const std::string& key, const char* what) {
  const auto& n = g.at(id);
  if (n.kind != pk::Kind::integer) bad(key, fmt::format("{} is not an integer", what));
  return n.integer;
}

std::vector<std::int64_t> Interpreter::integers(const pk::Graph& g, pk::NodeId id, const std::string& key, const char* what) {
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

// A storage: the persistent id ('storage', type, key, location, numel[, view]). Typed storages
// count elements; UntypedStorage counts bytes. The legacy format's sixth field, when not None,
// is (view_key, offset, size): the storage is a slice of the storage `key`, in its elements.
std::size_t Interpreter::storage(const pk::Graph& g, pk::NodeId id, const std::string& key) {
  const auto& n = g.at(id);
  if (n.kind != pk::Kind::persistent) bad(key, "the storage is not a persistent id");
  const auto& pid = g.at(n.first);
  if (pid.kind != pk::Kind::tuple || pid.items.size() < 5 || g.at(pid.items[0]).kind != pk::Kind::string ||
      g.at(pid.items[0]).text != "storage")
    bad(key, "the persistent id is not ('storage', type, key, location, numel)");
  const std::string type = g.global_name(pid.items[1]);
  std::optional<DType> dtype;
  if (type != "torch.UntypedStorage") {
    const auto found = std::find_if(kStorageTypes.begin(), kStorageTypes.end(), [&](auto& p) { return p.first == type; });
    if (found == kStorageTypes.end())
      fail(ErrorCode::unsupported, name_, "data.pkl, value of {}: storage type {} is not supported", quote(key), quote(type));
    dtype = found->second;
  }
  const std::size_t itemsize = dtype ? dtype_size(*dtype) : 1;
  const auto& storage_key = g.at(pid.items[2]);
  if (storage_key.kind != pk::Kind::string) bad(key, "the storage key is not a string");
  const std::int64_t numel = integer(g, pid.items[4], key, "the storage size");
  if (numel < 0) bad(key, "the storage size is negative");
  const auto nbytes = detail::checked_mul(static_cast<std::uint64_t>(numel), itemsize);
  if (!nbytes) bad(key, fmt::format("storage {} of {} elements overflows", quote(storage_key.text), numel));
  std::size_t index = find_or_add_storage(storage_key.text, dtype, *nbytes, key);
  if (archive_ || pid.items.size() < 6 || g.at(pid.items[5]).kind == pk::Kind::none) {
    if (archive_ && pid.items.size() > 5 && g.at(pid.items[5]).kind != pk::Kind::none)
      bad(key, "a storage view in a zip checkpoint (only the legacy format has them)");
    return index;
  }
  // A legacy storage view.
  const auto& view = g.at(pid.items[5]);
  if (view.kind != pk::Kind::tuple || view.items.size() != 3 || g.at(view.items[0]).kind != pk::Kind::string)
    bad(key, "the storage view is not (key, offset, size)");
  const std::int64_t offset = integer(g, view.items[1], key, "the storage view offset");
  const std::int64_t size = integer(g, view.items[2], key, "the storage view size");
  if (offset < 0 || size < 0 || static_cast<std::uint64_t>(offset) > static_cast<std::uint64_t>(numel) ||
      static_cast<std::uint64_t>(size) > static_cast<std::uint64_t>(numel - offset))
    bad(key, fmt::format("storage view {} (offset {}, size {}) lies outside storage {} of {} elements",
                         quote(g.at(view.items[0]).text), offset, size, quote(storage_key.text), numel));
  const std::size_t root = index;
  index = find_or_add_storage(g.at(view.items[0]).text, dtype, static_cast<std::uint64_t>(size) * itemsize, key);
  Storage& v = storages_[index];
  const std::uint64_t root_offset = static_cast<std::uint64_t>(offset) * itemsize;
  if (v.root == kNoStorage && index != root) {
    v.root = root;
    v.root_offset = root_offset;
  } else if (v.root != root || v.root_offset != root_offset) {
    bad(key, fmt::format("storage view {} is described twice, differently", quote(v.key)));
  }
  return index;
}

std::size_t Interpreter::find_or_add_storage(const std::string& storage_key, std::optional<DType> dtype, std::uint64_t nbytes,
                                const std::string& key) {
  auto it = storage_index_.find(storage_key);
  if (it != storage_index_.end()) {  // shared storage (tied weights): described once
    const Storage& s = storages_[it->second];
    if (s.dtype != dtype || s.nbytes != nbytes)
      bad(key, fmt::format("storage {} is described twice, differently", quote(storage_key)));
    return it->second;
  }
  Storage s{storage_key, dtype, nbytes};
  if (archive_) {
    s.entry = archive_->find(prefix_ + "data/" + s.key);
    if (!s.entry) bad(key, fmt::format("storage {} has no zip entry {}data/{}", quote(s.key), prefix_, s.key));
    if (nbytes > s.entry->size)
      bad(key, fmt::format("storage {} claims {} bytes, but its entry holds {}", quote(s.key), nbytes, s.entry->size));
    s.located = true;  // data_offset: from the local header, when first read
  }
  storages_.push_back(std::move(s));
  storage_index_.emplace(storage_key, storages_.size() - 1);
  return storages_.size() - 1;
}

// A tensor: _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])
// on a typed storage, or _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks,
// dtype[, metadata]) on an UntypedStorage; possibly wrapped in _rebuild_parameter(tensor,
// requires_grad, hooks) or _rebuild_parameter_with_state(tensor, requires_grad, hooks, state).
// Offsets and strides count elements of the tensor's dtype.
void Interpreter::add_tensor(const pk::Graph& g, pk::NodeId id, const std::string& key) {
  const pk::Node* n = &g.at(id);
  if (const std::string wrapper = g.global_name(id);
      wrapper == "torch._utils._rebuild_parameter" || wrapper == "torch._utils._rebuild_parameter_with_state") {
    const auto& args = g.at(n->args);
    if (args.kind != pk::Kind::tuple || args.items.empty()) bad(key, "_rebuild_parameter without arguments");
    id = args.items[0];
    n = &g.at(id);
  }
  const std::string rebuild = g.global_name(id);
  const bool v3 = rebuild == "torch._utils._rebuild_tensor_v3";
  if (rebuild != "torch._utils._rebuild_tensor_v2" && !v3) bad(key, "not a tensor");
  const auto& args = g.at(n->args);
  if (args.kind != pk::Kind::tuple || args.items.size() < (v3 ? 7u : 4u))
    bad(key, v3 ? "_rebuild_tensor_v3 needs at least 7 arguments" : "_rebuild_tensor_v2 needs at least 4 arguments");
  View view;
  view.storage = storage(g, args.items[0], key);
  const Storage& storage = storages_[view.storage];
  TensorInfo info;
  info.name = key;
  if (v3) {
    const std::string dtype = g.global_name(args.items[6]);
    const auto found = torch_dtype(dtype);
    if (g.at(args.items[6]).kind != pk::Kind::global || !found)
      fail(ErrorCode::unsupported, name_, "data.pkl, value of {}: dtype {} is not supported", quote(key),
           quote(dtype.empty() ? pk::render(g, args.items[6], 1) : dtype));
    info.dtype = *found;
    if (storage.dtype && *storage.dtype != info.dtype)
      bad(key, fmt::format("a {} tensor on a {} storage", dtype_name(info.dtype), dtype_name(*storage.dtype)));
  } else {
    if (!storage.dtype) bad(key, "_rebuild_tensor_v2 on an UntypedStorage (no dtype)");
    info.dtype = *storage.dtype;
  }
  const std::int64_t offset = integer(g, args.items[1], key, "the storage offset");
  if (offset < 0) bad(key, "the storage offset is negative");
  view.offset = static_cast<std::uint64_t>(offset);
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
    const std::uint64_t capacity = storage.nbytes / dtype_size(info.dtype);
    std::uint64_t last = view.offset;
    for (std::size_t k = 0; k < stride.size(); ++k) {
      const auto step = detail::checked_mul(static_cast<std::uint64_t>(info.shape[k] - 1), view.stride[k]);
      const auto sum = step ? detail::checked_add(last, *step) : std::nullopt;
      if (!sum) bad(key, "the view overflows");
      last = *sum;
    }
    if (last >= capacity)
      bad(key, fmt::format("the view (offset {}, size {}, stride [{}]) reaches element {} of a storage of {}", offset,
                           shape_to_string(info.shape), fmt::join(stride, ", "), last, capacity));
  }
  infos_.push_back(std::move(info));
  views_.push_back(std::move(view));
}

bool Interpreter::is_tensor(const pk::Graph& g, pk::NodeId id) {
  const std::string callable = g.global_name(id);
  return g.at(id).kind == pk::Kind::object &&
         (callable == "torch._utils._rebuild_tensor_v2" || callable == "torch._utils._rebuild_tensor_v3" ||
          callable == "torch._utils._rebuild_parameter" || callable == "torch._utils._rebuild_parameter_with_state");
}

bool Interpreter::is_dict(const pk::Graph& g, pk::NodeId id) {
  const auto& n = g.at(id);
  return n.kind == pk::Kind::dict || (n.kind == pk::Kind::object && g.global_name(id) == "collections.OrderedDict");
}

std::string Interpreter::key_text(const pk::Graph& g, pk::NodeId id, const std::string& where) {
  const auto& n = g.at(id);
  if (n.kind == pk::Kind::string) return n.text;
  if (n.kind == pk::Kind::integer) return std::to_string(n.integer);  // optimizer state is keyed by int
  fail(ErrorCode::unsupported, name_, "data.pkl{}: a dict key is {}, not a string or integer", where,
       pk::render(g, id, 1).substr(0, 40));
}

std::size_t Interpreter::direct_tensors(const pk::Graph& g, pk::NodeId dict) {
  std::size_t n = 0;
  for (const auto& [k, v] : g.at(dict).entries) n += is_tensor(g, v);
  return n;
}

// A value that is not a tensor, as metadata (lists and tuples as arrays, sets too).
// A value that is not a tensor, as metadata (lists, tuples and sets as arrays). `where` is its
// key path (dict keys, list indices); the paths of tuples are recorded so writers can restore them.
Metadata Interpreter::to_metadata(const pk::Graph& g, pk::NodeId id, const std::string& path, Metadata& where, std::size_t depth) {
  const auto& n = g.at(id);
  if (depth > 64) fail(ErrorCode::unsupported, name_, "data.pkl, {}: nested too deeply", quote(path));
  visit(g);
  switch (n.kind) {
    case pk::Kind::none: return nullptr;
    case pk::Kind::boolean: return n.integer != 0;
    case pk::Kind::integer: return n.integer;
    case pk::Kind::floating: return n.floating;
    case pk::Kind::string: return n.text;
    case pk::Kind::list:
    case pk::Kind::tuple:
    case pk::Kind::set: {
      if (n.kind == pk::Kind::tuple) tuple_paths_.push_back(where);
      Metadata array = Metadata::array();
      for (std::size_t i = 0; i < n.items.size(); ++i) {
        where.push_back(i);
        array.push_back(to_metadata(g, n.items[i], path, where, depth + 1));
        where.erase(where.size() - 1);
      }
      return array;
    }
    default:
      if (is_dict(g, id)) {
        Metadata object = Metadata::object();
        for (const auto& [k, v] : n.entries) {
          const std::string key = key_text(g, k, ", " + quote(path));
          where.push_back(key);
          object[key] = to_metadata(g, v, path, where, depth + 1);
          where.erase(where.size() - 1);
        }
        return object;
      }
      fail(ErrorCode::unsupported, name_, "data.pkl, value of {} is {}, which ckpt does not read", quote(path),
           pk::render(g, id, 1).substr(0, 60));
  }
}

// Tensors of the model dict become parameters and buffers; tensors elsewhere go to an extra
// section named after their top-level key (the rest of the path is their name); everything
// else becomes metadata, nested as in the file.
void Interpreter::walk(const pk::Graph& g, pk::NodeId dict, const std::vector<std::string>& path, pk::NodeId model,
          Metadata& metadata, const BufferRule& is_buffer) {
  if (path.size() > 64) fail(ErrorCode::unsupported, name_, "data.pkl: dicts nested too deeply");
  // Dicts keyed by integers (an optimizer's state) are recorded so that writers can restore them.
  if (std::any_of(g.at(dict).entries.begin(), g.at(dict).entries.end(),
                  [&](const auto& kv) { return g.at(kv.first).kind == pk::Kind::integer; }))
    int_key_paths_.push_back(path);
  for (const auto& [k, v] : g.at(dict).entries) {
    visit(g);
    std::vector<std::string> here = path;
    here.push_back(key_text(g, k, ""));
    const std::string dotted = fmt::format("{}", fmt::join(here, "."));
    // The metadata keys this reader records itself (ckpt.torch, and ckpt.dcp of distributed
    // checkpoints): a value saved under such a name would be taken for ckpt's record
    // (format-spec/conventions.md §4). ckpt's writers never write them as values.
    if (path.empty() && (here.back() == kTorchCheckpointKey || here.back() == kDcpMetadataKey) && !is_tensor(g, v)) {
      notes_.push_back(fmt::format("value of key {}: a name ckpt keeps for its own records, left out", quote(here.back())));
      continue;
    }
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
      Metadata where(here);
      metadata[here.back()] = to_metadata(g, v, dotted, where, 0);
    }
  }
}

// A module's __dict__ entry `key`, or kNoNode.
pk::NodeId Interpreter::member(const pk::Graph& g, const pk::Node& state, std::string_view key) {
  for (const auto& [k, v] : state.entries)
    if (g.at(k).kind == pk::Kind::string && g.at(k).text == key) return v;
  return pk::kNoNode;
}

void Interpreter::interpret(const pk::Graph& g) {
  if (is_torchscript(g)) {
    role_source_ = RoleSource::torchscript;
    metadata_["module"] = g.global_name(g.root());
    walk_script_module(g, g.root(), "", 0);
    return;
  }
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
  // A checkpoint rather than a bare state_dict: record its shape so that it can be written back
  // as torch had it (format-spec/conventions.md §4).
  const bool extras = std::any_of(infos_.begin(), infos_.end(), [](auto& i) { return i.role == Role::extra; });
  if (!model_key_.empty() || extras || !int_key_paths_.empty() || !tuple_paths_.empty()) {
    Metadata shape = Metadata::object();
    shape["model_key"] = model_key_;
    shape["int_keys"] = int_key_paths_;
    shape["tuples"] = tuple_paths_;
    metadata_[std::string(kTorchCheckpointKey)] = std::move(shape);
  }
}

std::optional<Metadata> Interpreter::interpret_object(const pk::Graph& g) {
  role_source_ = RoleSource::heuristic;
  if (is_tensor(g, g.root())) {
    add_tensor(g, g.root(), "");
    return std::nullopt;
  }
  std::size_t tensors = 0;
  for (pk::NodeId id = 0; id < g.size(); ++id) tensors += is_tensor(g, id);
  if (tensors > 0)
    fail(ErrorCode::unsupported, name_, "data.pkl holds {} tensor{} inside {}, not one tensor or plain data", tensors,
         tensors == 1 ? "" : "s", pk::render(g, g.root(), 2).substr(0, 60));
  Metadata where = Metadata::array();
  return to_metadata(g, g.root(), "", where, 0);
}

// Roles and metadata that ckpt wrote beside the pickle (format-spec/conventions.md §4).
void Interpreter::apply_roles(const detail::zip::Entry& entry) {
  const auto bytes = archive_->read(entry);
  Metadata roles;
  if (const auto error =
          detail::parse_json_strict(std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), roles);
      !error.empty())
    fail(ErrorCode::format, name_, "{} {}", quote(entry.name), error);
  if (!roles.is_object() || !roles.value("buffers", Metadata::object()).is_object())
    fail(ErrorCode::format, name_, "{} is not a JSON object with a \"buffers\" object", quote(entry.name));
  if (roles.contains("version") && detail::json_uint(roles, "version", 2) > 1)
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
  if (roles.contains("non_persistent")) add_non_persistent(roles["non_persistent"], entry.name);
}

// Non-persistent buffers that ckpt kept out of the state_dict: {"name": {"record": "7",
// "position": 7, "dtype": "float32", "shape": [4], "collection": "buffers"}, ...}, each the
// contiguous data of record data/<record>, put back at its position in the tensor order.
void Interpreter::add_non_persistent(const Metadata& listed, const std::string& where) {
  auto bad_entry = [&](const std::string& key, const std::string& what) {
    fail(ErrorCode::format, name_, "{}, non-persistent buffer {}: {}", quote(where), quote(key), what);
  };
  if (!listed.is_object()) fail(ErrorCode::format, name_, "{}: \"non_persistent\" is not an object", quote(where));
  std::vector<std::pair<std::uint64_t, std::string>> order;
  for (const auto& [key, value] : listed.items()) {
    if (!value.is_object() || !value.contains("record") || !value["record"].is_string() ||
        !value.contains("dtype") || !value["dtype"].is_string() || !value.contains("shape") ||
        !value["shape"].is_array() || value["shape"].size() > options_.max_rank)
      bad_entry(key, "needs a string \"record\", a string \"dtype\" and a \"shape\" array");
    order.emplace_back(detail::json_uint(value, "position", UINT64_MAX), key);
  }
  std::stable_sort(order.begin(), order.end());
  for (const auto& [position, key] : order) {
    const Metadata& value = listed[key];
    TensorInfo info;
    info.name = key;
    info.role = Role::buffer;
    info.persistent = false;
    info.collection = detail::json_string(value, "collection", std::string(kDefaultBufferCollection));
    const auto dtype = dtype_from_name(value["dtype"].get<std::string>());
    if (!dtype) bad_entry(key, fmt::format("unknown dtype {}", quote(value["dtype"].get<std::string>())));
    info.dtype = *dtype;
    for (const auto& d : value["shape"]) {
      if (!d.is_number_unsigned() || d.get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX))
        bad_entry(key, "the shape holds a value that is not a size");
      info.shape.push_back(d.get<std::int64_t>());
    }
    std::uint64_t nbytes = 0;
    try {
      nbytes = info.nbytes();
    } catch (const Error&) {
      bad_entry(key, fmt::format("shape {} overflows", shape_to_string(info.shape)));
    }
    for (const auto& other : infos_)
      if (other.role != Role::extra && other.name == key) bad_entry(key, "the state_dict holds it too");
    View view;
    view.storage = find_or_add_storage(value["record"].get<std::string>(), info.dtype, nbytes, key);
    view.offset = 0;
    view.stride.assign(info.shape.size(), 1);
    for (std::size_t k = info.shape.size(); k-- > 1;)
      view.stride[k - 1] = view.stride[k] * std::max<std::uint64_t>(static_cast<std::uint64_t>(info.shape[k]), 1);
    const std::size_t at = static_cast<std::size_t>(std::min<std::uint64_t>(position, infos_.size()));
    infos_.insert(infos_.begin() + static_cast<std::ptrdiff_t>(at), std::move(info));
    views_.insert(views_.begin() + static_cast<std::ptrdiff_t>(at), std::move(view));
  }
}

}  // namespace ckpt::detail::pytorch

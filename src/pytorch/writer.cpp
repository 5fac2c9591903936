// PyTorch writer: a torch.save zip that torch.load(weights_only=True) loads as an OrderedDict of
// tensors. Entries: <folder>/data.pkl (protocol 2, only allow-listed globals), data/<n> per tensor
// (stored, 64-byte aligned), version, and ckpt_roles.json (roles, sections and metadata, by the
// convention of format-spec/conventions.md §4; torch ignores entries it does not know).
#include <charconv>
#include <list>
#include <set>
#include <cstring>
#include <optional>

#include <nlohmann/json.hpp>

#include "ckpt/pytorch.h"
#include "util/atomic_file.h"
#include "util/bytes.h"
#include "zip/zip.h"

namespace ckpt {
namespace {

using detail::fail;
using detail::quote;

const char* storage_class(DType dtype) {
  switch (dtype) {
    case DType::float64: return "DoubleStorage";
    case DType::float32: return "FloatStorage";
    case DType::float16: return "HalfStorage";
    case DType::bfloat16: return "BFloat16Storage";
    case DType::int64: return "LongStorage";
    case DType::int32: return "IntStorage";
    case DType::int16: return "ShortStorage";
    case DType::int8: return "CharStorage";
    case DType::uint8: return "ByteStorage";
    case DType::bool_: return "BoolStorage";
    case DType::complex64: return "ComplexFloatStorage";
    case DType::complex128: return "ComplexDoubleStorage";
    default: return nullptr;  // no typed storage in the torch versions ckpt writes for
  }
}

// Protocol-2 pickle opcodes, just those a state_dict needs.
class PickleOut {
 public:
  PickleOut() { text_ += "\x80\x02"; }
  void global(std::string_view module, std::string_view name) {
    text_ += 'c';
    text_ += module;
    text_ += '\n';
    text_ += name;
    text_ += '\n';
  }
  void string(std::string_view s) {
    text_ += 'X';
    const auto n = static_cast<std::uint32_t>(s.size());
    text_.append(reinterpret_cast<const char*>(&n), 4);
    text_ += s;
  }
  void integer(std::int64_t v) {
    if (v >= INT32_MIN && v <= INT32_MAX) {
      text_ += 'J';
      const auto x = static_cast<std::int32_t>(v);
      text_.append(reinterpret_cast<const char*>(&x), 4);
      return;
    }
    text_ += "\x8a\x08";  // LONG1 of 8 bytes, little-endian two's complement
    text_.append(reinterpret_cast<const char*>(&v), 8);
  }
  void floating(double v) {  // BINFLOAT: big-endian IEEE 754
    text_ += 'G';
    std::uint64_t bits;
    std::memcpy(&bits, &v, 8);
    for (int k = 7; k >= 0; --k) text_ += static_cast<char>((bits >> (8 * k)) & 0xff);
  }
  void unsigned_integer(std::uint64_t v) {
    if (v <= static_cast<std::uint64_t>(INT64_MAX)) return integer(static_cast<std::int64_t>(v));
    text_ += "\x8a\x09";  // LONG1 of 9 bytes: the value and a zero sign byte
    text_.append(reinterpret_cast<const char*>(&v), 8);
    text_ += '\0';
  }
  void op(char c) { text_ += c; }
  void ints(const std::vector<std::int64_t>& values) {
    op('(');
    for (auto v : values) integer(v);
    op('t');
  }
  const std::string& text() const { return text_; }

 private:
  std::string text_;
};

// What data.pkl holds, before it is pickled: a checkpoint's dicts with tensors (by index into
// the source) and metadata values (JSON) as leaves.
struct Value {
  const Metadata* json = nullptr;            // a metadata leaf
  std::optional<std::size_t> tensor;         // a tensor leaf
  // Otherwise a dict; a list so that pointers to children stay valid as entries are added.
  std::list<std::pair<std::string, Value>> dict;
  bool ordered = false;                      // pickled as collections.OrderedDict (the model)
  bool int_keys = false;                     // keys written back as integers

  Value* child(const std::string& key) {
    for (auto& [k, v] : dict)
      if (k == key) return &v;
    return nullptr;
  }
  bool is_dict() const { return !json && !tensor; }
};

Value from_metadata(const Metadata& m) {
  Value v;
  if (!m.is_object()) {
    v.json = &m;
    return v;
  }
  for (const auto& [k, item] : m.items()) v.dict.emplace_back(k, from_metadata(item));
  return v;
}

std::vector<std::string> split_dots(const std::string& text) {
  std::vector<std::string> parts;
  for (std::size_t start = 0;;) {
    const auto dot = text.find('.', start);
    parts.push_back(text.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) return parts;
    start = dot + 1;
  }
}

// The dict at `path` under `root`, created as needed; a metadata value in the way is an error.
Value& dict_at(Value& root, const std::vector<std::string>& path, const std::string& file, const std::string& what) {
  Value* node = &root;
  for (const auto& key : path) {
    Value* next = node->child(key);
    if (!next) {
      node->dict.emplace_back(key, Value{});
      next = &node->dict.back().second;
    }
    if (!next->is_dict())
      fail(ErrorCode::invalid_argument, file, "{} would replace the value at {}", what, quote(key));
    node = next;
  }
  return *node;
}

// Metadata arrays that were tuples in the file ckpt read (written back as tuples).
using Tuples = std::set<const Metadata*>;

void pickle_json(PickleOut& p, const Metadata& m, const Tuples& tuples) {
  switch (m.type()) {
    case Metadata::value_t::null: p.op('N'); break;
    case Metadata::value_t::boolean: p.op(m.get<bool>() ? '\x88' : '\x89'); break;
    case Metadata::value_t::number_integer: p.integer(m.get<std::int64_t>()); break;
    case Metadata::value_t::number_unsigned: p.unsigned_integer(m.get<std::uint64_t>()); break;
    case Metadata::value_t::number_float: p.floating(m.get<double>()); break;
    case Metadata::value_t::string: p.string(m.get_ref<const std::string&>()); break;
    case Metadata::value_t::array:
      if (tuples.count(&m)) {
        p.op('(');
        for (const auto& item : m) pickle_json(p, item, tuples);
        p.op('t');
        break;
      }
      p.op(']');
      if (!m.empty()) {
        p.op('(');
        for (const auto& item : m) pickle_json(p, item, tuples);
        p.op('e');  // APPENDS
      }
      break;
    case Metadata::value_t::object:
      p.op('}');
      if (!m.empty()) {
        p.op('(');
        for (const auto& [k, v] : m.items()) {
          p.string(k);
          pickle_json(p, v, tuples);
        }
        p.op('u');
      }
      break;
    default: p.op('N'); break;  // binary and discarded values do not occur in parsed metadata
  }
}

void pickle_tensor(PickleOut& p, const TensorInfo& info, std::size_t index) {
  p.global("torch._utils", "_rebuild_tensor_v2");
  p.op('(');
  p.op('(');
  p.string("storage");
  p.global("torch", storage_class(info.dtype));
  p.string(std::to_string(index));
  p.string("cpu");
  p.integer(static_cast<std::int64_t>(shape_numel(info.shape)));
  p.op('t');
  p.op('Q');  // BINPERSID
  p.integer(0);
  p.ints(info.shape);
  std::vector<std::int64_t> stride(info.shape.size(), 1);
  for (std::size_t k = info.shape.size(); k-- > 1;) stride[k - 1] = stride[k] * std::max<std::int64_t>(info.shape[k], 1);
  p.ints(stride);
  p.op('\x89');  // requires_grad False
  p.global("collections", "OrderedDict");
  p.op(')');
  p.op('R');
  p.op('t');
  p.op('R');
}

void pickle_value(PickleOut& p, const Value& v, const std::vector<TensorInfo>& infos, const Tuples& tuples) {
  if (v.json) return pickle_json(p, *v.json, tuples);
  if (v.tensor) return pickle_tensor(p, infos[*v.tensor], *v.tensor);
  if (v.ordered) {
    p.global("collections", "OrderedDict");
    p.op(')');
    p.op('R');
  } else {
    p.op('}');
  }
  if (v.dict.empty()) return;
  p.op('(');
  for (const auto& [k, child] : v.dict) {
    std::int64_t number = 0;
    const auto* end = k.data() + k.size();
    if (v.int_keys && !k.empty() && std::from_chars(k.data(), end, number).ptr == end)
      p.integer(number);
    else
      p.string(k);
    pickle_value(p, child, infos, tuples);
  }
  p.op('u');  // SETITEMS
}

}  // namespace

void write_pytorch(Source& source, const std::filesystem::path& path, const WriteOptions& options) {
  const std::string name = path.string();
  const auto& infos = source.tensors();
  // Refuse what torch cannot load before creating anything.
  for (const auto& info : infos)
    if (!storage_class(info.dtype))
      fail(ErrorCode::unsupported, name, "a .pt file cannot hold dtype {} (tensor {})", dtype_name(info.dtype),
           quote(info.name));
  const std::string folder = "archive/";
  // A bare state_dict (an OrderedDict of the model's tensors), or a whole checkpoint when the
  // source came from one (its shape recorded under kTorchCheckpointKey) or has extra sections.
  const Metadata& metadata = source.metadata();
  const bool extras = std::any_of(infos.begin(), infos.end(), [](auto& i) { return i.role == Role::extra; });
  const Metadata* shape = metadata.is_object() && metadata.contains(kTorchCheckpointKey)
                              ? &metadata[std::string(kTorchCheckpointKey)]
                              : nullptr;
  Value root;
  Value* model = &root;
  if (shape || extras) {
    for (const auto& [k, v] : metadata.items())
      if (k != kTorchCheckpointKey) root.dict.emplace_back(k, from_metadata(v));
    const std::string key = shape && shape->is_object() ? shape->value("model_key", std::string("model")) : "model";
    if (!key.empty()) {
      const std::vector<std::string> path = split_dots(key);
      const bool fresh = root.child(path.front()) == nullptr;
      model = &dict_at(root, path, name, "the model dict");
      if (fresh) root.dict.splice(root.dict.begin(), root.dict, std::prev(root.dict.end()));  // model first
    }
  }
  model->ordered = true;
  nlohmann::ordered_json buffers = nlohmann::ordered_json::object();
  for (std::size_t i = 0; i < infos.size(); ++i) {
    const auto& info = infos[i];
    Value leaf;
    leaf.tensor = i;
    if (info.role != Role::extra) {
      if (model->child(info.name)) fail(ErrorCode::invalid_argument, name, "tensor {} is named twice in the model", quote(info.name));
      model->dict.emplace_back(info.name, std::move(leaf));
      if (info.role == Role::buffer)
        buffers[info.name] = {{"collection", info.collection}, {"persistent", info.persistent}};
      continue;
    }
    // Extra sections: section/name.with.dots -> section -> name -> with -> dots; the section
    // "checkpoint" is the top level (format-spec/conventions.md §4).
    std::vector<std::string> path = split_dots(info.name);
    if (info.section != "checkpoint") path.insert(path.begin(), info.section);
    const std::string last = path.back();
    path.pop_back();
    const std::string what = fmt::format("tensor {} of section {}", quote(info.name), quote(info.section));
    Value& parent = dict_at(root, path, name, what);
    if (parent.child(last)) fail(ErrorCode::invalid_argument, name, "{} would replace the value at {}", what, quote(last));
    parent.dict.emplace_back(last, std::move(leaf));
  }
  if (shape && shape->is_object() && shape->contains("int_keys") && (*shape)["int_keys"].is_array())
    for (const auto& path : (*shape)["int_keys"]) {
      if (!path.is_array()) continue;
      Value* node = &root;
      for (const auto& key : path) node = node && key.is_string() ? node->child(key.get<std::string>()) : nullptr;
      if (node && node->is_dict()) node->int_keys = true;
    }
  Tuples tuples;
  if (shape && shape->is_object() && shape->contains("tuples") && (*shape)["tuples"].is_array())
    for (const auto& path : (*shape)["tuples"]) {
      const Metadata* node = path.is_array() ? &metadata : nullptr;
      for (const auto& key : path.is_array() ? path : Metadata::array()) {
        if (node && node->is_object() && key.is_string() && node->contains(key.get<std::string>()))
          node = &(*node)[key.get<std::string>()];
        else if (node && node->is_array() && key.is_number_unsigned() && key.get<std::size_t>() < node->size())
          node = &(*node)[key.get<std::size_t>()];
        else
          node = nullptr;
      }
      if (node && node->is_array()) tuples.insert(node);
    }
  PickleOut p;
  pickle_value(p, root, infos, tuples);
  p.op('.');
  const nlohmann::ordered_json roles = {{"version", 1}, {"buffers", buffers}, {"metadata", metadata}};
  std::string roles_text;
  try {
    roles_text = roles.dump();
  } catch (const nlohmann::json::exception& e) {
    fail(ErrorCode::invalid_argument, name, "names or metadata are not valid UTF-8: {}", e.what());
  }

  detail::AtomicFile file(path, options.overwrite);
  detail::zip::Writer zip(file, 64);
  auto small = [&](const std::string& entry, const std::string& text) {
    zip.begin(folder + entry, text.size());
    zip.write(std::as_bytes(std::span(text)));
    zip.end();
  };
  small("data.pkl", p.text());
  std::uint64_t done = 0, total = 0;
  for (const auto& info : infos) total += info.nbytes();
  for (std::size_t i = 0; i < infos.size(); ++i) {
    const Tensor tensor = source.read_checked(i, name);
    zip.begin(folder + "data/" + std::to_string(i), tensor.nbytes());
    zip.write(tensor.bytes());
    zip.end();
    done += tensor.nbytes();
    if (options.progress) options.progress(done, total);
  }
  small("version", "3\n");
  small("ckpt_roles.json", roles_text);
  zip.finish();
  file.commit();
}

}  // namespace ckpt

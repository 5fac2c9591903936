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

#include "ckpt/dcp.h"
#include "ckpt/pytorch.h"
#include "util/atomic_file.h"
#include "util/json_get.h"
#include "util/bytes.h"
#include "util/tree.h"
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

void pickle_value(PickleOut& p, const detail::TreeNode& v, const std::vector<TensorInfo>& infos, const Tuples& tuples) {
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
  detail::TreeNode root;
  detail::TreeNode* model = &root;
  if (shape || extras) {
    for (const auto& [k, v] : metadata.items())
      // ckpt's own records ride in ckpt_roles.json, never as values of torch's dict.
      if (k != kTorchCheckpointKey && k != kDcpMetadataKey && k != kRoleSourceKey)
        root.dict.emplace_back(k, detail::tree_from_metadata(v));
    const std::string key = shape && shape->is_object() ? detail::json_string(*shape, "model_key", "model") : "model";
    if (!key.empty()) {
      const std::vector<std::string> path = detail::split_dots(key);
      const bool fresh = root.child(path.front()) == nullptr;
      model = &detail::tree_dict_at(root, path, name, "the model dict");
      if (fresh) root.dict.splice(root.dict.begin(), root.dict, std::prev(root.dict.end()));  // model first
    }
  }
  model->ordered = true;
  nlohmann::ordered_json buffers = nlohmann::ordered_json::object();
  // Non-persistent buffers are not part of a module's state_dict(), so load_state_dict(strict=True)
  // would refuse them as unexpected keys: their records are written, but only ckpt_roles.json
  // names them (format-spec/conventions.md §4).
  nlohmann::ordered_json non_persistent = nlohmann::ordered_json::object();
  for (std::size_t i = 0; i < infos.size(); ++i) {
    const auto& info = infos[i];
    detail::TreeNode leaf;
    leaf.tensor = i;
    if (info.role != Role::extra) {
      if (model->child(info.name) || non_persistent.contains(info.name))
        fail(ErrorCode::invalid_argument, name, "tensor {} is named twice in the model", quote(info.name));
      if (info.role == Role::buffer && !info.persistent) {
        non_persistent[info.name] = {{"record", std::to_string(i)}, {"position", i},
                                     {"dtype", dtype_name(info.dtype)}, {"shape", info.shape},
                                     {"collection", info.collection}};
        continue;
      }
      model->dict.emplace_back(info.name, std::move(leaf));
      if (info.role == Role::buffer)
        buffers[info.name] = {{"collection", info.collection}, {"persistent", info.persistent}};
      continue;
    }
    // Extra sections: section/name.with.dots -> section -> name -> with -> dots; the section
    // "checkpoint" is the top level (format-spec/conventions.md §4).
    std::vector<std::string> path = detail::split_dots(info.name);
    if (info.section != "checkpoint") path.insert(path.begin(), info.section);
    detail::tree_put_tensor(root, std::move(path), i, name,
                            fmt::format("tensor {} of section {}", quote(info.name), quote(info.section)));
  }
  if (shape && shape->is_object() && shape->contains("int_keys") && (*shape)["int_keys"].is_array())
    for (const auto& path : (*shape)["int_keys"]) {
      if (!path.is_array()) continue;
      detail::TreeNode* node = &root;
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
  nlohmann::ordered_json roles = {{"version", 1}, {"buffers", buffers}, {"metadata", metadata}};
  if (!non_persistent.empty()) roles["non_persistent"] = std::move(non_persistent);
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
    zip.write(tensor.bytes(), source.file_span(i));
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

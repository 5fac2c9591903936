// PyTorch writer: a torch.save zip that torch.load(weights_only=True) loads as an OrderedDict of
// tensors. Entries: <folder>/data.pkl (protocol 2, only allow-listed globals), data/<n> per tensor
// (stored, 64-byte aligned), version, and ckpt_roles.json (roles, sections and metadata, by the
// convention of format-spec/conventions.md §4; torch ignores entries it does not know).
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

}  // namespace

void write_pytorch(Source& source, const std::filesystem::path& path, const WriteOptions& options) {
  const std::string name = path.string();
  const auto& infos = source.tensors();
  // Refuse what a state_dict cannot hold before creating anything.
  for (const auto& info : infos) {
    if (!storage_class(info.dtype))
      fail(ErrorCode::unsupported, name, "a .pt file cannot hold dtype {} (tensor {})", dtype_name(info.dtype),
           quote(info.name));
    if (info.role == Role::extra)
      fail(ErrorCode::unsupported, name,
           "writing extra sections ({}: {}) to .pt is not supported yet; convert the model alone", quote(info.section),
           quote(info.name));
  }
  const std::string folder = "archive/";
  PickleOut p;
  p.global("collections", "OrderedDict");
  p.op(')');
  p.op('R');
  p.op('(');
  nlohmann::ordered_json buffers = nlohmann::ordered_json::object();
  for (std::size_t i = 0; i < infos.size(); ++i) {
    const auto& info = infos[i];
    p.string(info.name);
    p.global("torch._utils", "_rebuild_tensor_v2");
    p.op('(');
    p.op('(');
    p.string("storage");
    p.global("torch", storage_class(info.dtype));
    p.string(std::to_string(i));
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
    if (info.role == Role::buffer)
      buffers[info.name] = {{"collection", info.collection}, {"persistent", info.persistent}};
  }
  p.op('u');  // SETITEMS
  p.op('.');
  const nlohmann::ordered_json roles = {{"version", 1}, {"buffers", buffers}, {"metadata", source.metadata()}};
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

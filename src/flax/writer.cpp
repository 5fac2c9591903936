// Flax msgpack writer: the variables dict is built as a tree of names first (util/tree.h), then
// packed with msgpack-cxx's packer; each array's bytes stream from the source straight after its
// extension header, so no tensor is held twice.
#include <msgpack.hpp>

#include "ckpt/flax.h"
#include "flax/format.h"
#include "util/atomic_file.h"
#include "util/json_get.h"
#include "util/bytes.h"
#include "util/tree.h"

namespace ckpt {
namespace {

using detail::fail;
using detail::quote;
using detail::TreeNode;


// {"__complex__": [real, imag]}: how the reader keeps a Python complex (extension type 2).
bool complex_pair(const Metadata& m) {
  return m.is_object() && m.size() == 1 && m.contains("__complex__") && m["__complex__"].is_array() &&
         m["__complex__"].size() == 2 && m["__complex__"][0].is_number() && m["__complex__"][1].is_number();
}

// The packer's stream: buffered writes to the atomic file.
class Out {
 public:
  explicit Out(detail::AtomicFile& file) : file_(file) {}
  void write(const char* data, std::size_t size) {
    if (buffer_.size() + size > kBuffer) flush();
    if (size >= kBuffer) {
      file_.write({reinterpret_cast<const std::byte*>(data), size});
      return;
    }
    buffer_.append(data, size);
  }
  void flush() {
    if (!buffer_.empty()) file_.write(std::as_bytes(std::span(buffer_)));
    buffer_.clear();
  }
  // Tensor bytes, copied file to file where they also lie in one (AtomicFile::write).
  void write_tensor_bytes(std::span<const std::byte> bytes, const std::optional<Source::FileSpan>& from) {
    if (!from) return write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    flush();
    file_.write(bytes, from);
  }

 private:
  static constexpr std::size_t kBuffer = 1 << 20;
  detail::AtomicFile& file_;
  std::string buffer_;
};

class FlaxWriter {
 public:
  FlaxWriter(Source& source, const std::string& name, const WriteOptions& options, Out& out, std::uint64_t chunk_bytes)
      : source_(source), infos_(source.tensors()), name_(name), options_(options), out_(out), packer_(out),
        max_chunk_bytes_(chunk_bytes) {
    for (const auto& info : infos_) total_ += info.nbytes();
  }

  void pack(const TreeNode& node) {
    if (node.json) return pack_json(*node.json);
    if (node.tensor) return pack_tensor(*node.tensor);
    packer_.pack_map(static_cast<std::uint32_t>(node.dict.size()));
    for (const auto& [k, child] : node.dict) {
      packer_.pack(k);
      pack(child);
    }
  }

 private:
  void pack_json(const Metadata& m) {
    switch (m.type()) {
      case Metadata::value_t::null: packer_.pack_nil(); break;
      case Metadata::value_t::boolean: m.get<bool>() ? packer_.pack_true() : packer_.pack_false(); break;
      case Metadata::value_t::number_integer: packer_.pack(m.get<std::int64_t>()); break;
      case Metadata::value_t::number_unsigned: packer_.pack(m.get<std::uint64_t>()); break;
      case Metadata::value_t::number_float: packer_.pack(m.get<double>()); break;
      case Metadata::value_t::string: packer_.pack(m.get_ref<const std::string&>()); break;
      case Metadata::value_t::array:
        packer_.pack_array(static_cast<std::uint32_t>(m.size()));
        for (const auto& item : m) pack_json(item);
        break;
      case Metadata::value_t::object:
        if (complex_pair(m)) {  // ext 2: [real, imag]
          msgpack::sbuffer payload;
          msgpack::packer<msgpack::sbuffer> p(payload);
          p.pack_array(2);
          p.pack(m["__complex__"][0].get<double>());
          p.pack(m["__complex__"][1].get<double>());
          packer_.pack_ext(payload.size(), 2);
          packer_.pack_ext_body(payload.data(), static_cast<std::uint32_t>(payload.size()));
          break;
        }
        packer_.pack_map(static_cast<std::uint32_t>(m.size()));
        for (const auto& [k, v] : m.items()) {
          packer_.pack(k);
          pack_json(v);
        }
        break;
      default: packer_.pack_nil(); break;
    }
  }

  // Extension type 1 holding msgpack [shape, dtype name, bytes]; the header part is packed into
  // a small buffer to learn the extension's size, then the bytes follow from `data`.
  void pack_ndarray(DType dtype, const Shape& shape, std::span<const std::byte> data,
                    const std::optional<Source::FileSpan>& from) {
    msgpack::sbuffer head;
    msgpack::packer<msgpack::sbuffer> p(head);
    p.pack_array(3);
    p.pack_array(static_cast<std::uint32_t>(shape.size()));
    for (auto d : shape) p.pack(d);
    p.pack(std::string(dtype_name(dtype)));
    p.pack_bin(static_cast<std::uint32_t>(data.size()));
    packer_.pack_ext(head.size() + data.size(), 1);
    out_.write(head.data(), head.size());
    out_.write_tensor_bytes(data, from);
  }

  void pack_tensor(std::size_t index) {
    const TensorInfo& info = infos_[index];
    const Tensor tensor = source_.read_checked(index, name_);
    const auto bytes = tensor.bytes();
    const auto from = source_.file_span(index);
    if (bytes.size() <= max_chunk_bytes_) {
      pack_ndarray(info.dtype, info.shape, bytes, from);
    } else {
      // As flax does beyond 2**30 bytes: {"__msgpack_chunked_array__": true, "shape": {"0": d0,
      // ...}, "chunks": {"0": 1-D array, ...}}, chunks of floor(2**30 / itemsize) elements.
      const std::size_t itemsize = dtype_size(info.dtype);
      const std::uint64_t chunk = std::max<std::uint64_t>(1, max_chunk_bytes_ / itemsize) * itemsize;
      packer_.pack_map(3);
      packer_.pack(std::string("__msgpack_chunked_array__"));
      packer_.pack_true();
      packer_.pack(std::string("shape"));
      packer_.pack_map(static_cast<std::uint32_t>(info.shape.size()));
      for (std::size_t d = 0; d < info.shape.size(); ++d) {
        packer_.pack(std::to_string(d));
        packer_.pack(info.shape[d]);
      }
      packer_.pack(std::string("chunks"));
      const std::uint64_t count = (bytes.size() + chunk - 1) / chunk;
      packer_.pack_map(static_cast<std::uint32_t>(count));
      for (std::uint64_t c = 0; c < count; ++c) {
        const auto piece = bytes.subspan(static_cast<std::size_t>(c * chunk),
                                         static_cast<std::size_t>(std::min<std::uint64_t>(chunk, bytes.size() - c * chunk)));
        packer_.pack(std::to_string(c));
        std::optional<Source::FileSpan> piece_from = from;
        if (piece_from) piece_from->offset += c * chunk;
        pack_ndarray(info.dtype, {static_cast<std::int64_t>(piece.size() / itemsize)}, piece, piece_from);
      }
    }
    done_ += bytes.size();
    if (options_.progress) options_.progress(done_, total_);
  }

  Source& source_;
  const std::vector<TensorInfo>& infos_;
  const std::string& name_;
  const WriteOptions& options_;
  Out& out_;
  msgpack::packer<Out> packer_;
  std::uint64_t max_chunk_bytes_;
  std::uint64_t done_ = 0, total_ = 0;
};

// Merges metadata object `m` into dict `node` (objects into dicts already there).
void merge_metadata(TreeNode& node, const Metadata& m, const std::string& file) {
  for (const auto& [k, v] : m.items()) {
    TreeNode* child = node.child(k);
    if (!child) {
      node.dict.emplace_back(k, detail::tree_from_metadata(v, complex_pair));
    } else if (child->is_dict() && v.is_object() && !complex_pair(v)) {
      merge_metadata(*child, v, file);
    } else {
      fail(ErrorCode::invalid_argument, file, "metadata {} and a tensor would have the same place", quote(k));
    }
  }
}

}  // namespace

void detail::flax::write(Source& source, const std::filesystem::path& path, const WriteOptions& options,
                         std::uint64_t max_chunk_bytes) {
  const std::string name = path.string();
  const auto& infos = source.tensors();
  const Metadata& metadata = source.metadata();
  const bool all_parameters =
      std::all_of(infos.begin(), infos.end(), [](const TensorInfo& i) { return i.role == Role::parameter; });
  const bool bare = all_parameters && metadata.is_object() && metadata.contains(kFlaxShapeKey) &&
                    !detail::json_bool(metadata[std::string(kFlaxShapeKey)], "collections", true);
  TreeNode root;
  Metadata non_persistent = Metadata::object();
  Metadata sections = Metadata::array();
  if (!bare) (void)detail::tree_dict_at(root, {"params"}, name, "the params collection");
  for (std::size_t i = 0; i < infos.size(); ++i) {
    const TensorInfo& info = infos[i];
    std::vector<std::string> where = detail::split_dots(info.name);
    if (!bare) {
      const std::string top = info.role == Role::parameter ? "params"
                              : info.role == Role::buffer  ? info.collection
                                                           : info.section;
      where.insert(where.begin(), top);
      if (info.role == Role::buffer && !info.persistent) non_persistent[top].push_back(info.name);
      if (info.role == Role::extra && info.section != "opt_state" &&
          std::find(sections.begin(), sections.end(), info.section) == sections.end())
        sections.push_back(info.section);
    }
    detail::tree_put_tensor(root, std::move(where), i, name, fmt::format("tensor {}", quote(info.name)));
  }
  Metadata rest = Metadata::object();
  for (const auto& [k, v] : metadata.items())
    if (k != kFlaxShapeKey && k != "ckpt.roles") rest[k] = v;
  merge_metadata(root, rest, name);
  Metadata roles_entry;  // must outlive the tree
  if (!non_persistent.empty() || !sections.empty()) {
    Metadata roles = {{"version", 1}};
    if (!sections.empty()) roles["sections"] = sections;
    if (!non_persistent.empty()) roles["non_persistent"] = non_persistent;
    roles_entry = roles.dump();
    root.dict.emplace_back("ckpt.roles", detail::tree_from_metadata(roles_entry));
  }
  detail::AtomicFile file(path, options.overwrite);
  Out out(file);
  FlaxWriter writer(source, name, options, out, max_chunk_bytes);
  writer.pack(root);
  out.flush();
  file.commit();
}

void write_flax(Source& source, const std::filesystem::path& path, const WriteOptions& options) {
  detail::flax::write(source, path, options, detail::flax::kMaxChunkBytes);
}

}  // namespace ckpt

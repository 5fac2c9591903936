#include "ckpt/io.h"

#include <cerrno>
#include <cstring>
#include <fstream>

#include "boost_archive/boost_file.h"
#include "ckpt/boost_archive.h"
#include "ckpt/ckpt_h5.h"
#include "ckpt/flax.h"
#include "ckpt/numpy.h"
#include "ckpt/pytorch.h"
#include "ckpt/safetensors.h"
#include "h5/h5.h"
#include "flax/sniff.h"
#include "numpy/sniff.h"
#include "pytorch/sniff.h"
#include "core/keys.h"
#include "util/bytes.h"

namespace ckpt {
namespace {

using detail::fail;
using detail::quote;

bool sniff_ckpt_h5(std::span<const std::byte> head, std::uint64_t) { return detail::h5::has_signature(head); }

bool sniff_safetensors(std::span<const std::byte> head, std::uint64_t) {
  if (head.size() < 9) return false;
  // No magic: a u64 length, then a JSON object. A lying length is left for the reader to report.
  return head[8] == std::byte{'{'} && detail::load_le<std::uint64_t>(head.data()) >= 2;
}

// An HF shard index: a JSON object naming a "weight_map" near its start.
bool sniff_safetensors_index(std::span<const std::byte> head, std::uint64_t) {
  const std::string_view text(reinterpret_cast<const char*>(head.data()), head.size());
  const auto first = text.find_first_not_of(" \t\r\n");
  return first != std::string_view::npos && text[first] == '{' && text.find("\"weight_map\"") != std::string_view::npos;
}

void write_safetensors_any(Source& source, const std::filesystem::path& path, const WriteOptions& options) {
  if (options.max_shard_bytes) write_safetensors_sharded(source, path, options);
  else write_safetensors(source, path, options);
}

template <detail::boost_file::Kind kind>
bool sniff_boost(std::span<const std::byte> head, std::uint64_t) {
  return detail::boost_file::sniff_kind(head) == kind;
}

std::vector<FormatHandler> make_registry() {
  return {
      {"ckpt-h5", "ckpt's HDF5 schema: parameters and buffers in separate sections (format-spec/ckpt-h5.md)",
       {".ckpt.h5", ".h5", ".hdf5", ".ckpt"}, sniff_ckpt_h5, open_ckpt_h5, write_ckpt_h5},
      {"safetensors", "huggingface safetensors; roles kept in __metadata__ (format-spec/conventions.md)",
       {".safetensors"}, sniff_safetensors, open_safetensors, write_safetensors_any},
      {"safetensors-sharded", "huggingface sharded safetensors: NAME.safetensors.index.json and its shards",
       {".safetensors.index.json"}, sniff_safetensors_index, open_safetensors_index, write_safetensors_sharded},
      {"pytorch", "torch.save and torch.jit.save files (zip and legacy; writes state_dicts and checkpoints)", {".pt", ".pth", ".bin"},
       detail::pytorch::sniff, open_pytorch, write_pytorch},
      {"flax", "Flax msgpack (flax.serialization.to_bytes); collections give roles (format-spec/conventions.md)",
       {".msgpack", ".flax"}, detail::flax::sniff, open_flax, write_flax},
      {"numpy", "NumPy .npz (and .npy); roles in zip comments (format-spec/conventions.md)", {".npz", ".npy"},
       detail::numpy::sniff, open_numpy, write_numpy},
      {"boost-text", "Boost.Serialization text archive of a ckpt StateDict (format-spec/conventions.md)",
       {".boost.txt"}, sniff_boost<detail::boost_file::Kind::text>, open_boost, write_boost_text},
      {"boost-xml", "Boost.Serialization xml archive of a ckpt StateDict", {".boost.xml"},
       sniff_boost<detail::boost_file::Kind::xml>, open_boost, write_boost_xml},
      {"boost-binary", "Boost.Serialization binary archive of a ckpt StateDict (not portable across architectures)",
       {".boost.bin", ".boost"}, sniff_boost<detail::boost_file::Kind::binary>, open_boost, write_boost_binary},
  };
}

}  // namespace

std::string format_names() {
  std::string out;
  for (const auto& f : formats()) out += (out.empty() ? "" : ", ") + f.name;
  return out;
}

// --- Source --------------------------------------------------------------------------------

Tensor Source::read_checked(std::size_t index, const std::string& file) {
  Tensor tensor = read(index);
  const TensorInfo& info = tensors().at(index);
  if (tensor.dtype() != info.dtype || tensor.shape() != info.shape)
    fail(ErrorCode::invalid_argument, file, "tensor {}: source gave {} {}, listed as {} {}", quote(info.name),
         dtype_name(tensor.dtype()), shape_to_string(tensor.shape()), dtype_name(info.dtype),
         shape_to_string(info.shape));
  return tensor;
}

// --- StateDictSource -----------------------------------------------------------------------

StateDictSource::StateDictSource(const StateDict& state) : state_(state) {
  infos_.reserve(state.size());
  for (const auto& e : state.entries()) infos_.push_back(e.info());
}

Tensor StateDictSource::read(std::size_t index) { return state_.entries().at(index).tensor; }

// --- Reader --------------------------------------------------------------------------------

Reader::Reader(std::filesystem::path path, ReadOptions options)
    : path_(std::move(path)), options_(std::move(options)) {}

void Reader::finish_listing() {
  by_key_.clear();
  by_key_.reserve(infos_.size());
  for (std::size_t i = 0; i < infos_.size(); ++i) {
    const auto& s = infos_[i];
    const std::string_view section = s.role == Role::extra ? std::string_view(s.section) : std::string_view();
    if (!by_key_.emplace(detail::entry_key(section, s.name), i).second)
      fail(ErrorCode::format, path_.string(), "duplicate tensor name {}", quote(s.name));
  }
  if (infos_.empty()) role_source_ = RoleSource::none;
}

void Reader::check_index(std::size_t index) const {
  if (index >= infos_.size())
    fail(ErrorCode::invalid_argument, path_.string(), "tensor index {} out of range ({} tensors)", index, infos_.size());
}

std::optional<std::uint64_t> Reader::checksum(std::size_t index) const {
  check_index(index);
  return checksums_.empty() ? std::nullopt : checksums_[index];
}

std::size_t Reader::find(std::string_view name, std::string_view section) const {
  if (section == kParametersSection || section == kBuffersSection) section = {};
  auto it = by_key_.find(detail::entry_key(section, name));
  if (it == by_key_.end())
    fail(ErrorCode::invalid_argument, path_.string(), "no tensor named {}{}", quote(name),
         section.empty() ? std::string() : " in section " + quote(section));
  return it->second;
}

Tensor Reader::read(std::string_view name, std::string_view section) { return read(find(name, section)); }

StateDict Reader::read_all(const ProgressFn& progress) {
  StateDict state;
  std::uint64_t total = 0, done = 0;
  for (const auto& info : infos_) total += info.nbytes();
  prepare_full_read();
  for (std::size_t i = 0; i < infos_.size(); ++i) {
    state.add(infos_[i], read(i));
    done += infos_[i].nbytes();
    if (progress) progress(done, total);
  }
  state.metadata() = metadata_;
  state.set_role_source(role_source_);
  return state;
}

std::size_t Reader::verify(const ProgressFn& progress) {
  std::size_t checked = 0;
  std::uint64_t total = 0, done = 0;
  for (const auto& info : infos_) total += info.nbytes();
  const bool saved = options_.verify_checksums;
  options_.verify_checksums = true;
  prepare_full_read();
  try {
    for (std::size_t i = 0; i < infos_.size(); ++i) {
      (void)read(i);
      checked += checksum(i).has_value();
      done += infos_[i].nbytes();
      if (progress) progress(done, total);
    }
  } catch (...) {
    options_.verify_checksums = saved;
    throw;
  }
  options_.verify_checksums = saved;
  return checked;
}

// --- registry ------------------------------------------------------------------------------

const std::vector<FormatHandler>& formats() {
  static const std::vector<FormatHandler> registry = make_registry();
  return registry;
}

const FormatHandler* find_format(std::string_view name) {
  for (const auto& f : formats())
    if (f.name == name) return &f;
  return nullptr;
}

const FormatHandler& detect_format(const std::filesystem::path& path) {
  const std::string name = path.string();
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) fail(ErrorCode::io, name, "is a directory");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorCode::io, name, "cannot open: {}", std::strerror(errno));
  const std::uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) fail(ErrorCode::io, name, "cannot stat: {}", ec.message());
  std::vector<std::byte> head(4096);
  in.read(reinterpret_cast<char*>(head.data()), static_cast<std::streamsize>(head.size()));
  head.resize(static_cast<std::size_t>(in.gcount()));
  for (const auto& f : formats())
    if (f.sniff(head, size)) return f;
  std::string known;
  for (const auto& f : formats()) known += (known.empty() ? "" : ", ") + f.name;
  if (size == 0) fail(ErrorCode::format, name, "file is empty, expected a checkpoint ({})", known);
  fail(ErrorCode::format, name, "unrecognized file format at offset 0, expected one of: {}", known);
}

const FormatHandler* format_for_extension(const std::filesystem::path& path) {
  const std::string file = path.filename().string();
  // Longest matching extension wins (".ckpt.h5" before ".h5").
  const FormatHandler* best = nullptr;
  std::size_t best_len = 0;
  for (const auto& f : formats())
    for (const auto& ext : f.extensions)
      if (ext.size() > best_len && file.ends_with(ext)) {
        best = &f;
        best_len = ext.size();
      }
  return best;
}

std::unique_ptr<Reader> open(const std::filesystem::path& path, const ReadOptions& options) {
  return detect_format(path).open(path, options);
}

StateDict load(const std::filesystem::path& path, const ReadOptions& options) {
  return open(path, options)->read_all();
}

void save(Source& source, const std::filesystem::path& path, const WriteOptions& options) {
  const FormatHandler* handler = nullptr;
  if (!options.format.empty()) {
    handler = find_format(options.format);
    if (!handler) fail(ErrorCode::invalid_argument, path.string(), "unknown output format {}", quote(options.format));
  } else {
    handler = format_for_extension(path);
    if (!handler)
      fail(ErrorCode::invalid_argument, path.string(),
           "cannot tell the output format from the extension; name one ({})", format_names());
  }
  if (handler->write == nullptr)
    fail(ErrorCode::unsupported, path.string(), "ckpt cannot write {} files yet", handler->name);
  handler->write(source, path, options);
}

void save(const StateDict& state, const std::filesystem::path& path, const WriteOptions& options) {
  StateDictSource source(state);
  save(source, path, options);
}

}  // namespace ckpt

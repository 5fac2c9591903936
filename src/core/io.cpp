#include "ckpt/io.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>

#include "core/deliver.h"
#include "core/format_reader.h"
#include "core/keys.h"
#include "util/bytes.h"
#include "util/checksum.h"

namespace ckpt {

using detail::fail;
using detail::quote;

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

// --- FormatReader --------------------------------------------------------------------------

namespace detail {

FormatReader::FormatReader(std::shared_ptr<const ByteSource> source, ReadOptions options)
    : source_(std::move(source)), name_(source_->name()), options_(std::move(options)) {}

void FormatReader::finish_listing() {
  by_key_.clear();
  by_key_.reserve(infos_.size());
  for (std::size_t i = 0; i < infos_.size(); ++i) {
    const auto& s = infos_[i];
    const std::string_view section = s.role == Role::extra ? std::string_view(s.section) : std::string_view();
    if (!by_key_.emplace(entry_key(section, s.name), i).second)
      fail(ErrorCode::format, name_, "duplicate tensor name {}", quote(s.name));
  }
  if (infos_.empty()) role_source_ = RoleSource::none;
}

void FormatReader::check_index(std::size_t index) const {
  if (index >= infos_.size())
    fail(ErrorCode::invalid_argument, name_, "tensor index {} out of range ({} tensors)", index, infos_.size());
}

std::size_t FormatReader::find(std::string_view name, std::string_view section) const {
  if (section == kParametersSection || section == kBuffersSection) section = {};
  auto it = by_key_.find(entry_key(section, name));
  if (it == by_key_.end())
    fail(ErrorCode::invalid_argument, name_, "no tensor named {}{}", quote(name),
         section.empty() ? std::string() : " in section " + quote(section));
  return it->second;
}

Location FormatReader::location(std::size_t index) const {
  Location l;
  l.source = source_;
  l.dtype = infos_[index].dtype;
  l.shape = infos_[index].shape;
  return l;
}

std::unique_ptr<Reader> make_reader(std::unique_ptr<FormatReader> format) {
  return std::make_unique<Reader>(std::move(format));
}

}  // namespace detail

// --- Reader --------------------------------------------------------------------------------

Reader::Reader(std::unique_ptr<detail::FormatReader> format)
    : format_(std::move(format)),
      path_(format_->source_->is_file() ? format_->source_->path() : std::filesystem::path(format_->name_)),
      located_(format_->infos_.size()),
      scratch_(std::make_unique<detail::DeliveryScratch>()) {
  // Roles a writer was given as inferred stay inferred, whatever the format can store.
  auto& source = format_->role_source_;
  if (source == RoleSource::stored || source == RoleSource::metadata) {
    const auto& meta = format_->metadata_;
    const auto it = meta.is_object() ? meta.find(std::string(kRoleSourceKey)) : meta.end();
    if (it != meta.end() && *it == "heuristic") source = RoleSource::heuristic;
  }
}

Reader::~Reader() = default;

const std::vector<TensorInfo>& Reader::tensors() const { return format_->infos_; }
const Metadata& Reader::metadata() const { return format_->metadata_; }
const std::string& Reader::format() const noexcept { return format_->format_; }
const std::string& Reader::format_version() const noexcept { return format_->format_version_; }
RoleSource Reader::role_source() const noexcept { return format_->role_source_; }
const std::string& Reader::model_key() const noexcept { return format_->model_key_; }
const std::vector<std::string>& Reader::notes() const noexcept { return format_->notes_; }

std::optional<std::uint64_t> Reader::checksum(std::size_t index) const {
  format_->check_index(index);
  return format_->checksums_.empty() ? std::nullopt : format_->checksums_[index];
}

std::size_t Reader::find(std::string_view name, std::string_view section) const { return format_->find(name, section); }

// Errors on the way name the tensor: "FILE: tensor 'x': what".
template <typename Fn>
auto about_tensor(const detail::FormatReader& format, std::size_t index, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Error& e) {
    throw Error(e.code(), e.file().empty() ? format.name_ : e.file(),
                fmt::format("tensor {}: {}", quote(format.infos_[index].name), e.message()));
  } catch (const std::bad_alloc&) {
    throw Error(ErrorCode::io, format.name_,
                fmt::format("tensor {}: out of memory for its {} bytes", quote(format.infos_[index].name),
                            format.infos_[index].nbytes()));
  }
}

// The tensor's per-block checksums, or null when it has none.
const std::vector<detail::BlockChecksum>* block_checksums(const detail::FormatReader& format, std::size_t index) {
  if (format.blocks_.empty() || format.blocks_[index].empty()) return nullptr;
  return &format.blocks_[index];
}

const detail::Location& Reader::located(std::size_t index) const {
  format_->check_index(index);
  if (!located_[index])
    located_[index] = about_tensor(*format_, index, [&] {
      return std::make_shared<const detail::Location>(format_->locate(index));
    });
  return *located_[index];
}

Tensor Reader::read_verified(std::size_t index, bool verify) {
  const auto expected = checksum(index);
  const auto* blocks = block_checksums(*format_, index);
  const detail::Location& location = located(index);
  detail::Delivery how;
  how.zero_copy = format_->options_.zero_copy;
  how.writable = format_->options_.writable;
  how.threads = format_->options_.threads;
  how.hash = verify && expected.has_value();
  how.crc = verify;  // zip entries' CRC-32 (once per entry)
  detail::Delivered got = about_tensor(*format_, index, [&] { return detail::deliver(location, how, *scratch_); });
  if (how.hash && *got.hash != *expected)
    fail(ErrorCode::integrity, format_->name_, "tensor {}: checksum mismatch (stored {}, data has {})",
         quote(format_->infos_[index].name), detail::format_checksum(*expected), detail::format_checksum(*got.hash));
  // Per-block checksums (ckpt-h5 1.1): each block hashed where it lies in the tensor.
  if (verify && blocks) {
    const auto& info = format_->infos_[index];
    const std::vector<std::uint64_t> dims(info.shape.begin(), info.shape.end());
    for (const auto& b : *blocks) check_block(index, b, detail::hash_box(got.tensor.bytes().data(), dims, b.box,
                                                                         dtype_size(info.dtype)));
  }
  return std::move(got.tensor);
}

void Reader::check_block(std::size_t index, const detail::BlockChecksum& block, std::uint64_t got) const {
  if (got != block.xxh3)
    fail(ErrorCode::integrity, format_->name_, "tensor {}: block {}: checksum mismatch (stored {}, data has {})",
         quote(format_->infos_[index].name), detail::box_to_string(block.box), detail::format_checksum(block.xxh3),
         detail::format_checksum(got));
}

Tensor Reader::read(std::size_t index) { return read_verified(index, format_->options_.verify_checksums); }

Tensor Reader::read(std::string_view name, std::string_view section) { return read(find(name, section)); }

Tensor Reader::read_slice(std::size_t index, const std::vector<std::uint64_t>& offsets,
                          const std::vector<std::uint64_t>& sizes) {
  const detail::Location& location = located(index);
  detail::Delivery how;
  how.zero_copy = format_->options_.zero_copy;
  how.writable = format_->options_.writable;
  how.threads = format_->options_.threads;
  const auto* blocks = format_->options_.verify_checksums ? block_checksums(*format_, index) : nullptr;
  if (!blocks)
    return about_tensor(*format_, index, [&] { return detail::deliver_slice(location, offsets, sizes, how, *scratch_); });
  // With per-block checksums the slice is verified: each block it meets is read whole and
  // checked, and its part of the slice copied out (a slice that is one block is that block).
  const auto& info = format_->infos_[index];
  const detail::Box want{offsets, sizes};
  if (!detail::box_inside(want, info.shape))
    fail(ErrorCode::invalid_argument, format_->name_, "tensor {}: slice {} is outside its shape {}", quote(info.name),
         detail::box_to_string(want), shape_to_string(info.shape));
  const std::size_t itemsize = dtype_size(info.dtype);
  // The blocks the slice meets, read in one piece (their bounding box) when that is not much more
  // than the blocks themselves: one read and no copy when the slice is the bounding box (a whole
  // tensor, a slice of whole blocks); block by block otherwise.
  std::vector<const detail::BlockChecksum*> met;
  detail::Box bound;
  std::uint64_t met_volume = 0;
  for (const auto& b : *blocks) {
    if (!detail::box_intersection(b.box, want)) continue;
    met.push_back(&b);
    met_volume += *detail::box_volume(b.box);
    if (met.size() == 1) {
      bound = b.box;
      continue;
    }
    for (std::size_t k = 0; k < sizes.size(); ++k) {
      const std::uint64_t lo = std::min(bound.offsets[k], b.box.offsets[k]);
      const std::uint64_t hi = std::max(bound.offsets[k] + bound.sizes[k], b.box.offsets[k] + b.box.sizes[k]);
      bound.offsets[k] = lo, bound.sizes[k] = hi - lo;
    }
  }
  // An empty slice meets no block.
  if (met.empty()) return Tensor::uninitialized(info.dtype, Shape(sizes.begin(), sizes.end()));
  auto place = [&](const detail::Box& inner, const detail::Box& outer) {
    std::vector<std::uint64_t> at(inner.offsets.size());
    for (std::size_t k = 0; k < at.size(); ++k) at[k] = inner.offsets[k] - outer.offsets[k];
    return detail::Box{at, inner.sizes};
  };
  auto read_box = [&](const detail::Box& box) {
    return about_tensor(*format_, index, [&] { return detail::deliver_slice(location, box.offsets, box.sizes, how, *scratch_); });
  };
  if (*detail::box_volume(bound) <= 2 * met_volume) {
    Tensor piece = read_box(bound);
    for (const auto* b : met) check_block(index, *b, detail::hash_box(piece.bytes().data(), bound.sizes, place(b->box, bound), itemsize));
    if (bound.offsets == offsets && bound.sizes == sizes) return piece;
    Tensor out = Tensor::uninitialized(info.dtype, Shape(sizes.begin(), sizes.end()));
    detail::copy_box(piece.bytes().data(), bound.sizes, place(want, bound).offsets, out.mutable_bytes().data(), sizes,
                     std::vector<std::uint64_t>(sizes.size(), 0), sizes, itemsize);
    return out;
  }
  Tensor out = Tensor::uninitialized(info.dtype, Shape(sizes.begin(), sizes.end()));
  for (const auto* b : met) {
    const auto common = *detail::box_intersection(b->box, want);
    Tensor piece = read_box(b->box);
    check_block(index, *b, detail::hash_box(piece.bytes().data(), b->box.sizes, place(b->box, b->box), itemsize));
    detail::copy_box(piece.bytes().data(), b->box.sizes, place(common, b->box).offsets, out.mutable_bytes().data(), sizes,
                     place(common, want).offsets, common.sizes, itemsize);
  }
  return out;
}

Tensor Reader::read_slice(std::string_view name, const std::vector<std::uint64_t>& offsets,
                          const std::vector<std::uint64_t>& sizes, std::string_view section) {
  return read_slice(find(name, section), offsets, sizes);
}

std::optional<Source::FileSpan> Reader::file_span(std::size_t index) const {
  const auto span = detail::file_span(located(index));
  if (!span) return std::nullopt;
  return FileSpan{span->first, span->second};
}

void Reader::expect_full_read() { format_->prepare_full_read(); }

StateDict Reader::read_all(const ProgressFn& progress) {
  StateDict state;
  const auto& infos = tensors();
  std::uint64_t total = 0, done = 0;
  for (const auto& info : infos) total += info.nbytes();
  format_->prepare_full_read();
  for (std::size_t i = 0; i < infos.size(); ++i) {
    state.add(infos[i], read(i));
    done += infos[i].nbytes();
    if (progress) progress(done, total);
  }
  state.metadata() = metadata();
  state.set_role_source(role_source());
  return state;
}

std::size_t Reader::verify(const ProgressFn& progress) {
  std::size_t checked = 0;
  const auto& infos = tensors();
  std::uint64_t total = 0, done = 0;
  for (const auto& info : infos) total += info.nbytes();
  format_->prepare_full_read();
  for (std::size_t i = 0; i < infos.size(); ++i) {
    (void)read_verified(i, true);
    checked += checksum(i).has_value() || block_checksums(*format_, i) || detail::carries_crc(located(i));
    done += infos[i].nbytes();
    if (progress) progress(done, total);
  }
  return checked;
}

// --- finding formats -----------------------------------------------------------------------

std::string format_names() {
  std::string out;
  for (const auto& f : formats()) out += (out.empty() ? "" : ", ") + f.name;
  return out;
}

std::string writable_format_names() {
  std::string out;
  for (const auto& f : formats())
    if (f.write) out += (out.empty() ? "" : ", ") + f.name;
  return out;
}

const FormatHandler* find_format(std::string_view name) {
  for (const auto& f : formats())
    if (f.name == name) return &f;
  return nullptr;
}

namespace {

const FormatHandler& detect(const detail::ByteSource& source) {
  std::vector<std::byte> head(static_cast<std::size_t>(std::min<std::uint64_t>(4096, source.size())));
  (void)source.read(0, head);
  for (const auto& f : formats())
    if (f.sniff(head, source.size())) return f;
  for (const auto& f : formats())
    if (f.sniff_further && f.sniff_further(source)) return f;
  if (source.size() == 0) fail(ErrorCode::format, source.name(), "file is empty, expected a checkpoint ({})", format_names());
  fail(ErrorCode::format, source.name(), "unrecognized file format at offset 0, expected one of: {}", format_names());
}

}  // namespace

std::unique_ptr<Reader> detail::open_source(std::shared_ptr<const detail::ByteSource> source, const ReadOptions& options) {
  const FormatHandler& handler = detect(*source);
  const std::string name = source->name();
  try {
    return detail::make_reader(handler.open(std::move(source), options));
  } catch (const std::bad_alloc&) {
    fail(ErrorCode::io, name, "out of memory while listing the checkpoint");
  }
}

std::filesystem::path detail::checkpoint_file(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::is_directory(path, ec)) return path;
  const auto metadata = path / ".metadata";
  if (std::filesystem::exists(std::filesystem::symlink_status(metadata, ec))) return metadata;
  fail(ErrorCode::io, path.string(),
       "is a directory without a .metadata file (a PyTorch distributed checkpoint's directory holds one; other "
       "checkpoints are files)");
}

const FormatHandler& detect_format(const std::filesystem::path& path) {
  return detect(*detail::ByteSource::open_file(detail::checkpoint_file(path)));
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
  return detail::open_source(detail::ByteSource::open_file(detail::checkpoint_file(path)), options);
}

StateDict load(const std::filesystem::path& path, const ReadOptions& options) {
  return open(path, options)->read_all();
}

std::unique_ptr<Reader> open_memory(std::span<const std::byte> bytes, std::shared_ptr<const void> owner,
                                    const ReadOptions& options, std::string name) {
  return detail::open_source(detail::ByteSource::from_memory(bytes, std::move(owner), std::move(name)), options);
}

std::unique_ptr<Reader> open_memory(std::vector<std::byte> bytes, const ReadOptions& options, std::string name) {
  auto owner = std::make_shared<const std::vector<std::byte>>(std::move(bytes));
  const std::span<const std::byte> view(*owner);
  return open_memory(view, std::move(owner), options, std::move(name));
}

StateDict load_memory(std::span<const std::byte> bytes, const ReadOptions& options, std::string name) {
  // The bytes are the caller's only for this call: every tensor is a copy.
  ReadOptions copies = options;
  copies.zero_copy = false;
  return open_memory(bytes, nullptr, copies, std::move(name))->read_all();
}

// --- writing -------------------------------------------------------------------------------

namespace {

const char* compression_name(Compression c) {
  switch (c) {
    case Compression::none: return "none";
    case Compression::zstd: return "zstd";
    case Compression::deflate: return "deflate";
  }
  return "?";
}

}  // namespace

namespace {
// A Source with the metadata save() decided on (kRoleSourceKey).
class RoleRecord final : public Source {
 public:
  RoleRecord(Source& inner, Metadata metadata) : inner_(inner), metadata_(std::move(metadata)) {}
  const std::vector<TensorInfo>& tensors() const override { return inner_.tensors(); }
  const Metadata& metadata() const override { return metadata_; }
  Tensor read(std::size_t index) override { return inner_.read(index); }
  RoleSource role_source() const noexcept override { return inner_.role_source(); }
  std::optional<FileSpan> file_span(std::size_t index) const override { return inner_.file_span(index); }

 private:
  Source& inner_;
  Metadata metadata_;
};
}  // namespace

void save(Source& source, const std::filesystem::path& path, const WriteOptions& options) {
  const FormatHandler* handler = nullptr;
  if (!options.format.empty()) {
    handler = find_format(options.format);
    if (!handler) fail(ErrorCode::invalid_argument, path.string(), "unknown output format {}", quote(options.format));
  } else {
    handler = format_for_extension(path);
    if (!handler)
      fail(ErrorCode::invalid_argument, path.string(),
           "cannot tell the output format from the extension; name one ({})", writable_format_names());
  }
  if (handler->write == nullptr)
    fail(ErrorCode::unsupported, path.string(), "ckpt reads {} but does not write it (output formats: {})", handler->name,
         writable_format_names());
  // Options a format cannot honour are refused, never ignored.
  if (options.compression != Compression::none &&
      std::find(handler->compressions.begin(), handler->compressions.end(), options.compression) ==
          handler->compressions.end()) {
    std::string which;
    for (const auto& f : formats())
      if (std::find(f.compressions.begin(), f.compressions.end(), options.compression) != f.compressions.end())
        which += (which.empty() ? "" : ", ") + f.name;
    fail(ErrorCode::invalid_argument, path.string(), "{} cannot be compressed with {} (only {})", handler->name,
         compression_name(options.compression), which);
  }
  if (options.max_shard_bytes != 0 && !handler->shards)
    fail(ErrorCode::invalid_argument, path.string(), "{} cannot be written in shards (max_shard_bytes; safetensors can)",
         handler->name);
  // Inferred roles are recorded as inferred (kRoleSourceKey), and a stale record is dropped, so that
  // a plain state_dict converted to a format with stored roles is not read back as exact.
  const bool inferred = source.role_source() == RoleSource::heuristic;
  const auto& meta = source.metadata();
  const auto mark = meta.is_object() ? meta.find(std::string(kRoleSourceKey)) : meta.end();
  const bool marked = mark != meta.end() && *mark == "heuristic";
  // Written as it is unless the record must be added (inferred, unmarked) or dropped (exact, any).
  if (inferred ? marked : mark == meta.end()) {
    handler->write(source, path, options);
    return;
  }
  Metadata fixed = meta.is_object() ? meta : Metadata::object();
  if (inferred) fixed[std::string(kRoleSourceKey)] = "heuristic";
  else fixed.erase(std::string(kRoleSourceKey));
  RoleRecord recorded(source, std::move(fixed));
  handler->write(recorded, path, options);
}

void save(const StateDict& state, const std::filesystem::path& path, const WriteOptions& options) {
  StateDictSource source(state);
  save(source, path, options);
}

}  // namespace ckpt

// PyTorch distributed checkpoints: a directory with `.metadata` (metadata.h) and the data files
// it names (`__<rank>_<n>.distcp`). Each tensor is listed with the size the metadata gives; its
// chunks (the boxes each rank saved) are each a small torch.save archive at a byte range of a
// data file, read in place through the .pt reader on a window of that file. A tensor saved as one
// chunk is that chunk's location; others are tiles of it (core/location.h), so a whole read
// assembles one tensor at a time and a slice reads only the chunks it meets. Values that are not
// tensors (BytesStorageMetadata: a torch.save of the value) become metadata when they are plain
// data (format-spec/conventions.md §8).
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>

#include "ckpt/dcp.h"
#include "ckpt/pytorch.h"
#include "ckpt/roles.h"
#include "core/blocks.h"
#include "core/deliver.h"
#include "core/format_reader.h"
#include "dcp/format.h"
#include "dcp/metadata.h"
#include "pytorch/format.h"
#include "util/bytes.h"
#include "util/mapped_file.h"

namespace ckpt {
namespace {

using detail::fail;
using detail::quote;
using detail::dcp::Chunk;
using detail::dcp::Item;
using detail::dcp::PathPart;
using detail::dcp::Storage;

// Values (not tensors) larger than this are not read for metadata.
constexpr std::uint64_t kMaxValueBytes = 64u << 20;
// Box comparisons spent checking that a tensor's chunks are disjoint before giving up.
constexpr std::uint64_t kMaxOverlapChecks = 1u << 24;

std::string part_text(const PathPart& part) {
  return std::holds_alternative<std::string>(part) ? std::get<std::string>(part)
                                                   : std::to_string(std::get<std::uint64_t>(part));
}

std::string join(const std::vector<std::string>& parts, std::size_t from) {
  std::string out;
  for (std::size_t i = from; i < parts.size(); ++i) out += (i > from ? "." : "") + parts[i];
  return out;
}

std::vector<std::string> split_dots(const std::string& text) {
  std::vector<std::string> out;
  for (std::size_t start = 0;;) {
    const auto dot = text.find('.', start);
    out.push_back(text.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) return out;
    start = dot + 1;
  }
}

// A file the metadata may name: a plain name in the checkpoint's directory.
bool plain_file_name(const std::string& file) {
  return !file.empty() && file.find('/') == std::string::npos && file.find('\\') == std::string::npos &&
         file.find('\0') == std::string::npos && file != "." && file != "..";
}

std::string box_text(const std::vector<std::uint64_t>& v) { return fmt::format("[{}]", fmt::join(v, ", ")); }

class DcpReader final : public detail::FormatReader {
 public:
  DcpReader(std::shared_ptr<const detail::ByteSource> source, const ReadOptions& options)
      : FormatReader(std::move(source), options) {
    format_ = "dcp";
    if (!source_->is_file())
      fail(ErrorCode::unsupported, name_, "a distributed checkpoint's .metadata names the files beside it: open its directory");
    if (source_->size() > options_.max_header_bytes)
      fail(ErrorCode::format, name_, ".metadata of {} bytes is over the limit of {}", source_->size(), options_.max_header_bytes);
    checkpoint_ = detail::dcp::parse_metadata(source_->bytes(), name_, options_);
    format_version_ = checkpoint_.version;
    notes_ = checkpoint_.notes;
    dir_ = source_->path().parent_path();
    if (dir_.empty()) dir_ = ".";
    dir_fd_ = detail::UniqueFd(::open(dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!dir_fd_.valid()) fail(ErrorCode::io, dir_.string(), "cannot open the checkpoint's directory: {}", std::strerror(errno));
    allow_open_files();
    check_storage();
    for (std::size_t i = 0; i < checkpoint_.items.size(); ++i)
      if (checkpoint_.items[i].tensor) check_chunks(checkpoint_.items[i]);
    list_tensors();
    read_values();
    record_shape();
    finish_listing();
  }

  detail::Location locate(std::size_t index) override {
    const Item& item = checkpoint_.items[tensor_items_[index]];
    const std::uint64_t numel = shape_numel(infos_[index].shape);
    // A tensor saved whole (one chunk covering it, as plain tensors are) is its chunk.
    if (item.chunks.size() == 1 && numel > 0) return chunk_location(item, item.chunks[0]);
    detail::Location l = location(index);
    auto tiles = std::make_shared<std::vector<detail::Tile>>();
    for (const Chunk& chunk : item.chunks) {
      if (volume(chunk) == 0) continue;
      tiles->push_back({chunk.offsets, std::make_shared<const detail::Location>(chunk_location(item, chunk))});
    }
    l.tiles = std::move(tiles);
    return l;
  }

 private:
  static std::uint64_t volume(const Chunk& chunk) {
    std::uint64_t n = 1;
    for (const auto d : chunk.sizes) n = detail::checked_mul(n, d).value_or(UINT64_MAX);
    return n;
  }

  // The data file `file` of the checkpoint, opened once: a plain name in its directory, a regular
  // file, not a symbolic link.
  const std::shared_ptr<const detail::ByteSource>& file(const std::string& file) {
    auto it = files_.find(file);
    if (it != files_.end()) return it->second;
    const auto path = dir_ / file;
    if (!plain_file_name(file))
      fail(ErrorCode::format, name_, "storage_data names file {}, not a file in the checkpoint's directory", quote(file));
    detail::UniqueFd fd(::openat(dir_fd_.get(), file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
    if (!fd.valid()) {
      if (errno == ELOOP)
        fail(ErrorCode::format, path.string(), "is a symbolic link: a distributed checkpoint's files must lie in its directory");
      fail(ErrorCode::io, path.string(), "cannot open{}: {}",
           errno == EMFILE ? fmt::format(" (after {} of the checkpoint's data files; raise ulimit -n)", files_.size()) : "",
           std::strerror(errno));
    }
    const int flags = ::fcntl(fd.get(), F_GETFL);
    if (flags >= 0) ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
    return files_.emplace(file, detail::ByteSource::from_fd(std::move(fd), path)).first->second;
  }

  // Each data file stays open while the reader lives (its chunks' locations read from it): torch
  // 1.13 writes one file per item by default, so a large checkpoint may need more descriptors
  // than the soft limit allows. It is raised as far as the hard limit permits, never lowered.
  void allow_open_files() const {
    std::set<std::string> names;
    for (const Item& item : checkpoint_.items) {
      if (!item.tensor) names.insert(item.storage.file);
      for (const Chunk& chunk : item.chunks) names.insert(chunk.storage.file);
    }
    constexpr rlim_t kSpare = 256;  // for everything else the process has open
    struct rlimit limit {};
    if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY ||
        names.size() + kSpare <= limit.rlim_cur)
      return;
    const rlim_t wanted = names.size() + kSpare;
    limit.rlim_cur = limit.rlim_max == RLIM_INFINITY ? wanted : std::min(wanted, limit.rlim_max);
    (void)::setrlimit(RLIMIT_NOFILE, &limit);  // if it fails, opening says so
  }

  // Every item's bytes lie in its file, and no two items share a byte (so no tensor claims more
  // than the files hold).
  void check_storage() {
    struct Range {
      std::uint64_t offset, length;
      std::string what;
    };
    std::map<std::string, std::vector<Range>> by_file;
    auto add = [&](const Storage& s, const std::string& what) {
      const auto& source = file(s.file);
      if (s.offset > source->size() || s.length > source->size() - s.offset)
        fail(ErrorCode::format, name_, "{}: bytes [{}, {}) lie past the end of {} ({} bytes)", what, s.offset,
             s.offset + std::min(s.length, UINT64_MAX - s.offset), quote(s.file), source->size());
      if (s.length > 0) by_file[s.file].push_back({s.offset, s.length, what});
    };
    for (const Item& item : checkpoint_.items) {
      if (!item.tensor) add(item.storage, "value of key " + quote(item.fqn));
      for (const Chunk& chunk : item.chunks)
        add(chunk.storage, fmt::format("key {}, chunk at {}", quote(item.fqn), box_text(chunk.offsets)));
    }
    for (auto& [name, ranges] : by_file) {
      std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) { return a.offset < b.offset; });
      for (std::size_t i = 1; i < ranges.size(); ++i)
        if (ranges[i].offset < ranges[i - 1].offset + ranges[i - 1].length)
          fail(ErrorCode::format, name_, "{}: bytes [{}, {}) of {} overlap those of {}", ranges[i].what, ranges[i].offset,
               ranges[i].offset + ranges[i].length, quote(name), ranges[i - 1].what);
    }
  }

  // The chunks lie inside the tensor, do not overlap and cover it.
  void check_chunks(const Item& item) const {
    const std::string what = "key " + quote(item.fqn);
    Shape shape(item.size.begin(), item.size.end());
    std::uint64_t numel = 0;
    try {
      numel = shape_numel(shape);
      (void)shape_nbytes(item.dtype, shape);
    } catch (const Error&) {
      fail(ErrorCode::format, name_, "{}: size {} overflows", what, box_text(item.size));
    }
    std::uint64_t covered = 0;
    for (std::size_t c = 0; c < item.chunks.size(); ++c) {
      const Chunk& chunk = item.chunks[c];
      for (std::size_t k = 0; k < item.size.size(); ++k)
        if (chunk.offsets[k] > item.size[k] || chunk.sizes[k] > item.size[k] - chunk.offsets[k])
          fail(ErrorCode::format, name_, "{}: chunk at {} of sizes {} lies outside the tensor's size {}", what,
               box_text(chunk.offsets), box_text(chunk.sizes), box_text(item.size));
      const std::uint64_t n = volume(chunk);  // at most numel: the chunk lies inside
      covered = detail::checked_add(covered, n).value_or(UINT64_MAX);
      if (chunk.storage.transforms.empty() && n * dtype_size(item.dtype) > chunk.storage.length)
        fail(ErrorCode::format, name_, "{}: chunk at {} needs {} bytes, its storage holds {}", what, box_text(chunk.offsets),
             n * dtype_size(item.dtype), chunk.storage.length);
    }
    // Disjoint: the check ckpt-h5's per-block checksums get (core/blocks.h), bounded.
    std::vector<detail::Box> boxes;
    for (const Chunk& chunk : item.chunks) boxes.push_back({chunk.offsets, chunk.sizes});
    std::uint64_t budget = kMaxOverlapChecks;
    bool exhausted = false;
    if (const auto pair = detail::find_overlap(boxes, budget, exhausted))
      fail(ErrorCode::format, name_, "{}: chunks at {} and {} overlap", what, box_text(item.chunks[pair->first].offsets),
           box_text(item.chunks[pair->second].offsets));
    if (exhausted)
      fail(ErrorCode::unsupported, name_, "{}: its {} chunks are too many to check against each other", what,
           item.chunks.size());
    if (covered != numel)
      fail(ErrorCode::format, name_, "{}: its chunks hold {} of its {} elements (data is missing)", what, covered, numel);
  }

  // Names and roles (format-spec/conventions.md §8): the model is the dict at --key, else the top
  // level if it holds tensors itself, else the top-level key holding the most tensors directly;
  // tensors elsewhere go to a section named by their first key.
  void list_tensors() {
    std::vector<std::vector<std::string>> paths;  // per tensor item
    for (std::size_t i = 0; i < checkpoint_.items.size(); ++i) {
      const Item& item = checkpoint_.items[i];
      if (!item.tensor) continue;
      std::vector<std::string> path;
      for (const PathPart& part : item.path) path.push_back(part_text(part));
      paths.push_back(std::move(path));
      tensor_items_.push_back(i);
    }
    std::vector<std::string> model;
    if (!options_.model_key.empty()) {
      model = split_dots(options_.model_key);
      model_key_ = options_.model_key;
      // Keys as saved: the model's are those that start "KEY."; the others go to the section
      // their first dotted part names.
      if (!checkpoint_.flattened) {
        model = {options_.model_key};
        for (auto& path : paths) {
          const std::string key = path[0];
          const auto dot = key.find('.');
          if (key.starts_with(options_.model_key + ".")) path = {options_.model_key, key.substr(options_.model_key.size() + 1)};
          else if (dot != std::string::npos) path = {key.substr(0, dot), key.substr(dot + 1)};
        }
      }
      const bool found = std::any_of(paths.begin(), paths.end(), [&](const auto& p) {
        return p.size() > model.size() && std::equal(model.begin(), model.end(), p.begin());
      });
      if (!found)
        fail(ErrorCode::invalid_argument, name_, "no tensor lies under key {} (asked for the model with {})",
             quote(options_.model_key), quote(options_.model_key));
    } else if (std::none_of(paths.begin(), paths.end(), [](const auto& p) { return p.size() == 1; })) {
      std::vector<std::pair<std::string, std::size_t>> counts;  // first key, tensors right under it
      for (const auto& p : paths) {
        if (p.size() != 2) continue;
        auto it = std::find_if(counts.begin(), counts.end(), [&](const auto& c) { return c.first == p[0]; });
        if (it == counts.end()) counts.emplace_back(p[0], 1);
        else ++it->second;
      }
      std::size_t best = 0;
      for (const auto& [key, n] : counts)
        if (n > best) {
          best = n;
          model = {key};
        }
      model_key_ = join(model, 0);
    }
    const BufferRule is_buffer(options_.buffer_regex);
    for (std::size_t t = 0; t < paths.size(); ++t) {
      const Item& item = checkpoint_.items[tensor_items_[t]];
      const auto& path = paths[t];
      TensorInfo info;
      info.dtype = item.dtype;
      info.shape.assign(item.size.begin(), item.size.end());
      if (path.size() > model.size() && std::equal(model.begin(), model.end(), path.begin())) {
        info.name = join(path, model.size());
        if (is_buffer(info.name, info.dtype)) {
          info.role = Role::buffer;
          info.collection = std::string(kDefaultBufferCollection);
        }
      } else {
        info.role = Role::extra;
        info.section = path.size() > 1 ? path[0] : "checkpoint";
        info.name = path.size() > 1 ? join(path, 1) : path[0];
      }
      infos_.push_back(std::move(info));
    }
    role_source_ = RoleSource::heuristic;
    if (!checkpoint_.version.empty() || !checkpoint_.storage_meta.is_null()) {
      Metadata dcp = Metadata::object();
      if (!checkpoint_.version.empty()) dcp["version"] = checkpoint_.version;
      if (!checkpoint_.storage_meta.is_null()) dcp["storage_meta"] = checkpoint_.storage_meta;
      metadata_[std::string(kDcpMetadataKey)] = std::move(dcp);
    }
  }

  // The shape of a checkpoint rather than a bare state_dict, for writers to give back (as the .pt
  // reader records it, format-spec/conventions.md §4).
  void record_shape() {
    const bool extras = std::any_of(infos_.begin(), infos_.end(), [](const auto& i) { return i.role == Role::extra; });
    if (model_key_.empty() && !extras && tuples_.empty()) return;
    metadata_[std::string(kTorchCheckpointKey)] = {
        {"model_key", model_key_}, {"int_keys", Metadata::array()}, {"tuples", std::move(tuples_)}};
  }

  // Values become metadata at their path when they are plain data; others are left out with a
  // note.
  void read_values() {
    for (const Item& item : checkpoint_.items) {
      if (item.tensor) continue;
      const std::string what = "value of key " + quote(item.fqn);
      if (item.storage.length > kMaxValueBytes) {
        notes_.push_back(fmt::format("{} ({} bytes) is larger than {} MiB: left out", what, item.storage.length,
                                     kMaxValueBytes >> 20));
        continue;
      }
      detail::pytorch::SavedObject saved;
      try {
        saved = detail::pytorch::open_saved_object(item_source(item.storage, kMaxValueBytes, what), options_);
      } catch (const Error& e) {
        if (e.code() != ErrorCode::unsupported) throw;
        notes_.push_back(fmt::format("{} is not plain data, left out: {}", what, e.message()));
        continue;
      }
      if (item.storage.transforms.empty()) file(item.storage.file)->release(item.storage.offset, item.storage.length);
      if (!saved.value) {
        notes_.push_back(fmt::format("{} is a tensor saved as a value: left out", what));
        continue;
      }
      if (put_value(item, std::move(*saved.value), what))
        for (const Metadata& inside : saved.tuples) {
          Metadata path = Metadata::array();
          for (const PathPart& part : item.path)
            if (const auto* key = std::get_if<std::string>(&part)) path.push_back(*key);
            else path.push_back(std::get<std::uint64_t>(part));
          for (const Metadata& step : inside) path.push_back(step);
          tuples_.push_back(std::move(path));
        }
    }
  }

  // Puts a value at its path in the metadata; false (with a note) if another is there.
  bool put_value(const Item& item, Metadata value, const std::string& what) {
    // The keys this reader records itself: a value under such a name would be taken for ckpt's
    // record (format-spec/conventions.md §4, §8).
    if (const auto* top = item.path.empty() ? nullptr : std::get_if<std::string>(&item.path[0]);
        top && (*top == kTorchCheckpointKey || *top == kDcpMetadataKey)) {
      notes_.push_back(fmt::format("{}: a name ckpt keeps for its own records, left out", what));
      return false;
    }
    Metadata* node = &metadata_;
    for (std::size_t i = 0; i < item.path.size(); ++i) {
      const bool last = i + 1 == item.path.size();
      Metadata* child = nullptr;
      if (const auto* key = std::get_if<std::string>(&item.path[i])) {
        if (!node->is_object()) break;
        child = &(*node)[*key];
      } else {
        const std::uint64_t index = std::get<std::uint64_t>(item.path[i]);  // < the number of items
        if (!node->is_array()) break;
        while (node->size() <= index) node->push_back(nullptr);
        child = &(*node)[static_cast<std::size_t>(index)];
      }
      if (last) {
        if (!child->is_null()) break;
        *child = std::move(value);
        return true;
      }
      if (child->is_null())
        *child = std::holds_alternative<std::string>(item.path[i + 1]) ? Metadata::object() : Metadata::array();
      node = child;
    }
    notes_.push_back(fmt::format("{} has the place of another value in the metadata: left out", what));
    return false;
  }

  // The bytes of an item: a window of its file, or what its transforms make of them.
  std::shared_ptr<const detail::ByteSource> item_source(const Storage& s, std::uint64_t max_decoded,
                                                        const std::string& what) {
    const auto& whole = file(s.file);
    auto window = detail::ByteSource::window(whole, s.offset, s.length, fmt::format("{} at offset {}", whole->name(), s.offset));
    for (const std::string& transform : s.transforms) {
      const auto slash = transform.find('/');
      const std::string kind = transform.substr(0, slash);
      const std::string version = slash == std::string::npos ? "" : transform.substr(slash + 1);
      if (kind != "stream.zstd" || version.substr(0, version.find('.')) != "1")
        fail(ErrorCode::unsupported, name_, "{} is stored through transform {}, which ckpt does not read (it reads stream.zstd/1)",
             what, quote(transform));
      window = unzstd(*window, max_decoded, what);
    }
    return window;
  }

  // Decompresses a whole item written through torch's zstd stream extension (one or more zstd
  // frames), refusing output beyond `max_bytes`.
  std::shared_ptr<const detail::ByteSource> unzstd(const detail::ByteSource& in, std::uint64_t max_bytes,
                                                   const std::string& what) {
    std::vector<std::byte> compressed(static_cast<std::size_t>(in.size()));
    (void)in.read(0, compressed);
    auto out = std::make_shared<std::vector<std::byte>>();
    std::unique_ptr<ZSTD_DCtx, decltype(&ZSTD_freeDCtx)> dctx(ZSTD_createDCtx(), ZSTD_freeDCtx);
    if (!dctx) fail(ErrorCode::io, in.name(), "zstd cannot start decompressing");
    ZSTD_inBuffer input{compressed.data(), compressed.size(), 0};
    while (true) {
      const std::size_t before = out->size();
      const auto room = static_cast<std::size_t>(std::min<std::uint64_t>(max_bytes + 1, std::max<std::size_t>(before * 2, 1u << 16)));
      if (room == before)
        fail(ErrorCode::format, in.name(), "{}: its zstd data decompresses to more than {} bytes", what, max_bytes);
      out->resize(room);
      ZSTD_outBuffer output{out->data() + before, room - before, 0};
      const std::size_t rc = ZSTD_decompressStream(dctx.get(), &output, &input);
      out->resize(before + output.pos);
      if (ZSTD_isError(rc)) fail(ErrorCode::format, in.name(), "{}: zstd data is corrupt ({})", what, ZSTD_getErrorName(rc));
      if (input.pos == input.size && rc == 0) break;  // every frame complete
      if (input.pos == input.size && output.pos < room - before)
        fail(ErrorCode::format, in.name(), "{}: zstd data ends inside a frame", what);
    }
    if (out->size() > max_bytes)
      fail(ErrorCode::format, in.name(), "{}: its zstd data decompresses to more than {} bytes", what, max_bytes);
    const std::span<const std::byte> bytes(*out);
    return detail::ByteSource::from_memory(bytes, out, in.name() + " (zstd)");
  }

  // The saved tensor of a chunk, its dtype and shape checked against the metadata.
  std::unique_ptr<detail::FormatReader> open_chunk(const Item& item, const Chunk& chunk) {
    const std::string what = fmt::format("chunk at {}", box_text(chunk.offsets));
    const std::uint64_t nbytes = volume(chunk) * dtype_size(item.dtype);
    // A torch.save archive: the bytes, the pickle and a few zip records.
    const std::uint64_t max_archive = nbytes + nbytes / 16 + (1u << 20);
    auto saved = detail::pytorch::open_saved_object(item_source(chunk.storage, max_archive, what), options_);
    if (!saved.tensor) fail(ErrorCode::format, name_, "{} holds a value, not a tensor", what);
    const TensorInfo& got = saved.tensor->infos_.at(0);
    const Shape want(chunk.sizes.begin(), chunk.sizes.end());
    if (got.dtype != item.dtype || got.shape != want)
      fail(ErrorCode::format, saved.tensor->name_, "{} holds a {} tensor of shape {}, the metadata says {} {}", what,
           dtype_name(got.dtype), shape_to_string(got.shape), dtype_name(item.dtype), shape_to_string(want));
    return std::move(saved.tensor);
  }

  detail::Location chunk_location(const Item& item, const Chunk& chunk) {
    if (!chunk.storage.transforms.empty()) {
      // A compressed chunk is decompressed when it is read, and let go after: holding every
      // chunk decompressed from the listing on would cost the whole model's memory, and a slice
      // would decompress chunks it does not meet. The read is of the whole chunk (its zip
      // entry's CRC-32 checked), of which the region asked for is copied.
      detail::Location l;
      l.source = source_;
      l.dtype = item.dtype;
      l.shape = Shape(chunk.sizes.begin(), chunk.sizes.end());
      const Item* it = &item;
      const Chunk* c = &chunk;
      l.region_verified = options_.verify_checksums;
      l.read_region = [this, it, c](const std::vector<std::uint64_t>& offsets, const std::vector<std::uint64_t>& sizes,
                                    std::span<std::byte> out) {
        auto reader = detail::make_reader(open_chunk(*it, *c));
        const Tensor whole = reader->read(0);
        const std::vector<std::uint64_t> dims(c->sizes.begin(), c->sizes.end());
        detail::copy_box(whole.bytes().data(), dims, offsets, out.data(), sizes, std::vector<std::uint64_t>(sizes.size(), 0),
                         sizes, dtype_size(it->dtype));
      };
      return l;
    }
    auto chunk_reader = open_chunk(item, chunk);
    detail::Location l = chunk_reader->locate(0);
    chunk_readers_.push_back(std::move(chunk_reader));  // its archive serves the location's reads
    // Its records are parsed (the data is read with pread): the pages of the file mapped to parse
    // them need not stay mapped (ByteSource::release).
    file(chunk.storage.file)->release(chunk.storage.offset, chunk.storage.length);
    return l;
  }

  detail::dcp::Checkpoint checkpoint_;
  std::filesystem::path dir_;
  detail::UniqueFd dir_fd_;
  std::map<std::string, std::shared_ptr<const detail::ByteSource>> files_;
  std::vector<std::size_t> tensor_items_;  // parallel to infos_: the item of each tensor
  std::vector<std::unique_ptr<detail::FormatReader>> chunk_readers_;
  Metadata tuples_ = Metadata::array();  // key paths of metadata arrays that were tuples
};

}  // namespace

namespace detail::dcp {

bool sniff(std::span<const std::byte> head, std::uint64_t) {
  // A pickle (PROTO) whose first global is DCP's Metadata class.
  const std::string_view text(reinterpret_cast<const char*>(head.data()), std::min<std::size_t>(head.size(), 256));
  return !text.empty() && static_cast<unsigned char>(text[0]) == 0x80 &&
         (text.find("torch.distributed.checkpoint.metadata") != std::string_view::npos ||
          text.find("torch.distributed._shard.checkpoint.metadata") != std::string_view::npos) &&
         text.find("Metadata") != std::string_view::npos;
}

std::unique_ptr<FormatReader> open_reader(std::shared_ptr<const ByteSource> source, const ReadOptions& options) {
  return std::make_unique<DcpReader>(std::move(source), options);
}

}  // namespace detail::dcp
}  // namespace ckpt

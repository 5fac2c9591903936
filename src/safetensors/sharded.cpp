// Sharded safetensors (huggingface's model.safetensors.index.json + model-0000i-of-0000N
// shards): one Reader over all shards, and a writer that splits a Source into shards.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <set>

#include <nlohmann/json.hpp>

#include "ckpt/safetensors.h"
#include "core/format_reader.h"
#include "core/subset.h"
#include "safetensors/format.h"
#include "safetensors/dtypes.h"
#include "util/atomic_file.h"
#include "util/bytes.h"
#include "util/checksum.h"
#include "util/mapped_file.h"  // UniqueFd
#include "util/json_strict.h"

namespace ckpt {
namespace {

using detail::fail;
using detail::quote;

constexpr std::uint64_t kMaxIndexBytes = 256u << 20;
// The index's record of its shards, written by ckpt: {file: {"size": bytes, "header":
// "xxh3-64:..."}} (the header names each tensor, its place and checksum): a shard that is not the
// one written with this index is refused (format-spec/conventions.md).
constexpr std::string_view kShardsKey = "ckpt.shards";

// A file name the index may name: a plain name beside it.
bool plain_file_name(const std::string& file) {
  return !file.empty() && file.find('/') == std::string::npos && file.find('\\') == std::string::npos && file != "." &&
         file != "..";
}

// The shard files the index at `path` names: none if there is no index; nullopt if there is one
// that cannot be read as an index (then nothing may be deleted on its account).
std::optional<std::set<std::string>> shards_named_by(const std::filesystem::path& path) {
  std::set<std::string> out;
  std::error_code ec;
  if (!std::filesystem::exists(std::filesystem::symlink_status(path, ec))) return out;
  const auto size = std::filesystem::file_size(path, ec);
  if (ec || size > kMaxIndexBytes) return std::nullopt;
  std::ifstream in(path, std::ios::binary);
  std::string text(size, '\0');
  if (!in.read(text.data(), static_cast<std::streamsize>(size))) return std::nullopt;
  Metadata index;
  if (!detail::parse_json_strict(text, index).empty() || !index.is_object() || !index.contains("weight_map") ||
      !index["weight_map"].is_object())
    return std::nullopt;
  for (const auto& [tensor, shard] : index["weight_map"].items()) {
    if (!shard.is_string()) return std::nullopt;
    out.insert(shard.get<std::string>());
  }
  return out;
}

// An exclusive flock on a directory, held while one sharded writer decides and acts on what is
// old, what is orphaned and what the new shards are called: writers of the same directory take
// turns, so none deletes what another has just written.
class DirectoryLock {
 public:
  explicit DirectoryLock(const std::filesystem::path& dir, const std::string& name)
      : fd_(::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)) {
    if (!fd_.valid()) fail(ErrorCode::io, name, "cannot open its directory: {}", std::strerror(errno));
    while (::flock(fd_.get(), LOCK_EX) != 0)
      if (errno != EINTR) fail(ErrorCode::io, name, "cannot lock its directory: {}", std::strerror(errno));
  }

 private:
  detail::UniqueFd fd_;  // closing it releases the lock
};

// NAME-00001-of-00005.safetensors, or with a tag: NAME-00001-of-00005-0123abcd.safetensors.
bool shard_file_of(const std::string& file, const std::string& stem) {
  if (!file.starts_with(stem + "-") || !file.ends_with(".safetensors")) return false;
  const std::string middle = file.substr(stem.size() + 1, file.size() - stem.size() - 1 - 12);
  auto digits = [&](std::size_t at, std::size_t n) {
    if (at + n > middle.size()) return false;
    for (std::size_t i = at; i < at + n; ++i)
      if (middle[i] < '0' || middle[i] > '9') return false;
    return true;
  };
  if (!digits(0, 5) || middle.substr(5, 4) != "-of-" || !digits(9, 5)) return false;
  if (middle.size() == 14) return true;
  if (middle.size() != 23 || middle[14] != '-') return false;
  for (std::size_t i = 15; i < 23; ++i)
    if (!std::isxdigit(static_cast<unsigned char>(middle[i]))) return false;
  return true;
}

// Shards of NAME in `dir` that the index does not name and no living writer holds (it keeps
// an exclusive flock on its shards until its index is in place): a killed writer's.
void remove_orphan_shards(const std::filesystem::path& dir, const std::string& stem, const std::set<std::string>& named) {
  detail::remove_abandoned(dir, [&](const std::string& file) {
    // A shard, or the temporary name of one (".SHARD.tmp-XXXXXX": a writer killed between
    // naming and renaming it).
    constexpr std::size_t kSuffix = 11;  // ".tmp-XXXXXX"
    const bool temporary = file.size() > kSuffix + 1 && file[0] == '.' &&
                           file.compare(file.size() - kSuffix, 5, ".tmp-") == 0 &&
                           shard_file_of(file.substr(1, file.size() - 1 - kSuffix), stem);
    return temporary || (shard_file_of(file, stem) && !named.count(file));
  });
}

std::string random_tag() {
  std::random_device rd;
  return fmt::format("{:08x}", rd());
}

class ShardedReader final : public detail::FormatReader {
 public:
  ShardedReader(std::shared_ptr<const detail::ByteSource> source, const ReadOptions& options)
      : FormatReader(std::move(source), options) {
    format_ = "safetensors-sharded";
    const std::string& name = name_;
    if (!source_->is_file())
      fail(ErrorCode::unsupported, name, "a sharded safetensors index names its shard files: open it by path");
    const auto path = source_->path();
    const auto size = source_->size();
    if (size > kMaxIndexBytes) fail(ErrorCode::format, name, "index of {} bytes is over the {} byte limit", size, kMaxIndexBytes);
    const auto bytes = source_->bytes();
    const std::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
    Metadata index;
    if (const auto error = detail::parse_json_strict(text, index); !error.empty())
      fail(ErrorCode::format, name, "index {}", error);
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
      fail(ErrorCode::format, name, "index has no \"weight_map\" object");
    // Shard files, each a plain name in the index's directory (no paths: an index must not
    // reach elsewhere on the disk).
    std::map<std::string, std::vector<std::string>> by_shard;
    for (const auto& [tensor, shard] : index["weight_map"].items()) {
      if (!shard.is_string()) fail(ErrorCode::format, name, "weight_map value of {} is not a file name", quote(tensor));
      const std::string file = shard.get<std::string>();
      if (!plain_file_name(file))
        fail(ErrorCode::format, name, "weight_map names shard {}, not a file beside the index", quote(file));
      by_shard[file].push_back(tensor);
    }
    const auto dir = path.parent_path();
    // What ckpt recorded of each shard when it wrote the index: every shard must be that one.
    const Metadata* recorded = nullptr;
    if (index.contains("metadata") && index["metadata"].is_object() && index["metadata"].contains(kShardsKey)) {
      recorded = &index["metadata"][std::string(kShardsKey)];
      if (!recorded->is_object()) fail(ErrorCode::format, name, "index metadata {} is not an object", quote(kShardsKey));
    }
    bool all_metadata = true;
    for (const auto& [file, tensors] : by_shard) {
      const auto shard_source = detail::ByteSource::open_file(dir / file);
      if (recorded) check_recorded_shard(*recorded, file, *shard_source);
      auto shard = detail::safetensors::open_reader(shard_source, options);
      std::map<std::string, std::size_t> in_shard;
      for (std::size_t i = 0; i < shard->infos_.size(); ++i) in_shard.emplace(shard->infos_[i].name, i);
      for (const auto& t : tensors)
        if (!in_shard.count(t) && !has_extra(*shard, t))
          fail(ErrorCode::format, name, "weight_map puts {} in {}, which does not hold it", quote(t), quote(file));
      for (std::size_t i = 0; i < shard->infos_.size(); ++i) {
        infos_.push_back(shard->infos_[i]);
        checksums_.push_back(i < shard->checksums_.size() ? shard->checksums_[i] : std::nullopt);
        where_.emplace_back(shards_.size(), i);
      }
      all_metadata = all_metadata && shard->role_source_ == RoleSource::metadata;
      if (shards_.empty()) metadata_ = shard->metadata_;
      shards_.push_back(std::move(shard));
    }
    role_source_ = all_metadata && !shards_.empty() ? RoleSource::metadata : RoleSource::heuristic;
    if (index.contains("metadata") && index["metadata"].is_object())
      for (const auto& [k, v] : index["metadata"].items())
        if (k != "total_size" && k != kShardsKey && !metadata_.contains(k)) metadata_[k] = v;
    finish_listing();
  }


  // The shard's own location of the tensor.
  detail::Location locate(std::size_t index) override {
    const auto [shard, i] = where_[index];
    return shards_[shard]->locate(i);
  }

 private:
  // The shard's size and the checksum of its header (names, places and checksums of its tensors)
  // must be what the index recorded: a shard from another checkpoint with the same file name
  // (a mix of two sets) is refused, whatever its data.
  void check_recorded_shard(const Metadata& recorded, const std::string& file, const detail::ByteSource& shard) const {
    const auto it = recorded.find(file);
    if (it == recorded.end() || !it->is_object() || !it->contains("size") || !(*it)["size"].is_number_unsigned() ||
        !it->contains("header") || !(*it)["header"].is_string())
      fail(ErrorCode::format, name_, "index metadata {} has no size and header checksum for shard {}", quote(kShardsKey),
           quote(file));
    const auto size = (*it)["size"].get<std::uint64_t>();
    std::uint64_t expected = 0;
    if (detail::parse_checksum((*it)["header"].get<std::string>(), expected) != detail::ChecksumText::xxh3_64)
      fail(ErrorCode::format, name_, "index metadata {}: header checksum of shard {} is not xxh3-64", quote(kShardsKey),
           quote(file));
    const auto mismatch = [&](const std::string& what) {
      fail(ErrorCode::integrity, name_, "shard {} is not the one this index was written with ({}): a mix of two checkpoints?",
           quote(file), what);
    };
    if (shard.size() != size) mismatch(fmt::format("{} bytes, recorded {}", shard.size(), size));
    std::byte length[8];
    if (size < 8) mismatch("too short");
    (void)shard.read(0, length);
    const std::uint64_t n = detail::load_le<std::uint64_t>(length);
    if (n > size - 8) mismatch("its header runs past its end");
    if (n > options_.max_header_bytes)
      fail(ErrorCode::format, name_, "shard {} has a header of {} bytes, over the limit of {}", quote(file), n,
           options_.max_header_bytes);
    std::vector<std::byte> header(8 + n);
    (void)shard.read(0, header);
    if (detail::xxh3_64(header) != expected) mismatch("its header's checksum differs");
  }

  // Extra-section tensors are named "section/name" in safetensors files (conventions §2).
  static bool has_extra(const detail::FormatReader& shard, const std::string& key) {
    for (const auto& t : shard.infos_)
      if (t.role == Role::extra && t.section + "/" + t.name == key) return true;
    return false;
  }

  std::vector<std::unique_ptr<detail::FormatReader>> shards_;
  std::vector<std::pair<std::size_t, std::size_t>> where_;  // parallel to infos_
};

}  // namespace

namespace detail::safetensors {

std::unique_ptr<FormatReader> open_index_reader(std::shared_ptr<const ByteSource> source, const ReadOptions& options) {
  // A writer replacing the checkpoint removes the old shards once the new index is in place: a
  // reader that opened the old index just before may then miss a shard. If the path names another
  // index by then, that one is read instead (a few times at most).
  for (int attempt = 0;; ++attempt) {
    try {
      return std::make_unique<ShardedReader>(source, options);
    } catch (const Error& e) {
      if (e.code() != ErrorCode::io || attempt == 4 || !source->is_file()) throw;
      struct stat now {}, opened {};
      if (::stat(source->path().c_str(), &now) != 0 || ::fstat(source->fd(), &opened) != 0 ||
          (now.st_dev == opened.st_dev && now.st_ino == opened.st_ino))
        throw;
      source = ByteSource::open_file(source->path());
    }
  }
}

}  // namespace detail::safetensors

void write_safetensors_sharded(Source& source, const std::filesystem::path& path, const WriteOptions& options) {
  // NAME from NAME.safetensors or NAME.safetensors.index.json.
  std::string file = path.filename().string();
  for (const char* suffix : {".index.json", ".safetensors"})
    if (file.size() > std::strlen(suffix) && file.ends_with(suffix)) file.resize(file.size() - std::strlen(suffix));
  const auto dir = path.parent_path();
  const std::uint64_t max = options.max_shard_bytes ? options.max_shard_bytes : 5000000000ull;  // huggingface's 5GB
  std::vector<std::vector<std::size_t>> shards;
  std::uint64_t in_shard = 0, total = 0;
  for (const std::size_t i : detail::safetensors::kept_tensors(source, options, path.string())) {
    const std::uint64_t bytes = source.tensors()[i].nbytes();
    if (shards.empty() || (in_shard > 0 && in_shard + bytes > max)) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(i);
    in_shard += bytes;
    total += bytes;
  }
  WriteOptions shard_options = options;
  shard_options.max_shard_bytes = 0;
  shard_options.notice = nullptr;  // what is left out was said above
  // NAME.safetensors whose tensors fit in one shard is one file, as huggingface writes it; an
  // index asked for by name is always written.
  if (shards.size() <= 1 && !path.filename().string().ends_with(".index.json")) {
    write_safetensors(source, dir / (file + ".safetensors"), shard_options);
    return;
  }
  const auto index_path = dir / (file + ".safetensors.index.json");
  const DirectoryLock lock(dir, index_path.string());
  if (!options.overwrite && std::filesystem::exists(index_path))
    fail(ErrorCode::io, index_path.string(), "already exists; use --force to replace it");
  // At every moment the index names one complete set of shards, the old or the new: the new
  // shards get names no file has (the old set keeps its own), the index is renamed over the old
  // one last, and only then are the old shards removed. Shards that the index does not name and
  // that no writer holds (a writer holds its shards' locks until its index is in place) are what
  // a killed writer left: they are removed first. An index that does not read as one names
  // nothing that may be deleted.
  const std::optional<std::set<std::string>> old_set = shards_named_by(index_path);
  if (old_set) remove_orphan_shards(dir, file, *old_set);
  std::vector<std::string> names(shards.size());
  bool taken = false;
  for (std::size_t s = 0; s < shards.size(); ++s) {
    names[s] = fmt::format("{}-{:05d}-of-{:05d}.safetensors", file, s + 1, shards.size());
    std::error_code ec;
    taken = taken || std::filesystem::exists(std::filesystem::symlink_status(dir / names[s], ec));
  }
  if (taken) {
    const std::string tag = random_tag();
    for (std::size_t s = 0; s < shards.size(); ++s)
      names[s] = fmt::format("{}-{:05d}-of-{:05d}-{}.safetensors", file, s + 1, shards.size(), tag);
  }
  Metadata weight_map = Metadata::object();
  Metadata recorded = Metadata::object();
  std::vector<std::unique_ptr<detail::AtomicFile>> written;  // committed, locked until the end
  std::uint64_t done_before = 0;
  try {
    for (std::size_t s = 0; s < shards.size(); ++s) {
      detail::Subset subset(source, shards[s]);
      WriteOptions o = shard_options;
      if (options.progress) o.progress = [&, done_before](std::uint64_t done, std::uint64_t) { options.progress(done_before + done, total); };
      auto out = std::make_unique<detail::AtomicFile>(dir / names[s], false);
      const std::uint64_t header_hash = detail::safetensors::write_into(subset, *out, o, (dir / names[s]).string());
      const auto size = static_cast<std::uint64_t>(::lseek(out->fd(), 0, SEEK_END));
      out->commit();
      written.push_back(std::move(out));
      recorded[names[s]] = {{"size", size}, {"header", detail::format_checksum(header_hash)}};
      for (const auto& info : subset.tensors()) {
        weight_map[info.role == Role::extra ? info.section + "/" + info.name : info.name] = names[s];
        done_before += info.nbytes();
      }
    }
    const Metadata index = {{"metadata", {{"total_size", total}, {std::string(kShardsKey), recorded}}},
                            {"weight_map", weight_map}};
    const std::string text = index.dump(2) + "\n";
    detail::AtomicFile out(index_path, options.overwrite);
    out.write(std::as_bytes(std::span(text)));
    out.commit();
  } catch (...) {
    // Only the new shards: their names were free, they replaced nothing.
    for (const auto& f : written) ::unlink(f->target().c_str());
    throw;
  }
  // The new index is in place: the old shards it no longer names go (only files named as shards
  // of this checkpoint: an index may name anything).
  if (old_set)
    for (const auto& old : *old_set)
      if (shard_file_of(old, file) && std::find(names.begin(), names.end(), old) == names.end())
        ::unlink((dir / old).c_str());
}

}  // namespace ckpt

// Sharded safetensors (huggingface's model.safetensors.index.json + model-0000i-of-0000N
// shards): one Reader over all shards, and a writer that splits a Source into shards.
#include <algorithm>
#include <charconv>
#include <cstring>
#include <fstream>
#include <map>

#include <nlohmann/json.hpp>

#include "ckpt/safetensors.h"
#include "core/format_reader.h"
#include "core/subset.h"
#include "safetensors/format.h"
#include "safetensors/dtypes.h"
#include "util/atomic_file.h"
#include "util/bytes.h"
#include "util/json_strict.h"

namespace ckpt {
namespace {

using detail::fail;
using detail::quote;

constexpr std::uint64_t kMaxIndexBytes = 256u << 20;

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
      if (file.empty() || file.find('/') != std::string::npos || file.find('\\') != std::string::npos || file == "." ||
          file == "..")
        fail(ErrorCode::format, name, "weight_map names shard {}, not a file beside the index", quote(file));
      by_shard[file].push_back(tensor);
    }
    const auto dir = path.parent_path();
    bool all_metadata = true;
    for (const auto& [file, tensors] : by_shard) {
      auto shard = detail::safetensors::open_reader(detail::ByteSource::open_file(dir / file), options);
      std::map<std::string, std::size_t> in_shard;
      for (std::size_t i = 0; i < shard->infos_.size(); ++i) in_shard.emplace(shard->infos_[i].name, i);
      for (const auto& t : tensors)
        if (!in_shard.count(t) && !has_extra(*shard, t))
          fail(ErrorCode::format, name, "weight_map puts {} in {}, which does not hold it", quote(t), quote(file));
      for (std::size_t i = 0; i < shard->infos_.size(); ++i) {
        infos_.push_back(shard->infos_[i]);
        where_.emplace_back(shards_.size(), i);
      }
      all_metadata = all_metadata && shard->role_source_ == RoleSource::metadata;
      if (shards_.empty()) metadata_ = shard->metadata_;
      shards_.push_back(std::move(shard));
    }
    role_source_ = all_metadata && !shards_.empty() ? RoleSource::metadata : RoleSource::heuristic;
    if (index.contains("metadata") && index["metadata"].is_object())
      for (const auto& [k, v] : index["metadata"].items())
        if (k != "total_size" && !metadata_.contains(k)) metadata_[k] = v;
    finish_listing();
  }


  // The shard's own location of the tensor.
  detail::Location locate(std::size_t index) override {
    const auto [shard, i] = where_[index];
    return shards_[shard]->locate(i);
  }

 private:
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
  return std::make_unique<ShardedReader>(std::move(source), options);
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
  if (shards.size() <= 1) {
    write_safetensors(source, dir / (file + ".safetensors"), shard_options);
    return;
  }
  const auto index_path = dir / (file + ".safetensors.index.json");
  if (!options.overwrite && std::filesystem::exists(index_path))
    fail(ErrorCode::io, index_path.string(), "already exists; use --force to replace it");
  Metadata weight_map = Metadata::object();
  std::vector<std::filesystem::path> written;
  std::uint64_t done_before = 0;
  try {
    for (std::size_t s = 0; s < shards.size(); ++s) {
      const std::string shard_name = fmt::format("{}-{:05d}-of-{:05d}.safetensors", file, s + 1, shards.size());
      detail::Subset subset(source, shards[s]);
      WriteOptions o = shard_options;
      if (options.progress) o.progress = [&, done_before](std::uint64_t done, std::uint64_t) { options.progress(done_before + done, total); };
      write_safetensors(subset, dir / shard_name, o);
      written.push_back(dir / shard_name);
      for (const auto& info : subset.tensors()) {
        weight_map[info.role == Role::extra ? info.section + "/" + info.name : info.name] = shard_name;
        done_before += info.nbytes();
      }
    }
    const Metadata index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    const std::string text = index.dump(2) + "\n";
    detail::AtomicFile out(index_path, options.overwrite);
    out.write(std::as_bytes(std::span(text)));
    out.commit();
  } catch (...) {
    std::error_code ec;
    for (const auto& p : written) std::filesystem::remove(p, ec);
    throw;
  }
}

}  // namespace ckpt

// safetensors writer: JSON header (space-padded to a multiple of 8 bytes, as the reference
// writer does), then each tensor's bytes streamed from the source, through an atomic file.
#include <set>

#include <nlohmann/json.hpp>

#include "ckpt/safetensors.h"
#include "core/subset.h"
#include "safetensors/dtypes.h"
#include "safetensors/format.h"
#include "util/atomic_file.h"
#include "util/bytes.h"
#include "util/checksum.h"

namespace ckpt {
namespace {

using detail::fail;
using detail::quote;
using json = nlohmann::ordered_json;
namespace st = detail::safetensors;

// The name a tensor has in the file: model keys as they are, extra sections as "section/name".
std::string file_name(const TensorInfo& info) {
  return info.role == Role::extra ? info.section + "/" + info.name : info.name;
}

}  // namespace

namespace detail::safetensors {

std::vector<std::size_t> kept_tensors(const Source& source, const WriteOptions& options, const std::string& file) {
  std::vector<std::size_t> kept;
  std::vector<std::string> left_out;
  for (std::size_t i = 0; i < source.tensors().size(); ++i) {
    const TensorInfo& info = source.tensors()[i];
    if (info.role == Role::buffer && !info.persistent) left_out.push_back(quote(info.name));
    else kept.push_back(i);
  }
  if (!left_out.empty() && options.notice)
    options.notice(fmt::format("{}: {} non-persistent buffer{} left out, as a state_dict leaves them out: {}", file,
                               left_out.size(), left_out.size() == 1 ? "" : "s", fmt::join(left_out, ", ")));
  return kept;
}

}  // namespace detail::safetensors

namespace detail::safetensors {

std::uint64_t write_into(Source& source, AtomicFile& file, const WriteOptions& options, const std::string& name) {
  const auto& infos = source.tensors();
  // Everything that could make the file unfaithful is refused before any byte is written.
  std::set<std::string> used;
  json buffers = json::object(), extra = json::object();
  for (const auto& info : infos) {
    if (!st::dtype_code(info.dtype))
      fail(ErrorCode::unsupported, name, "safetensors cannot hold dtype {} (tensor {})", dtype_name(info.dtype),
           quote(info.name));
    const std::string stored = file_name(info);
    if (stored == st::kMetadataKey)
      fail(ErrorCode::unsupported, name, "a tensor cannot be named {} in safetensors", quote(stored));
    if (!used.insert(stored).second)
      fail(ErrorCode::unsupported, name, "two tensors would both be stored as {} in safetensors", quote(stored));
    if (info.role == Role::buffer)
      buffers[stored] = {{"collection", info.collection.empty() ? std::string(kDefaultBufferCollection) : info.collection},
                         {"persistent", info.persistent}};
    else if (info.role == Role::extra)
      extra[stored] = {{"section", info.section}, {"name", info.name}};
  }

  json file_metadata = json::object();
  // Plain string metadata stays visible to tools that know nothing of ckpt ("format": "pt").
  for (auto it = source.metadata().begin(); it != source.metadata().end(); ++it)
    if (it.value().is_string() && it.key().rfind("ckpt.", 0) != 0) file_metadata[it.key()] = it.value();
  if (!source.metadata().empty()) file_metadata[std::string(st::kCkptMetadataKey)] = source.metadata().dump();
  json roles = {{"version", st::kRolesVersion}, {"buffers", buffers}};
  if (!extra.empty()) roles["extra"] = extra;
  file_metadata[std::string(st::kRolesKey)] = roles.dump();

  // The checksums are known only once the data is written, after the header: the header is
  // written with placeholders of the same width, and again at the end with the values.
  std::vector<std::uint64_t> checksums(options.checksums ? infos.size() : 0, 0);
  // Objects are built by appending to nlohmann's ordered map (names are unique, checked above):
  // its operator[] searches linearly, quadratic in the tensor count.
  auto append = [](json& object, std::string key, json value) {
    auto& map = object.get_ref<json::object_t&>();
    static_cast<json::object_t::Container&>(map).emplace_back(std::move(key), std::move(value));
  };
  auto header_text = [&] {
    json header = json::object();
    header.get_ref<json::object_t&>().reserve(infos.size() + 1);
    json metadata = file_metadata;
    if (options.checksums) {  // "xxh3-64:" and 16 hex digits per tensor, in data order
      std::string sums = "xxh3-64:";
      sums.reserve(sums.size() + 16 * infos.size());
      for (const auto h : checksums) fmt::format_to(std::back_inserter(sums), "{:016x}", h);
      metadata[std::string(st::kChecksumsKey)] = std::move(sums);
    }
    append(header, std::string(st::kMetadataKey), std::move(metadata));
    std::uint64_t offset = 0;
    for (const auto& info : infos) {
      const std::uint64_t nbytes = info.nbytes();
      append(header, file_name(info),
             {{"dtype", *st::dtype_code(info.dtype)}, {"shape", info.shape}, {"data_offsets", {offset, offset + nbytes}}});
      offset += nbytes;
    }
    std::string text(8, '\0');
    text += header.dump();
    text.append((8 - text.size() % 8) % 8, ' ');
    detail::store_le<std::uint64_t>(reinterpret_cast<std::byte*>(text.data()), text.size() - 8);
    return text;
  };
  std::uint64_t total = 0;
  for (const auto& info : infos) total += info.nbytes();

  std::string text = header_text();
  file.write(std::as_bytes(std::span(text)));
  std::uint64_t done = 0;
  for (std::size_t i = 0; i < infos.size(); ++i) {
    const Tensor tensor = source.read_checked(i, name);
    file.write(tensor.bytes(), source.file_span(i));
    if (options.checksums) checksums[i] = detail::xxh3_64(tensor.bytes());
    done += tensor.nbytes();
    if (options.progress) options.progress(done, total);
  }
  if (options.checksums) {
    const std::string final_text = header_text();
    if (final_text.size() != text.size()) fail(ErrorCode::io, name, "internal error: the header changed its size");
    detail::write_at(file.fd(), 0, std::as_bytes(std::span(final_text)), std::nullopt, name);
    text = final_text;
  }
  return detail::xxh3_64(std::as_bytes(std::span(text)));
}

}  // namespace detail::safetensors

void write_safetensors(Source& all, const std::filesystem::path& path, const WriteOptions& options) {
  const std::string name = path.string();
  detail::Subset source(all, st::kept_tensors(all, options, name));
  detail::AtomicFile file(path, options.overwrite);
  st::write_into(source, file, options, name);
  file.commit();
}

}  // namespace ckpt

// safetensors and huggingface's sharded safetensors in the format registry.
#include "ckpt/safetensors.h"
#include "safetensors/format.h"
#include "util/bytes.h"

namespace ckpt {
namespace {

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

}  // namespace

namespace detail {

FormatHandler safetensors_format() {
  return {"safetensors", "huggingface safetensors; roles kept in __metadata__ (format-spec/conventions.md)",
          {".safetensors"}, sniff_safetensors, safetensors::open_reader, write_safetensors_any, {}, true};
}

FormatHandler safetensors_sharded_format() {
  return {"safetensors-sharded", "huggingface sharded safetensors: NAME.safetensors.index.json and its shards",
          {".safetensors.index.json"}, sniff_safetensors_index, safetensors::open_index_reader,
          write_safetensors_sharded, {}, true};
}

}  // namespace detail

std::unique_ptr<Reader> open_safetensors(const std::filesystem::path& path, const ReadOptions& options) {
  return detail::make_reader(detail::safetensors::open_reader(detail::ByteSource::open_file(path), options));
}

std::unique_ptr<Reader> open_safetensors_index(const std::filesystem::path& index_path, const ReadOptions& options) {
  return detail::make_reader(detail::safetensors::open_index_reader(detail::ByteSource::open_file(index_path), options));
}

}  // namespace ckpt

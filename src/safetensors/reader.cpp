// safetensors reader: every check the reference implementation makes (header size cap, UTF-8
// JSON, duplicate names, offsets contiguous and in bounds, sizes equal dtype x shape, buffer
// length equal to the last offset); each tensor is one range of the data buffer.

#include <algorithm>
#include <map>
#include <set>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "ckpt/roles.h"
#include "core/format_reader.h"
#include "safetensors/dtypes.h"
#include "safetensors/format.h"
#include "safetensors/header.h"
#include "util/json_get.h"
#include "util/json_strict.h"
#include "util/bytes.h"
#include "util/checksum.h"

namespace ckpt {
namespace {

using detail::fail;
using detail::quote;
using json = nlohmann::json;
namespace st = detail::safetensors;

class SafetensorsReader final : public detail::FormatReader {
 public:
  SafetensorsReader(std::shared_ptr<const detail::ByteSource> source, const ReadOptions& options)
      : FormatReader(std::move(source), options) {
    format_ = "safetensors";
    const auto bytes = source_->bytes();
    if (bytes.size() < 8)
      fail(ErrorCode::format, name_, "file is {} bytes, too short for the 8-byte header length", bytes.size());
    const auto header_len = detail::load_le<std::uint64_t>(bytes.data());
    if (header_len > options_.max_header_bytes)
      fail(ErrorCode::format, name_, "header length {} at offset 0 exceeds the limit of {} bytes", header_len,
           options_.max_header_bytes);
    if (header_len > bytes.size() - 8)
      fail(ErrorCode::format, name_, "header length {} at offset 0 extends past the end of the file ({} bytes)",
           header_len, bytes.size());
    data_start_ = 8 + header_len;
    parse_header(std::string_view(reinterpret_cast<const char*>(bytes.data()) + 8, header_len));
    finish_listing();
  }

  // One range of the data buffer, little-endian, row-major.
  detail::Location locate(std::size_t index) override {
    detail::Location l = location(index);
    l.extents = {{data_start_ + begins_[index], infos_[index].nbytes()}};
    return l;
  }

 private:
  struct Parsed {
    TensorInfo info;  // info.name: the name in the file (apply_roles may rename extra tensors)
    std::uint64_t begin = 0, end = 0;
  };

  void parse_header(std::string_view text) {
    st::Header header;
    if (const std::string error = st::parse_header(text, header); !error.empty())
      fail(ErrorCode::format, name_, "header (offset 8, {} bytes) {}", text.size(), error);
    if (!header.is_object) fail(ErrorCode::format, name_, "header is not a JSON object");
    if (!header.metadata_error.empty()) fail(ErrorCode::format, name_, "{}", header.metadata_error);

    std::vector<Parsed> tensors;
    tensors.reserve(header.entries.size());
    for (auto& entry : header.entries) tensors.push_back(parse_tensor(entry));
    // Data must be one gap-free run: sorted by offset, each tensor starts where the last ended
    // (empty tensors at one offset in name order).
    std::sort(tensors.begin(), tensors.end(), [](const Parsed& a, const Parsed& b) {
      return a.begin != b.begin ? a.begin < b.begin : a.end != b.end ? a.end < b.end : a.info.name < b.info.name;
    });
    std::uint64_t expected = 0;
    for (const auto& t : tensors) {
      if (t.begin != expected)
        fail(ErrorCode::format, name_, "tensor {}: data_offsets [{}, {}] {} (expected to start at {})",
             quote(t.info.name), t.begin, t.end, t.begin < expected ? "overlap the previous tensor" : "leave a gap",
             expected);
      expected = t.end;
    }
    const std::uint64_t buffer = source_->size() - data_start_;
    if (expected != buffer)
      fail(ErrorCode::format, name_, "data buffer (offset {}) is {} bytes but the tensors cover {} bytes: {}",
           data_start_, buffer, expected, expected > buffer ? "file is truncated" : "trailing bytes after the data");
    // Checksums first: they are keyed by the names in the file, which apply_roles may change.
    apply_checksums(tensors, header.has_metadata ? header.metadata : json::object());
    apply_roles(tensors, header.has_metadata ? header.metadata : json::object());
    begins_.reserve(tensors.size());
    infos_.reserve(tensors.size());
    for (auto& t : tensors) {
      begins_.push_back(t.begin);
      infos_.push_back(std::move(t.info));
    }
  }

  // format-spec/conventions.md §2: "ckpt.checksums", per-tensor XXH3-64 that ckpt writes:
  // "xxh3-64:" and 16 hex digits per tensor, in data-offset order (the order of `tensors`). A plain
  // string: 40,000 tensors' checksums as a JSON object cost 100 ms to parse, this costs nothing.
  void apply_checksums(const std::vector<Parsed>& tensors, const json& file_metadata) {
    if (!file_metadata.contains(st::kChecksumsKey)) return;
    const std::string& text = file_metadata[st::kChecksumsKey].get_ref<const std::string&>();
    constexpr std::string_view kPrefix = "xxh3-64:";
    if (!text.starts_with(kPrefix) || text.size() != kPrefix.size() + 16 * tensors.size())
      fail(ErrorCode::format, name_, "__metadata__ {} is not \"xxh3-64:\" and 16 hex digits for each of the {} tensors",
           quote(st::kChecksumsKey), tensors.size());
    checksums_.reserve(tensors.size());
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      std::uint64_t value = 0;
      const char* digits = text.data() + kPrefix.size() + 16 * i;
      for (int k = 0; k < 16; ++k) {
        const char c = digits[k];
        const int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (v < 0)
          fail(ErrorCode::format, name_, "__metadata__ {}: the checksum of tensor {} is not 16 hex digits",
               quote(st::kChecksumsKey), quote(tensors[i].info.name));
        value = value << 4 | static_cast<std::uint64_t>(v);
      }
      checksums_.push_back(value);
    }
  }

  // A tensor entry as written, checked (safetensors' own checks, in its order).
  Parsed parse_tensor(st::HeaderEntry& entry) {
    const std::string& name = entry.name;
    auto bad = [&](const std::string& what) { fail(ErrorCode::format, name_, "tensor {}: {}", quote(name), what); };
    using Field = st::HeaderEntry::Field;
    if (!entry.is_object) bad("entry is not an object");
    if (entry.dtype != Field::present) bad("\"dtype\" must be a string");
    const auto dtype = st::dtype_from_code(entry.dtype_code);
    if (!dtype) fail(ErrorCode::unsupported, name_, "tensor {}: unknown dtype {}", quote(name), quote(entry.dtype_code));
    if (entry.shape != Field::present) bad("\"shape\" must be an array");
    if (entry.dims.size() > options_.max_rank)
      bad(fmt::format("rank {} exceeds the limit of {}", entry.dims.size(), options_.max_rank));
    Parsed p;
    p.info.dtype = *dtype;
    p.info.shape.reserve(entry.dims.size());
    for (const std::int64_t d : entry.dims) {
      if (d == st::HeaderEntry::kNotUnsigned) bad("\"shape\" must hold non-negative integers");
      if (d == st::HeaderEntry::kTooLarge) bad("dimension too large");
      p.info.shape.push_back(d);
    }
    if (entry.offsets != Field::present || entry.offset_count != 2 || !entry.offsets_unsigned)
      bad("\"data_offsets\" must be two non-negative integers");
    p.begin = entry.offset_values[0];
    p.end = entry.offset_values[1];
    if (p.end < p.begin) bad(fmt::format("data_offsets [{}, {}] end before they begin", p.begin, p.end));
    std::uint64_t nbytes = 0;
    try {
      nbytes = p.info.nbytes();
    } catch (const Error&) {
      bad(fmt::format("shape {} overflows", shape_to_string(p.info.shape)));
    }
    if (p.end - p.begin != nbytes)
      bad(fmt::format("data_offsets [{}, {}] do not match shape {} of {} ({} bytes)", p.begin, p.end,
                      shape_to_string(p.info.shape), entry.dtype_code, nbytes));
    p.info.name = std::move(entry.name);
    return p;
  }

  // format-spec/conventions.md §2: "ckpt.roles" lists buffers and extra-section tensors; without
  // it roles are inferred.
  void apply_roles(std::vector<Parsed>& tensors, const json& file_metadata) {
    if (file_metadata.contains(st::kCkptMetadataKey)) {
      if (const auto error = detail::parse_json_strict(file_metadata[st::kCkptMetadataKey].get<std::string>(), metadata_);
          !error.empty())
        fail(ErrorCode::format, name_, "__metadata__ {} {}", quote(st::kCkptMetadataKey), error);
      if (!metadata_.is_object()) fail(ErrorCode::format, name_, "__metadata__ {} is not a JSON object", quote(st::kCkptMetadataKey));
    } else {
      for (auto m = file_metadata.begin(); m != file_metadata.end(); ++m)
        if (m.key() != st::kRolesKey && m.key() != st::kChecksumsKey) metadata_[m.key()] = m.value();
    }
    if (!file_metadata.contains(st::kRolesKey)) {
      role_source_ = RoleSource::heuristic;
      const BufferRule is_buffer(options_.buffer_regex);
      for (auto& t : tensors)
        if (is_buffer(t.info.name, t.info.dtype)) {
          t.info.role = Role::buffer;
          t.info.collection = std::string(kDefaultBufferCollection);
        }
      return;
    }
    role_source_ = RoleSource::metadata;
    json roles;
    if (const auto error = detail::parse_json_strict(file_metadata[st::kRolesKey].get<std::string>(), roles); !error.empty())
      fail(ErrorCode::format, name_, "__metadata__ {} {}", quote(st::kRolesKey), error);
    auto bad = [&](const std::string& what) {
      fail(ErrorCode::format, name_, "__metadata__ {}: {}", quote(st::kRolesKey), what);
    };
    if (!roles.is_object()) bad("not a JSON object");
    if (roles.contains("version") && !roles["version"].is_number_unsigned()) bad("\"version\" is not a number");
    if (detail::json_uint(roles, "version", 0) > st::kRolesVersion)
      fail(ErrorCode::unsupported, name_, "__metadata__ {} version {} is newer than this reader ({})",
           quote(st::kRolesKey), roles["version"].dump(), st::kRolesVersion);
    const json buffers = roles.value("buffers", json::object());
    const json extra = roles.value("extra", json::object());
    if (!buffers.is_object() || !extra.is_object()) bad("\"buffers\" and \"extra\" must be objects");
    std::unordered_set<std::string_view> names;  // (no tensor is renamed before the loop below)
    names.reserve(tensors.size());
    for (const auto& t : tensors) names.insert(t.info.name);
    for (auto it = buffers.begin(); it != buffers.end(); ++it)
      if (!names.count(it.key())) bad(fmt::format("lists buffer {} that is not in the file", quote(it.key())));
    for (auto it = extra.begin(); it != extra.end(); ++it)
      if (!names.count(it.key())) bad(fmt::format("lists tensor {} that is not in the file", quote(it.key())));
    for (auto& t : tensors) {
      if (auto b = buffers.find(t.info.name); b != buffers.end()) {
        if (!b->is_object()) bad(fmt::format("entry of {} is not an object", quote(t.info.name)));
        t.info.role = Role::buffer;
        const json collection = b->value("collection", json(std::string(kDefaultBufferCollection)));
        const json persistent = b->value("persistent", json(true));
        if (!collection.is_string() || !persistent.is_boolean())
          bad(fmt::format("entry of {} needs a string collection and a boolean persistent", quote(t.info.name)));
        t.info.collection = collection.get<std::string>();
        t.info.persistent = persistent.get<bool>();
      } else if (auto x = extra.find(t.info.name); x != extra.end()) {
        if (!x->is_object() || !x->contains("section") || !(*x)["section"].is_string() || !x->contains("name") ||
            !(*x)["name"].is_string())
          bad(fmt::format("entry of {} needs string \"section\" and \"name\"", quote(t.info.name)));
        t.info.role = Role::extra;
        t.info.section = (*x)["section"].get<std::string>();
        if (t.info.section.empty() || t.info.section == kParametersSection || t.info.section == kBuffersSection)
          bad(fmt::format("entry of {} names a reserved section", quote(t.info.name)));
        t.info.name = (*x)["name"].get<std::string>();  // last: the name in the file, until here
      }
    }
  }

  std::uint64_t data_start_ = 0;
  std::vector<std::uint64_t> begins_;  // parallel to infos_
};

}  // namespace

namespace detail::safetensors {

std::unique_ptr<FormatReader> open_reader(std::shared_ptr<const ByteSource> source, const ReadOptions& options) {
  return std::make_unique<SafetensorsReader>(std::move(source), options);
}

}  // namespace detail::safetensors
}  // namespace ckpt

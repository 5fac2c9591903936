// NumPy reader: .npy (one array) and .npz (zip of .npy entries, stored or deflated). An array is
// one range of the file (stored entries), or of its inflated entry, in C or Fortran order, either
// byte order.
#include <cstring>
#include <optional>

#include <nlohmann/json.hpp>

#include "ckpt/numpy.h"
#include "ckpt/roles.h"
#include "numpy/npy.h"
#include "numpy/format.h"
#include "core/format_reader.h"
#include "util/json_get.h"
#include "util/bytes.h"
#include "util/json_strict.h"
#include "zip/zip.h"

namespace ckpt {
namespace {

using detail::fail;
using detail::quote;
namespace npy = detail::npy;

constexpr std::size_t kMaxHeader = 1 << 20;  // a .npy preamble larger than this is refused

struct Array {
  const detail::zip::Entry* entry = nullptr;  // .npz; nullptr for a .npy file
  npy::Header header;
};

class NumpyReader final : public detail::FormatReader {
 public:
  NumpyReader(std::shared_ptr<const detail::ByteSource> source, const ReadOptions& options)
      : FormatReader(std::move(source), options) {
    format_ = "numpy";
    const auto bytes = source_->bytes();
    const BufferRule is_buffer(options_.buffer_regex);
    bool any_comment = false;
    if (bytes.size() >= 6 && std::memcmp(bytes.data(), "\x93NUMPY", 6) == 0) {
      Array a;
      a.header = npy::parse_header(bytes, name_, options_.max_rank);
      TensorInfo info;
      info.name = source_->is_file() ? source_->path().stem().string() : std::string("array");
      add(std::move(info), a, name_, bytes.size(), std::nullopt);
    } else {
      archive_ = std::make_unique<detail::zip::Archive>(bytes, name_);
      for (const auto& e : archive_->entries()) {
        if (!e.name.ends_with(".npy")) {  // not an array; its local header still agrees (a flipped name)
          (void)archive_->data_offset(e);
          continue;
        }
        const std::string where = name_ + ": " + e.name;
        Array a;
        a.entry = &e;
        // The preamble first (magic, version, header length), then just the header: touching
        // more of each entry would fault in (and count as resident) pages of every array.
        const std::uint64_t header_bytes = npy::header_end(archive_->read_prefix(e, 12)).value_or(12);
        if (header_bytes > kMaxHeader)
          fail(ErrorCode::format, where, "npy header of {} bytes is over the {} byte limit", header_bytes, kMaxHeader);
        a.header = npy::parse_header(archive_->read_prefix(e, static_cast<std::size_t>(header_bytes)), where,
                                     options_.max_rank);
        TensorInfo info;
        info.name = e.name.substr(0, e.name.size() - 4);
        std::optional<DType> dtype;
        if (!e.comment.empty() && apply_comment(info, dtype, e, where)) any_comment = true;
        add(std::move(info), a, where, e.size, dtype);
      }
      if (!archive_->comment().empty()) apply_archive_comment();
    }
    role_source_ = any_comment ? RoleSource::metadata : RoleSource::heuristic;
    if (!any_comment)
      for (auto& info : infos_)
        if (is_buffer(info.name, info.dtype)) {
          info.role = Role::buffer;
          info.collection = std::string(kDefaultBufferCollection);
        }
    finish_listing();
  }

  // The array's data: a range of the file, or of its inflated entry, in numpy's layout.
  detail::Location locate(std::size_t index) override {
    const Array& a = arrays_[index];
    const npy::Header& h = a.header;
    detail::Location l = location(index);
    if (!a.entry || a.entry->method == 0) {
      const std::uint64_t start = a.entry ? archive_->data_offset(*a.entry) : 0;
      l.extents = {{start, a.entry ? a.entry->size : source_->size()}};
      if (a.entry) l.crc = archive_->crc_check(*a.entry);
    } else {
      const detail::zip::Entry* entry = a.entry;
      const detail::zip::Archive* archive = archive_.get();
      l.decoded = [archive, entry](std::uint64_t skip, std::span<std::byte> out) { archive->read_range(*entry, skip, out); };
      l.decoded_size = entry->size;
      l.crc = archive_->crc_check(*entry);
    }
    l.first = h.data_offset;
    l.big_endian = h.big_endian;
    if (h.fortran_order) {  // column-major: element (i0, i1, ...) at i0 + d0 * (i1 + d1 * ...)
      l.strides.resize(l.shape.size());
      std::uint64_t stride = 1;
      for (std::size_t k = 0; k < l.shape.size(); ++k) {
        l.strides[k] = stride;
        stride *= std::max<std::uint64_t>(static_cast<std::uint64_t>(l.shape[k]), 1);
      }
    }
    return l;
  }

 private:
  // Records an array after checking that its data fits in the `available` bytes of its .npy.
  // `dtype`: the dtype ckpt's comment names (bfloat16 stored as uint16 bits ...).
  void add(TensorInfo info, const Array& a, const std::string& where, std::uint64_t available,
           std::optional<DType> dtype) {
    info.dtype = dtype.value_or(a.header.dtype);
    info.shape = a.header.shape;
    std::uint64_t nbytes = 0;
    try {
      nbytes = shape_numel(info.shape) * dtype_size(a.header.dtype);
      (void)TensorInfo{info}.nbytes();
    } catch (const Error&) {
      fail(ErrorCode::format, where, "npy shape {} overflows", shape_to_string(info.shape));
    }
    if (dtype_size(info.dtype) != dtype_size(a.header.dtype))
      fail(ErrorCode::format, where, "ckpt dtype {} does not match npy dtype {}", dtype_name(info.dtype),
           dtype_name(a.header.dtype));
    if (a.header.data_offset > available || nbytes > available - a.header.data_offset)
      fail(ErrorCode::format, where, "npy {} {} needs {} bytes, {} follow the header", dtype_name(a.header.dtype),
           shape_to_string(info.shape), nbytes, available - std::min(available, a.header.data_offset));
    infos_.push_back(std::move(info));
    arrays_.push_back(a);
  }

  // The entry's comment: {"role": ..., "section": ..., "collection": ..., "persistent": ...,
  // "dtype": ..., "name": ...} (format-spec/conventions.md §6).
  // Returns false for a comment that is not ckpt's.
  bool apply_comment(TensorInfo& info, std::optional<DType>& dtype, const detail::zip::Entry& e,
                     const std::string& where) {
    Metadata c;
    // A zip comment is free text: one that is not JSON is not ckpt's; JSON that is ambiguous or
    // too deep is refused.
    if (const auto error = detail::parse_json_strict(e.comment, c); !error.empty()) {
      if (error.starts_with("is not valid JSON")) return false;
      fail(ErrorCode::format, where, "entry comment {}", error);
    }
    if (!c.is_object() || detail::json_uint(c, "ckpt", 0) != 1) return false;  // someone else's comment
    const std::string role = detail::json_string(c, "role", "parameter");
    if (role == "buffer") {
      info.role = Role::buffer;
      info.collection = detail::json_string(c, "collection", std::string(kDefaultBufferCollection));
      info.persistent = detail::json_bool(c, "persistent", true);
    } else if (role == "extra") {
      info.role = Role::extra;
      info.section = detail::json_string(c, "section", "extra");
    }
    if (c.contains("name") && c["name"].is_string()) info.name = c["name"].get<std::string>();
    // The entry's name says the same (conventions §6): a comment whose name or section was
    // changed (a flipped bit: no CRC covers comments) is refused, not read under another name.
    const std::string stem = e.name.substr(0, e.name.size() - 4);
    const std::string expected = info.role == Role::extra ? info.section + "/" + info.name : info.name;
    if (expected != stem)
      fail(ErrorCode::format, where, "entry comment names tensor {}, but the entry is {}", quote(expected), quote(stem));
    if (c.contains("dtype") && c["dtype"].is_string()) {
      const auto d = dtype_from_name(c["dtype"].get<std::string>());
      if (!d) fail(ErrorCode::unsupported, where, "entry comment names dtype {}", quote(c["dtype"].get<std::string>()));
      dtype = *d;
    }
    return true;
  }

  void apply_archive_comment() {
    Metadata c;
    if (const auto error = detail::parse_json_strict(archive_->comment(), c); !error.empty()) {
      if (error.starts_with("is not valid JSON")) return;  // not ckpt's: a zip comment is free text
      fail(ErrorCode::format, name_, "archive comment {}", error);
    }
    if (detail::json_uint(c, "ckpt", 0) == 1 && c.contains("metadata") && c["metadata"].is_object())
      metadata_ = c["metadata"];
  }

  std::unique_ptr<detail::zip::Archive> archive_;
  std::vector<Array> arrays_;  // parallel to infos_
};

}  // namespace

namespace detail::numpy {

bool sniff(std::span<const std::byte> head, std::uint64_t) {
  if (head.size() >= 6 && std::memcmp(head.data(), "\x93NUMPY", 6) == 0) return true;
  if (head.size() < 30 || load_le<std::uint32_t>(head.data()) != 0x04034b50) return false;
  const auto name_len = load_le<std::uint16_t>(head.data() + 26);
  if (30u + name_len > head.size()) return false;
  return std::string_view(reinterpret_cast<const char*>(head.data()) + 30, name_len).ends_with(".npy");
}

std::unique_ptr<FormatReader> open_reader(std::shared_ptr<const ByteSource> source, const ReadOptions& options) {
  return std::make_unique<NumpyReader>(std::move(source), options);
}

}  // namespace detail::numpy
}  // namespace ckpt

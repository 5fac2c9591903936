// Boost archive files, reading: the archive is listed in one pass that steps over tensor data
// (within a budget of the file's size: no claim in the archive can make it allocate more than the
// file holds); each tensor is then a range of the file (binary archives) or base64 text decoded
// from where it starts (text and xml archives).
#include <algorithm>
#include <array>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <streambuf>

#include <fmt/format.h>

#include <boost/archive/archive_exception.hpp>
#include <boost/archive/binary_iarchive.hpp>
#include <boost/archive/iterators/dataflow_exception.hpp>
#include <boost/archive/text_iarchive.hpp>
#include <boost/archive/xml_iarchive.hpp>

#include "boost_archive/base64.h"
#include "boost_archive/format.h"
#include "ckpt/boost_archive.h"
#include "ckpt/boost_serialization.h"
#include "core/format_reader.h"
#include "util/bytes.h"
#include "util/checksum.h"

namespace ckpt {
namespace {

using detail::fail;

// Listing pass: the archive is loaded through stand-ins for StateDict and Tensor, saved-compatible
// with them (same class versions and levels, the same fields), which read every field except
// tensor data: DataSkipper steps over the data and says where it starts. Tensors are then
// read from there on demand (zero-copy from a mapping for binary archives; decoded from base64 for
// text and xml, base64.h), so opening costs one scan and never holds more than one tensor.
class DataSkipper {
 public:
  virtual ~DataSkipper() = default;
  // Steps over `nbytes` of tensor data at the stream's position; returns where the data starts.
  virtual std::uint64_t skip(std::uint64_t nbytes) = 0;

 protected:
  static std::uint64_t position(std::streambuf& in) {
    const auto at = in.pubseekoff(0, std::ios::cur, std::ios::in);
    if (at < 0) throw Error(ErrorCode::io, "", "Boost archive: cannot tell the read position");
    return static_cast<std::uint64_t>(at);
  }
};

struct SkippedData {  // archived like a binary_object: nothing but the data itself
  DataSkipper* skipper;
  std::uint64_t nbytes;
  std::uint64_t offset = 0;
};
struct TensorListing {
  DataSkipper* skipper;
  TensorInfo info;
  std::uint64_t offset = 0;
};
struct StateDictListing {
  DataSkipper* skipper;
  StateDict entries;  // the entries with empty tensors: StateDict::add normalizes and checks them
  std::vector<TensorListing> tensors;
};

}  // namespace
}  // namespace ckpt

BOOST_CLASS_IMPLEMENTATION(ckpt::SkippedData, boost::serialization::object_serializable)
BOOST_CLASS_TRACKING(ckpt::SkippedData, boost::serialization::track_never)
BOOST_CLASS_VERSION(ckpt::TensorListing, ckpt::detail::kBoostTensorVersion)
BOOST_CLASS_VERSION(ckpt::StateDictListing, ckpt::detail::kBoostStateDictVersion)

namespace boost::serialization {

template <class Archive>
void serialize(Archive& /*ar*/, ckpt::SkippedData& data, unsigned /*version*/) {
  data.offset = data.skipper->skip(data.nbytes);
}

template <class Archive>
void serialize(Archive& ar, ckpt::TensorListing& tensor, unsigned version) {
  if (version > ckpt::detail::kBoostTensorVersion)
    ckpt::detail::boost_version_error("Tensor", version, ckpt::detail::kBoostTensorVersion);
  if (version < 2) ckpt::detail::boost_refuse_v1("Tensor");
  tensor.info = ckpt::detail::load_tensor_header(ar);
  ckpt::SkippedData data{tensor.skipper, tensor.info.nbytes()};
  ar >> make_nvp("data", data);
  tensor.offset = data.offset;
}

template <class Archive>
void serialize(Archive& ar, ckpt::StateDictListing& state, unsigned version) {
  if (version > ckpt::detail::kBoostStateDictVersion)
    ckpt::detail::boost_version_error("StateDict", version, ckpt::detail::kBoostStateDictVersion);
  if (version < 2) ckpt::detail::boost_refuse_v1("StateDict");
  std::uint64_t count = 0;
  ar >> make_nvp("count", count);
  for (std::uint64_t i = 0; i < count; ++i) {  // each iteration reads from the archive or throws
    ckpt::EntryInfo info = ckpt::detail::load_entry_fields(ar);
    ckpt::TensorListing tensor{state.skipper, {}};
    ar >> make_nvp("tensor", tensor);
    state.entries.add(std::move(info), ckpt::Tensor());
    state.tensors.push_back(std::move(tensor));
  }
  state.entries.metadata() = ckpt::detail::parse_boost_metadata(ckpt::detail::load_string(ar, "metadata"));
}

}  // namespace boost::serialization

namespace ckpt {
namespace {

// Binary archives hold tensor data as raw bytes: step over them.
class BinarySkipper final : public DataSkipper {
 public:
  BinarySkipper(std::streambuf& in, std::uint64_t file_size) : in_(in), file_size_(file_size) {}
  std::uint64_t skip(std::uint64_t nbytes) override {
    const std::uint64_t offset = position(in_);
    if (nbytes > file_size_ - std::min(offset, file_size_))
      throw Error(ErrorCode::format, "",
                  fmt::format("Boost archive: tensor data of {} bytes at offset {} runs past the end of the file ({} bytes)",
                              nbytes, offset, file_size_));
    in_.pubseekpos(static_cast<std::streamoff>(offset + nbytes), std::ios::in);
    return offset;
  }

 private:
  std::streambuf& in_;
  std::uint64_t file_size_;
};

// Text and xml archives hold tensor data as base64 (boost/archive/impl/basic_text_iprimitive.ipp):
// ceil(8n/6) digits with whitespace (line breaks) between them ignored, then everything up to and
// including the next whitespace character (the '=' padding). The scan mirrors that exactly, in
// blocks, without decoding; the digits are checked when the tensor is decoded.
class Base64Skipper final : public DataSkipper {
 public:
  // Reads the source directly (not through `in`, which would copy every block once more), in
  // blocks of up to 1 MiB, no larger than the file (a fresh block costs page faults).
  Base64Skipper(std::streambuf& in, const detail::ByteSource& source)
      : in_(in), source_(source), block_(static_cast<std::size_t>(std::clamp<std::uint64_t>(source.size(), 1, 1u << 20))) {}
  std::uint64_t skip(std::uint64_t nbytes) override {
    const std::uint64_t offset = position(in_);
    if (nbytes == 0) return offset;  // Boost reads nothing for empty data
    std::uint64_t digits = (nbytes * 8 + 5) / 6, position = offset;
    bool padding = false;
    for (;;) {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(block_.size(), source_.size() - std::min(position, source_.size())));
      if (n == 0) {
        if (padding) break;  // Boost stops at the end of the file too
        throw Error(ErrorCode::format, "",
                    fmt::format("Boost archive: the file ends inside the base64 data of {} bytes that starts at offset {}",
                                nbytes, offset));
      }
      (void)source_.read(position, std::as_writable_bytes(std::span(block_.data(), n)));
      if (!padding && digits > n) {  // the digits go on past this block: count, do not look
        digits -= n - detail::boost_file::count_base64_spaces(std::span(block_.data(), n));
        position += n;
        continue;
      }
      std::size_t i = 0;
      for (; i < n && !padding; ++i)
        if (!detail::boost_file::is_base64_space(block_[i]) && --digits == 0) padding = true;
      bool done = false;
      for (; i < n && padding && !done; ++i) done = detail::boost_file::is_base64_space(block_[i]);
      position += i;
      if (done) break;
    }
    in_.pubseekpos(static_cast<std::streamoff>(position), std::ios::in);
    return offset;
  }

 private:
  std::streambuf& in_;
  const detail::ByteSource& source_;
  std::vector<char> block_;  // the whole file goes through here
};

// xml_iarchive's destructor parses the closing </boost_serialization> tag, and what it throws
// when that fails ends the program (a destructor is noexcept). So the tag is checked first; a
// throw from here destroys the archive during unwinding, when it skips that parse.
void expect_xml_end(std::istream& in) {
  constexpr std::string_view kEnd = "</boost_serialization>";
  const auto at = in.tellg();
  std::string tail(256, '\0');
  in.read(tail.data(), static_cast<std::streamsize>(tail.size()));
  tail.resize(static_cast<std::size_t>(in.gcount()));
  const auto start = std::find_if_not(tail.begin(), tail.end(), detail::boost_file::is_base64_space);
  if (!std::string_view(tail).substr(static_cast<std::size_t>(start - tail.begin())).starts_with(kEnd))
    throw Error(ErrorCode::format, "",
                fmt::format("Boost archive: expected {} at offset {}", kEnd, static_cast<std::uint64_t>(at)));
  in.clear();
  in.seekg(at);
}

// The listing pass reads the source through this: blocks of up to 1 MiB (pread for files, so the
// pages of a mapping are not faulted in and kept), seekable, as Boost's archives and the skippers
// need.
class SourceStreamBuf final : public std::streambuf {
 public:
  explicit SourceStreamBuf(const detail::ByteSource& source)
      : source_(source), block_(static_cast<std::size_t>(std::clamp<std::uint64_t>(source.size(), 1, 1u << 20))) {}

 protected:
  int_type underflow() override {
    if (gptr() < egptr()) return traits_type::to_int_type(*gptr());
    const std::uint64_t at = block_start_ + static_cast<std::uint64_t>(egptr() - eback());
    block_start_ = std::min(at, source_.size());
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(block_.size(), source_.size() - block_start_));
    if (n == 0) {
      setg(block_.data(), block_.data(), block_.data());
      return traits_type::eof();
    }
    (void)source_.read(block_start_, std::as_writable_bytes(std::span(block_.data(), n)));
    setg(block_.data(), block_.data(), block_.data() + n);
    return traits_type::to_int_type(*gptr());
  }
  pos_type seekoff(off_type off, std::ios_base::seekdir dir, std::ios_base::openmode) override {
    const auto here = static_cast<off_type>(block_start_ + static_cast<std::uint64_t>(gptr() - eback()));
    const off_type base = dir == std::ios_base::beg ? 0 : dir == std::ios_base::cur ? here : static_cast<off_type>(source_.size());
    return seekpos(pos_type(base + off), std::ios_base::in);
  }
  pos_type seekpos(pos_type pos, std::ios_base::openmode) override {
    if (pos < 0 || static_cast<std::uint64_t>(pos) > source_.size()) return pos_type(off_type(-1));
    const auto at = static_cast<std::uint64_t>(pos);
    const std::uint64_t loaded = static_cast<std::uint64_t>(egptr() - eback());
    if (at >= block_start_ && at <= block_start_ + loaded) {  // inside the block held
      setg(eback(), eback() + (at - block_start_), egptr());
    } else {
      block_start_ = at;
      setg(block_.data(), block_.data(), block_.data());
    }
    return pos;
  }

 private:
  const detail::ByteSource& source_;
  std::vector<char> block_;
  std::uint64_t block_start_ = 0;  // source offset of block_[0]
};

class BoostReader final : public detail::FormatReader {
 public:
  BoostReader(std::shared_ptr<const detail::ByteSource> source, const ReadOptions& options)
      : FormatReader(std::move(source), options) {
    const std::uint64_t file_size = source_->size();
    std::vector<std::byte> head(static_cast<std::size_t>(std::min<std::uint64_t>(256, file_size)));
    (void)source_->read(0, head);
    kind_ = detail::boost_file::sniff_kind(head);
    format_ = kind_ == detail::boost_file::Kind::text  ? "boost-text"
              : kind_ == detail::boost_file::Kind::xml ? "boost-xml"
                                                       : "boost-binary";
    SourceStreamBuf buffer(*source_);
    std::istream in(&buffer);  // the listing pass
    BinarySkipper binary(buffer, file_size);
    Base64Skipper base64(buffer, *source_);
    StateDictListing listing{kind_ == detail::boost_file::Kind::binary ? static_cast<DataSkipper*>(&binary) : &base64, {}, {}};
    try {
      const BoostLoadLimit budget(file_size);
      switch (kind_) {
        case detail::boost_file::Kind::text: {
          boost::archive::text_iarchive archive(in);
          archive >> boost::serialization::make_nvp("state_dict", listing);
          break;
        }
        case detail::boost_file::Kind::xml: {
          // Without Boost's end-tag check: it indexes the expected name (a string literal) at the
          // length of the tag found in the file, reading past the literal for a longer tag (Boost
          // 1.74, basic_xml_iarchive.ipp load_end; found by fuzz_boost). Values are still read in
          // order and checked; a renamed tag is only not noticed.
          boost::archive::xml_iarchive archive(in, boost::archive::no_xml_tag_checking);
          archive >> boost::serialization::make_nvp("state_dict", listing);
          expect_xml_end(in);  // before the archive's destructor parses it
          break;
        }
        case detail::boost_file::Kind::binary: {
          boost::archive::binary_iarchive archive(in);
          archive >> boost::serialization::make_nvp("state_dict", listing);
          break;
        }
        case detail::boost_file::Kind::none: fail(ErrorCode::format, name_, "not a Boost archive");
      }
    } catch (const Error& e) {
      if (!e.file().empty()) throw;
      // Whatever the listing refuses comes from the file: never the caller's invalid argument.
      fail(e.code() == ErrorCode::invalid_argument ? ErrorCode::format : e.code(), name_, "{}", e.message());
    } catch (const boost::archive::archive_exception& e) {
      fail(ErrorCode::format, name_, "Boost archive: {} (expected a ckpt StateDict named state_dict)", e.what());
    } catch (const boost::archive::iterators::dataflow_exception& e) {  // a string's base64
      fail(ErrorCode::format, name_, "Boost archive: {}", e.what());
    } catch (const std::ios_base::failure& e) {
      fail(ErrorCode::format, name_, "Boost archive: the file ends early ({})", e.what());
    }
    role_source_ = RoleSource::stored;
    metadata_ = std::move(listing.entries.metadata());
    take_checksums(listing.tensors.size());
    for (std::size_t i = 0; i < listing.tensors.size(); ++i) {
      TensorInfo info = listing.tensors[i].info;
      static_cast<EntryInfo&>(info) = listing.entries.entries()[i];
      infos_.push_back(std::move(info));
      offsets_.push_back(listing.tensors[i].offset);
    }
    finish_listing();
  }

  // The per-tensor checksums a ckpt writer keeps in the metadata (format-spec/conventions.md §3).
  void take_checksums(std::size_t count) {
    // Metadata is a JSON object in every format ckpt writes; anything else could not be written on.
    if (!metadata_.is_object()) fail(ErrorCode::format, name_, "Boost archive: metadata is not a JSON object");
    if (!metadata_.contains(detail::kBoostChecksumsKey)) return;
    const Metadata list = std::move(metadata_[std::string(detail::kBoostChecksumsKey)]);
    metadata_.erase(std::string(detail::kBoostChecksumsKey));
    if (!list.is_array() || list.size() != count)
      fail(ErrorCode::format, name_, "metadata {} is not a list of {} checksums, one per tensor",
           detail::quote(detail::kBoostChecksumsKey), count);
    for (std::size_t i = 0; i < count; ++i) {
      std::uint64_t value = 0;
      if (!list[i].is_string() ||
          detail::parse_checksum(list[i].get<std::string>(), value) != detail::ChecksumText::xxh3_64)
        fail(ErrorCode::format, name_, "metadata {}: entry {} is not \"xxh3-64:\" and 16 hex digits",
             detail::quote(detail::kBoostChecksumsKey), i);
      checksums_.push_back(value);
    }
  }

  // Binary archives: the tensor's bytes as they are. Text and xml archives: base64 text from the
  // tensor's offset, decoded.
  detail::Location locate(std::size_t index) override {
    detail::Location l = location(index);
    const std::uint64_t nbytes = infos_[index].nbytes(), at = offsets_[index];
    if (kind_ == detail::boost_file::Kind::binary) {
      l.extents = {{at, nbytes}};
      return l;
    }
    l.decoded_size = nbytes;
    l.decoded = [source = source_, at](std::uint64_t skip, std::span<std::byte> out) { decode_base64(*source, at, skip, out); };
    return l;
  }

 private:
  // Decodes bytes [skip, skip + out.size()) of the base64 data starting at `at` (base64.h says why
  // this is not Boost's decoder), reading the text in blocks.
  static void decode_base64(const detail::ByteSource& source, std::uint64_t at, std::uint64_t skip,
                            std::span<std::byte> out) {
    std::vector<std::byte> dropped(static_cast<std::size_t>(std::min<std::uint64_t>(skip, 1u << 20)));
    std::vector<char> text(static_cast<std::size_t>(std::clamp<std::uint64_t>(source.size(), 1, 1u << 20)));
    auto target = [&] {
      return skip > 0 ? std::span<std::byte>(dropped).first(static_cast<std::size_t>(std::min<std::uint64_t>(skip, dropped.size())))
                      : out;
    };
    detail::boost_file::Base64Decoder decoder(target());
    while (true) {
      const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(text.size(), source.size() - std::min(at, source.size())));
      if (n == 0)
        fail(ErrorCode::format, source.name(), "Boost archive: the file ends inside base64 data (offset {})", at);
      (void)source.read(at, std::as_writable_bytes(std::span(text.data(), n)));
      std::size_t used = 0;
      while (used < n) {
        used += decoder.feed(std::span(text.data() + used, n - used));
        if (decoder.bad())
          fail(ErrorCode::format, source.name(), "Boost archive: a character that is not base64 at offset {}", at + used);
        if (!decoder.full()) continue;
        if (skip == 0) return;  // `out` is full
        skip -= decoder.size();
        decoder.retarget(target());
        if (out.empty() && skip == 0) return;
      }
      at += n;
    }
  }

  detail::boost_file::Kind kind_ = detail::boost_file::Kind::none;
  std::vector<std::uint64_t> offsets_;
};

}  // namespace

namespace detail::boost_file {

std::unique_ptr<FormatReader> open_reader(std::shared_ptr<const ByteSource> source, const ReadOptions& options) {
  return std::make_unique<BoostReader>(std::move(source), options);
}

}  // namespace detail::boost_file
}  // namespace ckpt

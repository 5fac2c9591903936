// Boost.Serialization archives as checkpoint files: one StateDict (ckpt/boost_serialization.h)
// saved under the name "state_dict" in a text, xml or binary archive. The reader lists the archive
// in one pass that steps over tensor data (within a budget of the file's size: no claim in the
// archive can make it allocate more than the file holds), then reads tensors where they lie.
#include <algorithm>
#include <array>
#include <cstring>
#include <fstream>
#include <memory>
#include <optional>
#include <span>
#include <streambuf>

#include <unistd.h>

#include <fmt/format.h>

#include <boost/archive/archive_exception.hpp>
#include <boost/archive/binary_iarchive.hpp>
#include <boost/archive/iterators/dataflow_exception.hpp>
#include <boost/archive/binary_oarchive.hpp>
#include <boost/archive/text_iarchive.hpp>
#include <boost/archive/text_oarchive.hpp>
#include <boost/archive/xml_iarchive.hpp>
#include <boost/archive/xml_oarchive.hpp>

#include "boost_archive/base64.h"
#include "boost_archive/boost_file.h"
#include "ckpt/boost_archive.h"
#include "ckpt/boost_serialization.h"
#include "util/atomic_file.h"
#include "util/bytes.h"
#include "util/file_read.h"
#include "util/mapped_file.h"

namespace ckpt {

// The writers' stream buffer: buffered writes to the AtomicFile. A tensor's data announced with
// expect() is copied file to file where it also lies in the source (AtomicFile::write), when it
// arrives unchanged in one piece, as binary archives hand it over. Text and xml archives' tensor
// data comes through write_base64 instead (see DataForFile).
class FileStreamBuf final : public std::streambuf {
 public:
  explicit FileStreamBuf(detail::AtomicFile& file) : file_(file) { setp(buffer_.data(), buffer_.data() + buffer_.size()); }
  void expect(std::span<const std::byte> data, std::optional<Source::FileSpan> from) {
    expected_ = data;
    from_ = from;
  }
  // Boost's text encoding of `data` (base64.h), written after everything buffered so far.
  void write_base64(std::span<const std::byte> data) {
    flush_buffer();
    detail::boost_file::encode_boost_base64(data, [&](std::span<const char> text) { file_.write(std::as_bytes(text)); });
  }

 protected:
  int_type overflow(int_type c) override {
    flush_buffer();
    if (!traits_type::eq_int_type(c, traits_type::eof())) {
      *pptr() = traits_type::to_char_type(c);
      pbump(1);
    }
    return traits_type::not_eof(c);
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    const std::span<const std::byte> data(reinterpret_cast<const std::byte*>(s), static_cast<std::size_t>(n));
    if (from_ && data.data() == expected_.data() && data.size() == expected_.size()) {
      flush_buffer();
      file_.write(data, from_);
      from_.reset();
      return n;
    }
    if (data.size() >= buffer_.size()) {
      flush_buffer();
      file_.write(data);
      return n;
    }
    return std::streambuf::xsputn(s, n);
  }
  int sync() override {
    flush_buffer();
    return 0;
  }

 private:
  void flush_buffer() {
    file_.write(std::as_bytes(std::span(pbase(), static_cast<std::size_t>(pptr() - pbase()))));
    setp(buffer_.data(), buffer_.data() + buffer_.size());
  }
  detail::AtomicFile& file_;
  std::array<char, 1 << 20> buffer_{};
  std::span<const std::byte> expected_;
  std::optional<Source::FileSpan> from_;
};

// A Source saved exactly as a StateDict of the same entries (ckpt/boost_serialization.h: same
// class version, same fields), but tensor by tensor, so writing holds one tensor at a time.
struct SourceAsStateDict {
  Source* source;
  const std::string* file;
  const WriteOptions* options;
  FileStreamBuf* buffer;
};
// A Tensor saved exactly as ckpt/boost_serialization.h saves one (same class version and levels,
// same fields), with its data saved as DataForFile.
struct TensorForFile {
  const Tensor* tensor;
  FileStreamBuf* buffer;
  std::optional<Source::FileSpan> from;
};
// Tensor data archived as a binary_object is (nothing but the data). Binary archives get it through
// save_binary as Boost does, so FileStreamBuf can copy it file to file. Text and xml archives get
// an empty save_binary, which does Boost's own bookkeeping around binary data (the newline and
// delimiter state of text archives, the indentation of xml ones) and writes nothing else, then
// the base64 text Boost would write, from the fast encoder: the same bytes (tests compare them).
struct DataForFile {
  std::span<const std::byte> bytes;
  FileStreamBuf* buffer;
  std::optional<Source::FileSpan> from;
};
}  // namespace ckpt

BOOST_CLASS_IMPLEMENTATION(ckpt::DataForFile, boost::serialization::object_serializable)
BOOST_CLASS_TRACKING(ckpt::DataForFile, boost::serialization::track_never)
BOOST_CLASS_VERSION(ckpt::TensorForFile, ckpt::detail::kBoostTensorVersion)

namespace boost::serialization {

template <class Archive>
void serialize(Archive& ar, ckpt::DataForFile& data, unsigned /*version*/) {
  if constexpr (std::is_same_v<Archive, boost::archive::binary_oarchive>) {
    data.buffer->expect(data.bytes, data.from);
    ar.save_binary(data.bytes.data(), data.bytes.size());
  } else {
    ar.save_binary(data.bytes.data(), 0);
    data.buffer->write_base64(data.bytes);
  }
}

template <class Archive>
void serialize(Archive& ar, ckpt::TensorForFile& tensor, unsigned /*version*/) {
  ckpt::detail::save_tensor_header(ar, *tensor.tensor);
  ckpt::DataForFile data{tensor.tensor->bytes(), tensor.buffer, tensor.from};
  ar << make_nvp("data", data);
}

template <class Archive>
void serialize(Archive& ar, ckpt::SourceAsStateDict& view, unsigned /*version*/) {
  ckpt::Source& source = *view.source;
  const auto& infos = source.tensors();
  const std::uint64_t count = infos.size();
  ar << make_nvp("count", count);
  std::uint64_t done = 0, total = 0;
  for (const auto& info : infos) total += info.nbytes();
  for (std::size_t i = 0; i < infos.size(); ++i) {
    const auto& e = infos[i];
    ckpt::detail::save_string(ar, "name", e.name);
    ckpt::detail::save_string(ar, "role", ckpt::role_name(e.role));
    ckpt::detail::save_string(ar, "section", e.section);
    ckpt::detail::save_string(ar, "collection", e.collection);
    const ckpt::Tensor tensor = source.read_checked(i, *view.file);
    ckpt::TensorForFile saved{&tensor, view.buffer, source.file_span(i)};
    ar << make_nvp("persistent", e.persistent) << make_nvp("tensor", saved);
    done += tensor.nbytes();
    if (view.options->progress) view.options->progress(done, total);
  }
  ckpt::detail::save_string(ar, "metadata", source.metadata().dump());
}

}  // namespace boost::serialization

BOOST_CLASS_VERSION(ckpt::SourceAsStateDict, ckpt::detail::kBoostStateDictVersion)

namespace ckpt {
namespace {

using detail::fail;

constexpr std::string_view kSignature = "serialization::archive";

detail::boost_file::Kind kind_of(std::span<const std::byte> head) {
  const std::string_view text(reinterpret_cast<const char*>(head.data()), head.size());
  const auto at = text.find(kSignature);
  if (at == std::string_view::npos) return detail::boost_file::Kind::none;
  if (text.starts_with("<?xml") && text.find("<!DOCTYPE boost_serialization>") != std::string_view::npos)
    return detail::boost_file::Kind::xml;
  if (at > 64) return detail::boost_file::Kind::none;
  if (at >= 3 && text.substr(0, 3) == "22 ") return detail::boost_file::Kind::text;
  // The signature's length (native 64-bit), then the signature. Boost resizes a string to the
  // length before reading it, so the length must be the signature's own.
  if (at == 8 && detail::load_le<std::uint64_t>(head.data()) == kSignature.size()) return detail::boost_file::Kind::binary;
  return detail::boost_file::Kind::none;
}

class BudgetGuard {
 public:
  explicit BudgetGuard(std::uint64_t budget) { detail::boost_load_budget = budget; }
  ~BudgetGuard() { detail::boost_load_budget = UINT64_MAX; }
};

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
  // Reads in blocks of up to 1 MiB, no larger than the file (a fresh block costs page faults).
  Base64Skipper(std::streambuf& in, std::uint64_t file_size)
      : in_(in), block_(static_cast<std::size_t>(std::clamp<std::uint64_t>(file_size, 1, 1u << 20))) {}
  std::uint64_t skip(std::uint64_t nbytes) override {
    const std::uint64_t offset = position(in_);
    if (nbytes == 0) return offset;  // Boost reads nothing for empty data
    std::uint64_t digits = (nbytes * 8 + 5) / 6, position = offset;
    bool padding = false;
    for (;;) {
      const auto got = in_.sgetn(block_.data(), static_cast<std::streamsize>(block_.size()));
      if (got <= 0) {
        if (padding) break;  // Boost stops at the end of the file too
        throw Error(ErrorCode::format, "",
                    fmt::format("Boost archive: the file ends inside the base64 data of {} bytes that starts at offset {}",
                                nbytes, offset));
      }
      const auto n = static_cast<std::size_t>(got);
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

class BoostReader final : public Reader {
 public:
  BoostReader(const std::filesystem::path& path, const ReadOptions& options) : Reader(path, options) {
    name_ = path.string();
    fd_ = detail::open_readonly(path);
    const std::uint64_t file_size = std::filesystem::file_size(path);
    file_size_ = file_size;
    std::ifstream in(path, std::ios::binary);  // the listing pass
    if (!in) fail(ErrorCode::io, name_, "cannot open: {}", std::strerror(errno));
    std::string head(256, '\0');
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    head.resize(static_cast<std::size_t>(in.gcount()));
    in.clear();
    in.seekg(0);
    kind_ = kind_of(std::as_bytes(std::span(head)));
    format_ = kind_ == detail::boost_file::Kind::text  ? "boost-text"
              : kind_ == detail::boost_file::Kind::xml ? "boost-xml"
                                                       : "boost-binary";
    BinarySkipper binary(*in.rdbuf(), file_size);
    Base64Skipper base64(*in.rdbuf(), file_size);
    StateDictListing listing{kind_ == detail::boost_file::Kind::binary ? static_cast<DataSkipper*>(&binary) : &base64, {}, {}};
    try {
      const BudgetGuard budget(file_size);
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
      fail(e.code(), name_, "{}", e.message());
    } catch (const boost::archive::archive_exception& e) {
      fail(ErrorCode::format, name_, "Boost archive: {} (expected a ckpt StateDict named state_dict)", e.what());
    } catch (const boost::archive::iterators::dataflow_exception& e) {  // a string's base64
      fail(ErrorCode::format, name_, "Boost archive: {}", e.what());
    } catch (const std::ios_base::failure& e) {
      fail(ErrorCode::format, name_, "Boost archive: the file ends early ({})", e.what());
    }
    role_source_ = RoleSource::stored;
    metadata_ = std::move(listing.entries.metadata());
    for (std::size_t i = 0; i < listing.tensors.size(); ++i) {
      TensorInfo info = listing.tensors[i].info;
      static_cast<EntryInfo&>(info) = listing.entries.entries()[i];
      infos_.push_back(std::move(info));
      offsets_.push_back(listing.tensors[i].offset);
    }
    if (kind_ == detail::boost_file::Kind::binary) mapping_ = detail::MappedFile::from_fd(fd_.get(), path);
    finish_listing();
  }

  Tensor read(std::size_t index) override {
    check_index(index);
    const auto& info = infos_[index];
    const std::uint64_t nbytes = info.nbytes();
    if (nbytes == 0) return Tensor::zeros(info.dtype, info.shape);
    if (kind_ == detail::boost_file::Kind::binary) {
      if (options_.zero_copy && offsets_[index] % dtype_size(info.dtype) == 0) {
        mapping_->prefetch(offsets_[index], nbytes);
        return Tensor::view(info.dtype, info.shape, mapping_->bytes().data() + offsets_[index], mapping_);
      }
      Tensor tensor = Tensor::uninitialized(info.dtype, info.shape);
      detail::read_at(fd_.get(), offsets_[index], tensor.mutable_bytes(), false, name_);
      return tensor;
    }
    Tensor tensor = Tensor::uninitialized(info.dtype, info.shape);
    decode_base64(index, tensor.mutable_bytes());
    return tensor;
  }

  std::optional<FileSpan> file_span(std::size_t index) const override {
    check_index(index);
    if (kind_ != detail::boost_file::Kind::binary || infos_[index].nbytes() == 0) return std::nullopt;
    return FileSpan{fd_.get(), offsets_[index]};
  }

 private:
  // Text and xml archives: the base64 digits from the tensor's offset (base64.h says why this is
  // not Boost's decoder), read in blocks.
  void decode_base64(std::size_t index, std::span<std::byte> out) {
    detail::boost_file::Base64Decoder decoder(out);
    if (text_block_.empty())  // up to 1 MiB, no larger than the file (a fresh block costs page faults)
      text_block_.resize(static_cast<std::size_t>(std::clamp<std::uint64_t>(file_size_, 1, 1u << 20)));
    std::uint64_t at = offsets_[index];
    while (!decoder.full()) {
      const auto got = ::pread(fd_.get(), text_block_.data(), text_block_.size(), static_cast<off_t>(at));
      if (got < 0) {
        if (errno == EINTR) continue;
        fail(ErrorCode::io, name_, "cannot read at offset {}: {}", at, std::strerror(errno));
      }
      if (got == 0)
        fail(ErrorCode::format, name_, "Boost archive: the file ends inside the base64 data of tensor {} (offset {})",
             detail::quote(infos_[index].name), at);
      const std::size_t used = decoder.feed(std::span(text_block_.data(), static_cast<std::size_t>(got)));
      if (decoder.bad())
        fail(ErrorCode::format, name_, "Boost archive: the base64 data of tensor {} has a character that is not base64 at offset {}",
             detail::quote(infos_[index].name), at + used);
      at += used;
    }
  }

  std::string name_;
  detail::UniqueFd fd_;
  std::uint64_t file_size_ = 0;
  std::vector<char> text_block_;
  detail::boost_file::Kind kind_ = detail::boost_file::Kind::none;
  std::vector<std::uint64_t> offsets_;
  std::shared_ptr<const detail::MappedFile> mapping_;
};

}  // namespace


namespace {

template <class Archive>
void write_archive(Source& source, const std::filesystem::path& path, const WriteOptions& options) {
  const std::string name = path.string();
  detail::AtomicFile file(path, options.overwrite);
  {
    auto buffer = std::make_unique<FileStreamBuf>(file);
    std::ostream out(buffer.get());
    out.exceptions(std::ios::badbit | std::ios::failbit);
    try {
      {
        Archive archive(out);
        const SourceAsStateDict view{&source, &name, &options, buffer.get()};
        archive << boost::serialization::make_nvp("state_dict", view);
      }  // xml archives write their closing tag here
      out.flush();
    } catch (const std::ios_base::failure& e) {
      fail(ErrorCode::io, name, "cannot write: {}", e.what());
    }
  }
  file.commit();
}

}  // namespace

namespace detail::boost_file {

Kind sniff_kind(std::span<const std::byte> head) { return kind_of(head); }

}  // namespace detail::boost_file

std::unique_ptr<Reader> open_boost(const std::filesystem::path& path, const ReadOptions& options) {
  return std::make_unique<BoostReader>(path, options);
}
void write_boost_text(Source& source, const std::filesystem::path& path, const WriteOptions& options) {
  write_archive<boost::archive::text_oarchive>(source, path, options);
}
void write_boost_xml(Source& source, const std::filesystem::path& path, const WriteOptions& options) {
  write_archive<boost::archive::xml_oarchive>(source, path, options);
}
void write_boost_binary(Source& source, const std::filesystem::path& path, const WriteOptions& options) {
  write_archive<boost::archive::binary_oarchive>(source, path, options);
}

}  // namespace ckpt


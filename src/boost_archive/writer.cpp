// Boost archive files, writing: one StateDict (ckpt/boost_serialization.h) saved under the name
// "state_dict" in a text, xml or binary archive, tensor by tensor from a Source, through an
// atomic file; tensor data that lies verbatim in the input is copied file to file, and text and xml
// data is encoded by a fast base64 encoder that writes Boost's exact bytes (base64.h).
#include <algorithm>
#include <array>
#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <streambuf>

#include <fmt/format.h>

#include <boost/archive/binary_oarchive.hpp>
#include <boost/archive/text_oarchive.hpp>
#include <boost/archive/xml_oarchive.hpp>

#include "boost_archive/base64.h"
#include "boost_archive/format.h"
#include "ckpt/boost_archive.h"
#include "ckpt/boost_serialization.h"
#include "util/atomic_file.h"
#include "util/checksum.h"
#include "util/bytes.h"

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
    detail::boost_file::encode_boost_base64(data, [&](std::span<const char> text) { put(std::as_bytes(text)); });
  }
  // The first write that failed, thrown again (the writer asks after each tensor and at the end).
  void check() const {
    if (error_) std::rethrow_exception(error_);
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
      put(data, from_);
      from_.reset();
      return n;
    }
    if (data.size() >= buffer_.size()) {
      flush_buffer();
      put(data);
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
    put(std::as_bytes(std::span(pbase(), static_cast<std::size_t>(pptr() - pbase()))));
    setp(buffer_.data(), buffer_.data() + buffer_.size());
  }
  // Never throws: Boost's archives write from their destructors (an xml archive's closing tag),
  // where an exception would end the program. A failed write is kept, later ones are dropped.
  void put(std::span<const std::byte> data, const std::optional<Source::FileSpan>& from = std::nullopt) {
    if (error_) return;
    try {
      file_.write(data, from);
    } catch (...) {
      error_ = std::current_exception();
    }
  }
  detail::AtomicFile& file_;
  std::exception_ptr error_;
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
  ckpt::Metadata checksums = ckpt::Metadata::array();
  for (std::size_t i = 0; i < infos.size(); ++i) {
    const auto& e = infos[i];
    ckpt::detail::save_string(ar, "name", e.name);
    ckpt::detail::save_string(ar, "role", ckpt::role_name(e.role));
    ckpt::detail::save_string(ar, "section", e.section);
    ckpt::detail::save_string(ar, "collection", e.collection);
    const ckpt::Tensor tensor = source.read_checked(i, *view.file);
    ckpt::TensorForFile saved{&tensor, view.buffer, source.file_span(i)};
    ar << make_nvp("persistent", e.persistent) << make_nvp("tensor", saved);
    view.buffer->check();  // a full disk stops the write here, not after the last tensor
    if (view.options->checksums) checksums.push_back(ckpt::detail::format_checksum(ckpt::detail::xxh3_64(tensor.bytes())));
    done += tensor.nbytes();
    if (view.options->progress) view.options->progress(done, total);
  }
  // The metadata comes last: by then every tensor's checksum is known (format-spec/conventions.md
  // §3: "ckpt.checksums", one per entry, in order; the reader takes it out of the metadata).
  // The key is ckpt's: a value of that name in the source's metadata is not carried over (a reader
  // would take it for checksums).
  ckpt::Metadata metadata = source.metadata();
  if (metadata.is_object()) metadata.erase(std::string(ckpt::detail::kBoostChecksumsKey));
  if (!checksums.empty()) {
    if (!metadata.is_object()) metadata = ckpt::Metadata::object();
    metadata[std::string(ckpt::detail::kBoostChecksumsKey)] = checksums;
  }
  ckpt::detail::save_string(ar, "metadata", metadata.dump());
}

}  // namespace boost::serialization

BOOST_CLASS_VERSION(ckpt::SourceAsStateDict, ckpt::detail::kBoostStateDictVersion)

namespace ckpt {
namespace {

using detail::fail;

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
      buffer->check();
    } catch (const std::ios_base::failure& e) {
      fail(ErrorCode::io, name, "cannot write: {}", e.what());
    }
  }
  file.commit();
}

}  // namespace

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

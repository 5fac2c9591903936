// Boost.Serialization archives as checkpoint files: one StateDict (ckpt/boost_serialization.h)
// saved under the name "state_dict" in a text, xml or binary archive. Boost archives are
// sequential streams, so the reader loads the whole StateDict at open (within a budget of the
// file's size: no claim in the archive can make it allocate more than the file holds).
#include <cstring>
#include <fstream>

#include <boost/archive/archive_exception.hpp>
#include <boost/archive/binary_iarchive.hpp>
#include <boost/archive/binary_oarchive.hpp>
#include <boost/archive/text_iarchive.hpp>
#include <boost/archive/text_oarchive.hpp>
#include <boost/archive/xml_iarchive.hpp>
#include <boost/archive/xml_oarchive.hpp>

#include "boost_archive/boost_file.h"
#include "ckpt/boost_archive.h"
#include "ckpt/boost_serialization.h"
#include "util/atomic_file.h"
#include "util/bytes.h"

namespace ckpt {
// A Source saved exactly as a StateDict of the same entries (ckpt/boost_serialization.h: same
// class version, same fields), but tensor by tensor, so writing holds one tensor at a time.
struct SourceAsStateDict {
  Source* source;
  const std::string* file;
  const WriteOptions* options;
};
}  // namespace ckpt

namespace boost::serialization {

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
    ar << make_nvp("persistent", e.persistent) << make_nvp("tensor", tensor);
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
  if (at == 8) return detail::boost_file::Kind::binary;  // the signature's length, then it
  return detail::boost_file::Kind::none;
}

class BudgetGuard {
 public:
  explicit BudgetGuard(std::uint64_t budget) { detail::boost_load_budget = budget; }
  ~BudgetGuard() { detail::boost_load_budget = UINT64_MAX; }
};

class BoostReader final : public Reader {
 public:
  BoostReader(const std::filesystem::path& path, const ReadOptions& options) : Reader(path, options) {
    const std::string name = path.string();
    std::ifstream in(path, std::ios::binary);
    if (!in) fail(ErrorCode::io, name, "cannot open: {}", std::strerror(errno));
    std::string head(256, '\0');
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    head.resize(static_cast<std::size_t>(in.gcount()));
    in.clear();
    in.seekg(0);
    const auto kind = kind_of(std::as_bytes(std::span(head)));
    format_ = kind == detail::boost_file::Kind::text  ? "boost-text"
              : kind == detail::boost_file::Kind::xml ? "boost-xml"
                                                      : "boost-binary";
    StateDict state;
    try {
      const BudgetGuard budget(std::filesystem::file_size(path));
      switch (kind) {
        case detail::boost_file::Kind::text: {
          boost::archive::text_iarchive archive(in);
          archive >> boost::serialization::make_nvp("state_dict", state);
          break;
        }
        case detail::boost_file::Kind::xml: {
          boost::archive::xml_iarchive archive(in);
          archive >> boost::serialization::make_nvp("state_dict", state);
          break;
        }
        case detail::boost_file::Kind::binary: {
          boost::archive::binary_iarchive archive(in);
          archive >> boost::serialization::make_nvp("state_dict", state);
          break;
        }
        case detail::boost_file::Kind::none: fail(ErrorCode::format, name, "not a Boost archive");
      }
    } catch (const Error& e) {
      if (!e.file().empty()) throw;
      fail(e.code(), name, "{}", e.message());
    } catch (const boost::archive::archive_exception& e) {
      fail(ErrorCode::format, name, "Boost archive: {} (expected a ckpt StateDict named state_dict)", e.what());
    } catch (const std::ios_base::failure& e) {
      fail(ErrorCode::format, name, "Boost archive: the file ends early ({})", e.what());
    }
    role_source_ = RoleSource::stored;
    metadata_ = state.metadata();
    for (const auto& e : state.entries()) {
      infos_.push_back(e.info());
      tensors_.push_back(e.tensor);
    }
    finish_listing();
  }

  Tensor read(std::size_t index) override {
    check_index(index);
    return tensors_[index];
  }

 private:
  std::vector<Tensor> tensors_;
};

}  // namespace


namespace {

template <class Archive>
void write_archive(Source& source, const std::filesystem::path& path, const WriteOptions& options) {
  const std::string name = path.string();
  detail::AtomicFile file(path, options.overwrite);
  {
    std::ofstream out(file.temp_path(), std::ios::binary);
    out.exceptions(std::ios::badbit | std::ios::failbit);
    try {
      Archive archive(out);
      const SourceAsStateDict view{&source, &name, &options};
      archive << boost::serialization::make_nvp("state_dict", view);
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


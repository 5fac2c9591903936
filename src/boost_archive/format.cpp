// Boost.Serialization archives (text, xml, binary) in the format registry.
#include <string_view>

#include "boost_archive/format.h"
#include "ckpt/boost_archive.h"
#include "util/bytes.h"

namespace ckpt {

namespace detail::boost_file {

Kind sniff_kind(std::span<const std::byte> head) {
  constexpr std::string_view kSignature = "serialization::archive";
  const std::string_view text(reinterpret_cast<const char*>(head.data()), head.size());
  const auto at = text.find(kSignature);
  if (at == std::string_view::npos) return Kind::none;
  if (text.starts_with("<?xml") && text.find("<!DOCTYPE boost_serialization>") != std::string_view::npos)
    return Kind::xml;
  if (at > 64) return Kind::none;
  if (at >= 3 && text.substr(0, 3) == "22 ") return Kind::text;
  // The signature's length (native 64-bit), then the signature. Boost resizes a string to the
  // length before reading it, so the length must be the signature's own.
  if (at == 8 && load_le<std::uint64_t>(head.data()) == kSignature.size()) return Kind::binary;
  return Kind::none;
}

}  // namespace detail::boost_file

namespace detail {
namespace {

template <boost_file::Kind kind>
bool sniff(std::span<const std::byte> head, std::uint64_t) {
  return boost_file::sniff_kind(head) == kind;
}

}  // namespace

FormatHandler boost_text_format() {
  return {"boost-text", "Boost.Serialization text archive of a ckpt StateDict (format-spec/conventions.md)",
          {".boost.txt"}, sniff<boost_file::Kind::text>, boost_file::open_reader, write_boost_text, {}, false};
}

FormatHandler boost_xml_format() {
  return {"boost-xml", "Boost.Serialization xml archive of a ckpt StateDict", {".boost.xml"},
          sniff<boost_file::Kind::xml>, boost_file::open_reader, write_boost_xml, {}, false};
}

FormatHandler boost_binary_format() {
  return {"boost-binary", "Boost.Serialization binary archive of a ckpt StateDict (not portable across architectures)",
          {".boost.bin", ".boost"}, sniff<boost_file::Kind::binary>, boost_file::open_reader, write_boost_binary, {},
          false};
}

}  // namespace detail

std::unique_ptr<Reader> open_boost(const std::filesystem::path& path, const ReadOptions& options) {
  return detail::make_reader(detail::boost_file::open_reader(detail::ByteSource::open_file(path), options));
}

}  // namespace ckpt

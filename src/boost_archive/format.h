// The boost_archive folder's entry points for the rest of ckpt.
#pragma once

#include <cstddef>
#include <memory>
#include <span>
#include <string_view>

#include "core/format_reader.h"

namespace ckpt::detail {
// The metadata key under which ckpt's file writers keep per-tensor checksums: a list of
// "xxh3-64:<16 hex>", one per entry in order (format-spec/conventions.md §3).
inline constexpr std::string_view kBoostChecksumsKey = "ckpt.checksums";
}  // namespace ckpt::detail

namespace ckpt::detail::boost_file {

enum class Kind { none, text, xml, binary };
// Which kind of Boost archive a file starts like (Boost's "serialization::archive" signature).
Kind sniff_kind(std::span<const std::byte> head);
// Text, xml and binary archives alike (the kind is sniffed).
std::unique_ptr<FormatReader> open_reader(std::shared_ptr<const ByteSource> source, const ReadOptions& options);

}  // namespace ckpt::detail::boost_file

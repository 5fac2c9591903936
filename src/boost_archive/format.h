// The boost_archive folder's entry points for the rest of ckpt.
#pragma once

#include <cstddef>
#include <memory>
#include <span>

#include "core/format_reader.h"

namespace ckpt::detail::boost_file {

enum class Kind { none, text, xml, binary };
// Which kind of Boost archive a file starts like (Boost's "serialization::archive" signature).
Kind sniff_kind(std::span<const std::byte> head);
// Text, xml and binary archives alike (the kind is sniffed).
std::unique_ptr<FormatReader> open_reader(std::shared_ptr<const ByteSource> source, const ReadOptions& options);

}  // namespace ckpt::detail::boost_file

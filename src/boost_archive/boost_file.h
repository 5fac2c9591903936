// Content detection for Boost archive files (used by the format registry).
#pragma once

#include <cstddef>
#include <span>

namespace ckpt::detail::boost_file {

enum class Kind { none, text, xml, binary };
Kind sniff_kind(std::span<const std::byte> head);

}  // namespace ckpt::detail::boost_file

#include "boost_archive/base64.h"

#include <array>

namespace ckpt::detail::boost_file {
namespace {

constexpr std::uint8_t kSpace = 0xfe, kBad = 0xff;

constexpr std::array<std::uint8_t, 256> make_table() {
  std::array<std::uint8_t, 256> table{};
  for (auto& v : table) v = kBad;
  const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  for (std::uint8_t i = 0; i < 64; ++i) table[static_cast<unsigned char>(alphabet[i])] = i;
  table['='] = 0;
  for (int c = 0; c < 256; ++c)
    if (is_base64_space(static_cast<char>(c))) table[static_cast<std::size_t>(c)] = kSpace;
  return table;
}
constexpr auto kTable = make_table();

}  // namespace

std::size_t count_base64_spaces(std::span<const char> text) noexcept {
  std::size_t count = 0;
  for (const char c : text) count += is_base64_space(c) ? 1 : 0;
  return count;
}

std::size_t Base64Decoder::feed(std::span<const char> text) {
  const auto digit = [&](std::size_t k) { return kTable[static_cast<unsigned char>(text[k])]; };
  std::size_t i = 0;
  const std::size_t n = text.size();
  std::byte* out = out_.data() + done_;
  std::byte* const end = out_.data() + out_.size();
  while (i < n && out != end) {
    // On a group boundary: whole groups of four digits while no whitespace interrupts them.
    if (nbits_ == 0) {
      while (i + 4 <= n && end - out >= 3) {
        const std::uint32_t a = digit(i), b = digit(i + 1), c = digit(i + 2), d = digit(i + 3);
        if ((a | b | c | d) >= 64) break;  // whitespace or a bad character: one at a time below
        const std::uint32_t v = a << 18 | b << 12 | c << 6 | d;
        out[0] = static_cast<std::byte>(v >> 16);
        out[1] = static_cast<std::byte>(v >> 8);
        out[2] = static_cast<std::byte>(v);
        out += 3;
        i += 4;
      }
      if (i == n || out == end) break;
    }
    const std::uint8_t v = digit(i);
    if (v == kBad) {
      bad_ = true;
      break;
    }
    ++i;
    if (v == kSpace) continue;
    bits_ = (bits_ << 6 | v) & 0xfff;
    nbits_ += 6;
    if (nbits_ >= 8) {
      nbits_ -= 8;
      *out++ = static_cast<std::byte>(bits_ >> nbits_);
    }
  }
  done_ = static_cast<std::size_t>(out - out_.data());
  return i;
}

}  // namespace ckpt::detail::boost_file

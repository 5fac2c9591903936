#include "boost_archive/base64.h"

#include <array>
#include <cstring>
#include <vector>

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

constexpr const char* kAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// Two digits for every 12 bits, so a group of three bytes takes two lookups.
const std::array<std::array<char, 2>, 4096>& pair_table() {
  static const auto table = [] {
    std::array<std::array<char, 2>, 4096> t{};
    for (std::size_t v = 0; v < t.size(); ++v) t[v] = {kAlphabet[v >> 6], kAlphabet[v & 63]};
    return t;
  }();
  return table;
}

constexpr std::size_t kLineDigits = 76, kLineBytes = kLineDigits / 4 * 3;  // 57 bytes a line
constexpr std::size_t kBlockLines = 16384;                                 // about 1.2 MiB of text

// Whole groups of three bytes as four digits each; returns the end of the digits.
char* encode_groups(const std::uint8_t* in, std::size_t groups, char* out) {
  const auto& pairs = pair_table();
  for (std::size_t g = 0; g < groups; ++g, in += 3, out += 4) {
    const std::uint32_t v = std::uint32_t{in[0]} << 16 | std::uint32_t{in[1]} << 8 | in[2];
    std::memcpy(out, pairs[v >> 12].data(), 2);
    std::memcpy(out + 2, pairs[v & 0xfff].data(), 2);
  }
  return out;
}

}  // namespace

void encode_boost_base64(std::span<const std::byte> data, const std::function<void(std::span<const char>)>& sink) {
  if (data.empty()) return;
  std::vector<char> block(kBlockLines * (kLineDigits + 1) + 4);
  const auto* in = reinterpret_cast<const std::uint8_t*>(data.data());
  std::size_t left = data.size();
  while (left > 0) {
    char* out = block.data();
    for (std::size_t line = 0; line < kBlockLines && left > 0; ++line) {
      // The newline before the data, then one before each further line: none after the last.
      *out++ = '\n';
      const std::size_t take = std::min(left, kLineBytes);
      out = encode_groups(in, take / 3, out);
      in += take / 3 * 3;
      left -= take / 3 * 3;
      if (take % 3 != 0) {  // the last, partial group: its digits, zero bits after the data, padding
        const std::uint32_t v = std::uint32_t{in[0]} << 16 | (take % 3 == 2 ? std::uint32_t{in[1]} << 8 : 0u);
        *out++ = kAlphabet[v >> 18];
        *out++ = kAlphabet[(v >> 12) & 63];
        if (take % 3 == 2) *out++ = kAlphabet[(v >> 6) & 63];
        *out++ = '=';
        if (take % 3 == 1) *out++ = '=';
        left = 0;
      }
    }
    sink(std::span<const char>(block.data(), static_cast<std::size_t>(out - block.data())));
  }
}

// Listing a text archive runs this over every character. Written as two comparisons (' ' and the
// range '\t'..'\r') the loop vectorizes, and on x86-64 it is also built for AVX2, picked at load
// time: about 2x the SSE2 speed on the development VM.
#if defined(__x86_64__) && defined(__GNUC__)
[[gnu::target_clones("avx2", "default")]]
#endif
std::size_t count_base64_spaces(std::span<const char> text) noexcept {
  static_assert('\t' + 1 == '\n' && '\n' + 1 == '\v' && '\v' + 1 == '\f' && '\f' + 1 == '\r');
  const char* p = text.data();
  std::size_t count = 0;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(p[i]);
    count += static_cast<std::size_t>((c == ' ') | (static_cast<unsigned char>(c - '\t') < 5u));
  }
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

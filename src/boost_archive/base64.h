// The base64 that Boost text and xml archives hold tensor data in: decoding and encoding.
//
// Hand-written on purpose: Boost's own decoder (an istream_iterator pipeline,
// boost/archive/impl/basic_text_iprimitive.ipp) ran at about 30 MB/s on the development VM, so
// reading a 1 GiB text archive took 30-50 s, and libsodium's constant-time sodium_base642bin at
// about 100 MB/s; a table decoder runs at memory speed. It accepts exactly what Boost's decoder
// accepts: the standard alphabet, whitespace anywhere between digits, '=' read as 0 (Boost's
// table, boost/archive/iterators/binary_from_base64.hpp). Tests check it against Boost's encoder.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>

namespace ckpt::detail::boost_file {

// Whitespace as std::isspace in the "C" locale, which Boost's reader skips between digits.
constexpr bool is_base64_space(char c) noexcept {
  return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}
// How many characters of `text` are whitespace (written so the compiler vectorizes it: listing
// a 1 GiB text archive scans every character once).
std::size_t count_base64_spaces(std::span<const char> text) noexcept;

class Base64Decoder {
 public:
  // Decodes into `out` until it is full.
  explicit Base64Decoder(std::span<std::byte> out) : out_(out) {}

  // Feeds the next characters; returns how many were used (all of them, unless `out` filled up
  // or a character is not base64 or whitespace: then bad() says so and the count is its index).
  std::size_t feed(std::span<const char> text);
  bool bad() const noexcept { return bad_; }
  bool full() const noexcept { return done_ == out_.size(); }
  std::size_t size() const noexcept { return out_.size(); }
  // Goes on decoding into `out` (the bits of a partly decoded group carry over).
  void retarget(std::span<std::byte> out) noexcept {
    out_ = out;
    done_ = 0;
  }

 private:
  std::span<std::byte> out_;
  std::size_t done_ = 0;
  std::uint32_t bits_ = 0;
  int nbits_ = 0;
  bool bad_ = false;
};

// Encodes `data` exactly as Boost's text and xml archives write binary data
// (basic_text_oprimitive::save_binary): nothing for no data; otherwise a newline, base64 digits in
// lines of 76 joined by '\n', no newline after the last digit, then '=' padding to a whole group. Boost's encoder is an
// iterator pipeline writing one character at a time through ostream::put (about 100 MB/s on the
// development VM, most of the time of writing a text archive); this one encodes whole lines
// from a table. `sink` receives the text in blocks of about 1 MiB. Tests compare its output with
// Boost's own archives byte for byte.
void encode_boost_base64(std::span<const std::byte> data, const std::function<void(std::span<const char>)>& sink);

}  // namespace ckpt::detail::boost_file

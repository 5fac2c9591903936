#include "numpy/npy.h"

#include <algorithm>
#include <cstring>

#include "util/bytes.h"

namespace ckpt::detail::npy {
namespace {

constexpr char kMagic[] = "\x93NUMPY";

// A cursor over the header text with the few productions numpy's writer uses.
class Literal {
 public:
  Literal(std::string_view text, const std::string& where) : text_(text), where_(where) {}
  void space() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\n' || text_[pos_] == '\t')) ++pos_;
  }
  bool take(char c) {
    space();
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  void expect(char c, const char* what) {
    if (!take(c)) bad(fmt::format("expected {}", what));
  }
  std::string string() {
    space();
    if (pos_ >= text_.size() || (text_[pos_] != '\'' && text_[pos_] != '"')) bad("expected a quoted string");
    const char quote_char = text_[pos_++];
    const auto end = text_.find(quote_char, pos_);
    if (end == std::string_view::npos) bad("unterminated string");
    std::string out(text_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return out;
  }
  bool boolean() {
    space();
    if (text_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (text_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    bad("expected True or False");
  }
  std::int64_t integer() {
    space();
    std::int64_t v = 0;
    const std::size_t start = pos_;
    while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') {
      if (v > (INT64_MAX - 9) / 10) bad("a dimension too large");
      v = v * 10 + (text_[pos_++] - '0');
    }
    if (pos_ < text_.size() && text_[pos_] == 'L') ++pos_;  // Python 2 longs
    if (pos_ == start) bad("expected a dimension");
    return v;
  }
  // Only padding (spaces, then the newline) may follow the dict, as numpy writes and requires.
  void expect_end() {
    space();
    if (pos_ != text_.size()) bad("text after the header's dict");
  }
  [[noreturn]] void bad(const std::string& what) const {
    fail(ErrorCode::format, where_, "npy header at character {}: {}", pos_, what);
  }

 private:
  std::string_view text_;
  const std::string& where_;
  std::size_t pos_ = 0;
};

struct Code {
  char kind;
  std::size_t size;
  DType dtype;
};
constexpr Code kCodes[] = {
    {'f', 8, DType::float64}, {'f', 4, DType::float32}, {'f', 2, DType::float16}, {'i', 8, DType::int64},
    {'i', 4, DType::int32},   {'i', 2, DType::int16},   {'i', 1, DType::int8},    {'u', 8, DType::uint64},
    {'u', 4, DType::uint32},  {'u', 2, DType::uint16},  {'u', 1, DType::uint8},   {'b', 1, DType::bool_},
    {'c', 8, DType::complex64}, {'c', 16, DType::complex128},
};

}  // namespace

std::optional<std::uint64_t> header_end(std::span<const std::byte> b) {
  if (b.size() < 10 || std::memcmp(b.data(), kMagic, 6) != 0) return std::nullopt;
  const auto major = static_cast<unsigned>(b[6]);
  if (major == 1) return 10 + load_le<std::uint16_t>(b.data() + 8);
  if ((major == 2 || major == 3) && b.size() >= 12) return 12 + std::uint64_t{load_le<std::uint32_t>(b.data() + 8)};
  return std::nullopt;
}

Header parse_header(std::span<const std::byte> bytes, const std::string& where, std::size_t max_rank) {
  if (bytes.size() < 10 || std::memcmp(bytes.data(), kMagic, 6) != 0)
    fail(ErrorCode::format, where, "not a .npy array (no \\x93NUMPY magic)");
  const auto major = static_cast<unsigned>(bytes[6]);
  if (major != 1 && major != 2 && major != 3)
    fail(ErrorCode::unsupported, where, "npy version {}.{} is not supported (1.0 to 3.0 are)", major,
         static_cast<unsigned>(bytes[7]));
  const auto end = header_end(bytes);
  if (!end) fail(ErrorCode::format, where, "npy preamble cut short");
  const std::uint64_t start = major == 1 ? 10 : 12, length = *end - start;
  if (length > bytes.size() - start)
    fail(ErrorCode::format, where, "npy header of {} bytes runs past the {} bytes there", length, bytes.size() - start);
  Header h;
  h.data_offset = start + length;
  Literal lit({reinterpret_cast<const char*>(bytes.data() + start), static_cast<std::size_t>(length)}, where);
  bool seen_descr = false, seen_order = false, seen_shape = false;
  lit.expect('{', "'{'");
  while (!lit.take('}')) {
    const std::string key = lit.string();
    lit.expect(':', "':'");
    // A key given twice would be read one way here and another by numpy (the last wins there).
    if ((key == "descr" && seen_descr) || (key == "fortran_order" && seen_order) || (key == "shape" && seen_shape))
      lit.bad(fmt::format("key {} appears twice", quote(key)));
    if (key == "descr") {
      const std::string d = lit.string();
      if (d.size() < 3 || (d[0] != '<' && d[0] != '>' && d[0] != '|' && d[0] != '='))
        fail(ErrorCode::unsupported, where, "npy dtype {} is not supported", quote(d));
      const std::size_t size = static_cast<std::size_t>(std::atoi(d.c_str() + 2));
      const auto* code = std::find_if(std::begin(kCodes), std::end(kCodes),
                                      [&](const Code& c) { return c.kind == d[1] && c.size == size; });
      if (code == std::end(kCodes) || d.find_first_not_of("0123456789", 2) != std::string::npos)
        fail(ErrorCode::unsupported, where, "npy dtype {} is not supported", quote(d));
      h.dtype = code->dtype;
      h.big_endian = d[0] == '>' && size > 1;
      seen_descr = true;
    } else if (key == "fortran_order") {
      h.fortran_order = lit.boolean();
      seen_order = true;
    } else if (key == "shape") {
      lit.expect('(', "'(' starting the shape");
      while (!lit.take(')')) {
        h.shape.push_back(lit.integer());
        if (h.shape.size() > max_rank) lit.bad(fmt::format("more than {} dimensions", max_rank));
        if (!lit.take(',')) {
          lit.expect(')', "')' ending the shape");
          break;
        }
      }
      seen_shape = true;
    } else {
      lit.bad(fmt::format("unknown key {}", quote(key)));
    }
    if (!lit.take(',')) {
      lit.expect('}', "'}'");
      break;
    }
  }
  lit.expect_end();
  if (!seen_descr || !seen_order || !seen_shape)
    fail(ErrorCode::format, where, "npy header lacks one of 'descr', 'fortran_order', 'shape'");
  return h;
}

std::string descr(DType dtype) {
  switch (dtype) {
    case DType::bfloat16: return "<u2";
    case DType::float8_e4m3fn:
    case DType::float8_e5m2: return "|u1";
    case DType::bool_: return "|b1";
    case DType::int8: return "|i1";
    case DType::uint8: return "|u1";
    default: break;
  }
  const auto* code =
      std::find_if(std::begin(kCodes), std::end(kCodes), [&](const Code& c) { return c.dtype == dtype; });
  return fmt::format("<{}{}", code->kind, code->size);
}

std::string make_header(DType dtype, const Shape& shape, std::uint64_t offset_in_file) {
  std::string dims;
  for (auto d : shape) dims += fmt::format("{}, ", d);
  if (shape.size() > 1) dims.resize(dims.size() - 2);  // (3, 4); but (3,) and ()
  else if (shape.size() == 1) dims.resize(dims.size() - 1);
  std::string header = fmt::format("{{'descr': '{}', 'fortran_order': False, 'shape': ({}), }}", descr(dtype), dims);
  const bool v2 = header.size() + 1 + 10 + 64 > 0xffff;
  const std::uint64_t preamble = v2 ? 12 : 10;
  std::uint64_t total = offset_in_file + preamble + header.size() + 1;  // + '\n'
  header.append(static_cast<std::size_t>((64 - total % 64) % 64), ' ');
  header += '\n';
  std::string out(kMagic, 6);
  out += static_cast<char>(v2 ? 2 : 1);
  out += '\0';
  const auto n = static_cast<std::uint32_t>(header.size());
  out.append(reinterpret_cast<const char*>(&n), v2 ? 4 : 2);
  return out + header;
}

}  // namespace ckpt::detail::npy

#include "ckpt_h5/schema.h"

#include <fmt/format.h>

namespace ckpt::detail::ckpt_h5 {

std::string encode_link_name(std::string_view key) {
  if (key.empty()) return "%";
  if (key == ".") return "%2E";
  std::string out;
  out.reserve(key.size());
  for (char c : key) {
    switch (c) {
      case '%': out += "%25"; break;
      case '/': out += "%2F"; break;
      case '\0': out += "%00"; break;
      default: out += c;
    }
  }
  return out;
}

bool stored_as_raw_bytes(DType dtype) {
  return dtype == DType::float8_e4m3fn || dtype == DType::float8_e5m2;
}

h5::Handle file_type(DType dtype) {
  using h5::Predefined;
  switch (dtype) {
    case DType::float64: return h5::predefined(Predefined::f64);
    case DType::float32: return h5::predefined(Predefined::f32);
    // IEEE binary16: sign bit 15, exponent bits 10-14, mantissa bits 0-9, bias 15 (h5py's type).
    case DType::float16: return h5::custom_float(2, 15, 10, 5, 10, 15);
    // bfloat16: the top half of a float32: exponent bits 7-14, mantissa bits 0-6, bias 127.
    case DType::bfloat16: return h5::custom_float(2, 15, 7, 8, 7, 127);
    case DType::float8_e4m3fn:
    case DType::float8_e5m2:
    case DType::uint8: return h5::predefined(Predefined::u8);
    case DType::int64: return h5::predefined(Predefined::i64);
    case DType::int32: return h5::predefined(Predefined::i32);
    case DType::int16: return h5::predefined(Predefined::i16);
    case DType::int8: return h5::predefined(Predefined::i8);
    case DType::uint64: return h5::predefined(Predefined::u64);
    case DType::uint32: return h5::predefined(Predefined::u32);
    case DType::uint16: return h5::predefined(Predefined::u16);
    case DType::bool_: return h5::bool_enum();
    case DType::complex64: return h5::complex_compound(h5::predefined(Predefined::f32));
    case DType::complex128: return h5::complex_compound(h5::predefined(Predefined::f64));
  }
  return h5::predefined(Predefined::u8);
}

}  // namespace ckpt::detail::ckpt_h5

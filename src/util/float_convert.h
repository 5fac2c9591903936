// Decoding of the 16- and 8-bit float formats to float. Hand-written: no Debian C/C++ package
// provides float8 decoding, and these are a few lines each (exact for every bit pattern).
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>

namespace ckpt::detail {

inline float bfloat16_to_float(std::uint16_t bits) noexcept {
  return std::bit_cast<float>(static_cast<std::uint32_t>(bits) << 16);
}

// A float with sign s, biased exponent e (e_bits wide), mantissa m (m_bits wide); IEEE-style
// subnormals. Inf/NaN are the caller's business.
inline float decode_small_float(unsigned s, unsigned e, unsigned m, int m_bits, int bias) noexcept {
  float value = e == 0 ? std::ldexp(static_cast<float>(m), 1 - bias - m_bits)
                       : std::ldexp(static_cast<float>(m | (1u << m_bits)), static_cast<int>(e) - bias - m_bits);
  return s ? -value : value;
}

inline float float16_to_float(std::uint16_t bits) noexcept {
  const unsigned s = bits >> 15, e = (bits >> 10) & 0x1f, m = bits & 0x3ff;
  if (e == 0x1f) return m ? std::numeric_limits<float>::quiet_NaN()
                          : (s ? -std::numeric_limits<float>::infinity() : std::numeric_limits<float>::infinity());
  return decode_small_float(s, e, m, 10, 15);
}

// float8_e4m3fn: no infinities; S.1111.111 is NaN.
inline float float8_e4m3fn_to_float(std::uint8_t bits) noexcept {
  const unsigned s = bits >> 7, e = (bits >> 3) & 0xf, m = bits & 0x7;
  if (e == 0xf && m == 0x7) return std::numeric_limits<float>::quiet_NaN();
  return decode_small_float(s, e, m, 3, 7);
}

// float8_e5m2: IEEE-like, with infinities and NaNs.
inline float float8_e5m2_to_float(std::uint8_t bits) noexcept {
  const unsigned s = bits >> 7, e = (bits >> 2) & 0x1f, m = bits & 0x3;
  if (e == 0x1f) return m ? std::numeric_limits<float>::quiet_NaN()
                          : (s ? -std::numeric_limits<float>::infinity() : std::numeric_limits<float>::infinity());
  return decode_small_float(s, e, m, 2, 15);
}

}  // namespace ckpt::detail

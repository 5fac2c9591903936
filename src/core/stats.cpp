#include "ckpt/stats.h"

#include <cmath>
#include <complex>
#include <cstring>

#include "util/bytes.h"
#include "util/float_convert.h"

namespace ckpt {
namespace {

template <typename T>
T load(const std::byte* base, std::uint64_t index) {
  return detail::load_le<T>(base + index * sizeof(T));
}

}  // namespace

double element_as_double(const Tensor& tensor, std::uint64_t i) {
  const std::byte* p = tensor.bytes().data();
  switch (tensor.dtype()) {
    case DType::float64: return load<double>(p, i);
    case DType::float32: return load<float>(p, i);
    case DType::float16: return detail::float16_to_float(load<std::uint16_t>(p, i));
    case DType::bfloat16: return detail::bfloat16_to_float(load<std::uint16_t>(p, i));
    case DType::float8_e4m3fn: return detail::float8_e4m3fn_to_float(load<std::uint8_t>(p, i));
    case DType::float8_e5m2: return detail::float8_e5m2_to_float(load<std::uint8_t>(p, i));
    case DType::int64: return static_cast<double>(load<std::int64_t>(p, i));
    case DType::int32: return load<std::int32_t>(p, i);
    case DType::int16: return load<std::int16_t>(p, i);
    case DType::int8: return load<std::int8_t>(p, i);
    case DType::uint64: return static_cast<double>(load<std::uint64_t>(p, i));
    case DType::uint32: return load<std::uint32_t>(p, i);
    case DType::uint16: return load<std::uint16_t>(p, i);
    case DType::uint8: return load<std::uint8_t>(p, i);
    case DType::bool_: return load<std::uint8_t>(p, i) != 0 ? 1.0 : 0.0;
    case DType::complex64: return load<float>(p, 2 * i);
    case DType::complex128: return load<double>(p, 2 * i);
  }
  return 0;
}

TensorStats compute_stats(const Tensor& tensor) {
  TensorStats s;
  // Welford's update keeps mean and variance accurate over millions of values.
  double mean = 0, m2 = 0;
  const std::byte* p = tensor.bytes().data();
  for (std::uint64_t i = 0; i < tensor.numel(); ++i) {
    double v;
    if (tensor.dtype() == DType::complex64)
      v = std::abs(std::complex<double>(load<float>(p, 2 * i), load<float>(p, 2 * i + 1)));
    else if (tensor.dtype() == DType::complex128)
      v = std::abs(std::complex<double>(load<double>(p, 2 * i), load<double>(p, 2 * i + 1)));
    else
      v = element_as_double(tensor, i);
    if (std::isnan(v)) { ++s.nan_count; continue; }
    if (std::isinf(v)) { ++s.inf_count; continue; }
    if (s.count == 0) s.min = s.max = v;
    s.min = std::min(s.min, v);
    s.max = std::max(s.max, v);
    ++s.count;
    const double delta = v - mean;
    mean += delta / static_cast<double>(s.count);
    m2 += delta * (v - mean);
  }
  s.mean = mean;
  s.std = s.count ? std::sqrt(m2 / static_cast<double>(s.count)) : 0;
  return s;
}

namespace {

Metadata real_value(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  return v;
}

Metadata value_at(const Tensor& t, std::uint64_t i) {
  const std::byte* p = t.bytes().data();
  switch (t.dtype()) {
    case DType::int64: return load<std::int64_t>(p, i);
    case DType::int32: return load<std::int32_t>(p, i);
    case DType::int16: return load<std::int16_t>(p, i);
    case DType::int8: return load<std::int8_t>(p, i);
    case DType::uint64: return load<std::uint64_t>(p, i);
    case DType::uint32: return load<std::uint32_t>(p, i);
    case DType::uint16: return load<std::uint16_t>(p, i);
    case DType::uint8: return load<std::uint8_t>(p, i);
    case DType::bool_: return load<std::uint8_t>(p, i) != 0;
    case DType::complex64: return Metadata::array({real_value(load<float>(p, 2 * i)), real_value(load<float>(p, 2 * i + 1))});
    case DType::complex128:
      return Metadata::array({real_value(load<double>(p, 2 * i)), real_value(load<double>(p, 2 * i + 1))});
    default: return real_value(element_as_double(t, i));
  }
}

// The values of dimensions [k, rank) from element `first` on, as nested arrays.
Metadata nested(const Tensor& t, std::size_t k, std::uint64_t first, std::uint64_t stride) {
  if (k == t.rank()) return value_at(t, first);
  const auto n = static_cast<std::uint64_t>(t.shape()[k]);
  const std::uint64_t inner = n == 0 ? 0 : stride / n;
  Metadata out = Metadata::array();
  for (std::uint64_t i = 0; i < n; ++i) out.push_back(nested(t, k + 1, first + i * inner, inner));
  return out;
}

}  // namespace

Metadata tensor_values(const Tensor& tensor) { return nested(tensor, 0, 0, tensor.numel()); }

}  // namespace ckpt

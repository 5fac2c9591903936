#include "ckpt/diff.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <complex>
#include <map>

#include "ckpt/stats.h"
#include "util/bytes.h"

namespace ckpt {
namespace {

std::string key_of(const TensorInfo& info) {
  return info.role == Role::extra ? info.section + "/" + info.name : info.name;
}

std::string role_text(const TensorInfo& info) {
  switch (info.role) {
    case Role::parameter: return "parameter";
    case Role::buffer:
      return "buffer (" + info.collection + (info.persistent ? ")" : ", non-persistent)");
    case Role::extra: return "extra (" + info.section + ")";
  }
  return "?";
}

std::complex<double> element(const Tensor& t, std::uint64_t i) {
  if (t.dtype() == DType::complex64) {
    const std::byte* p = t.bytes().data() + i * 8;
    return {detail::load_le<float>(p), detail::load_le<float>(p + 4)};
  }
  if (t.dtype() == DType::complex128) {
    const std::byte* p = t.bytes().data() + i * 16;
    return {detail::load_le<double>(p), detail::load_le<double>(p + 8)};
  }
  return element_as_double(t, i);
}

bool is_nan(std::complex<double> v) { return std::isnan(v.real()) || std::isnan(v.imag()); }

void compare(const Tensor& a, const Tensor& b, const DiffOptions& options, TensorDiff& d) {
  d.compared = true;
  // Bitwise equality first: the common case, and exact for 64-bit integers too.
  if (a.dtype() == b.dtype() && std::equal(a.bytes().begin(), a.bytes().end(), b.bytes().begin(), b.bytes().end()))
    return;
  const std::uint64_t n = shape_numel(a.shape());
  for (std::uint64_t i = 0; i < n; ++i) {
    const auto x = element(a, i), y = element(b, i);
    if (is_nan(x) || is_nan(y)) {
      if (!(is_nan(x) && is_nan(y))) {
        ++d.mismatched;
        d.max_abs = std::numeric_limits<double>::quiet_NaN();
      }
      continue;
    }
    if (std::isinf(x.real()) || std::isinf(y.real()) || std::isinf(x.imag()) || std::isinf(y.imag())) {
      if (x != y) {
        ++d.mismatched;
        d.max_abs = std::numeric_limits<double>::infinity();
      }
      continue;
    }
    const double abs = std::abs(x - y), mag = std::abs(y);
    if (!std::isnan(d.max_abs)) d.max_abs = std::max(d.max_abs, abs);
    if (mag > 0) d.max_rel = std::max(d.max_rel, abs / mag);
    else if (abs > 0) d.max_rel = std::numeric_limits<double>::infinity();
    if (abs > options.atol + options.rtol * mag) ++d.mismatched;
  }
}

}  // namespace

bool TensorDiff::same() const {
  return role_a == role_b && dtype_a == dtype_b && shape_a == shape_b && compared && mismatched == 0;
}

bool DiffResult::equal() const {
  return only_in_a.empty() && only_in_b.empty() &&
         std::all_of(tensors.begin(), tensors.end(), [](const TensorDiff& d) { return d.same(); });
}

DiffResult diff(Source& a, Source& b, const DiffOptions& options) {
  DiffResult result;
  std::map<std::string, std::size_t> in_b;
  for (std::size_t i = 0; i < b.tensors().size(); ++i) in_b.emplace(key_of(b.tensors()[i]), i);
  std::map<std::string, bool> seen;
  for (std::size_t i = 0; i < a.tensors().size(); ++i) {
    const TensorInfo& ia = a.tensors()[i];
    const std::string key = key_of(ia);
    const auto it = in_b.find(key);
    if (it == in_b.end()) {
      result.only_in_a.push_back(key);
      continue;
    }
    seen[key] = true;
    const TensorInfo& ib = b.tensors()[it->second];
    TensorDiff d;
    d.key = key;
    d.role_a = role_text(ia);
    d.role_b = role_text(ib);
    d.dtype_a = ia.dtype;
    d.dtype_b = ib.dtype;
    d.shape_a = ia.shape;
    d.shape_b = ib.shape;
    if (ia.shape == ib.shape) compare(a.read(i), b.read(it->second), options, d);
    result.tensors.push_back(std::move(d));
  }
  for (const auto& info : b.tensors())
    if (!seen.count(key_of(info))) result.only_in_b.push_back(key_of(info));
  result.metadata_equal = a.metadata() == b.metadata();
  return result;
}

}  // namespace ckpt

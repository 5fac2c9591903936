// The .npy array format (numpy/lib/format.py): magic "\x93NUMPY", version, header length, a
// header that is a Python dict literal {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
// padded with spaces to a multiple of 64 bytes, then the data.
//
// The header is parsed by hand: it is a tiny, fixed subset of Python literal syntax (strings,
// True/False, tuples of integers), no Debian package parses it for C++, and a general Python
// literal parser would accept far more than numpy ever writes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include "ckpt/dtype.h"
#include "ckpt/tensor.h"

namespace ckpt::detail::npy {

struct Header {
  DType dtype = DType::float32;
  bool big_endian = false;  // descr '>': bytes are swapped on read
  bool fortran_order = false;
  Shape shape;
  std::uint64_t data_offset = 0;  // from the start of the .npy bytes
};

// Bytes from the start of a .npy to the end of its header (magic, version, length field and
// header), read from its first 12 bytes; nullopt when they are not a .npy preamble.
std::optional<std::uint64_t> header_end(std::span<const std::byte> first_bytes);

// Parses the preamble of `bytes` (which may be only the start of the .npy data). `where` names
// the file (and entry) in errors; `max_rank` caps the shape.
Header parse_header(std::span<const std::byte> bytes, const std::string& where, std::size_t max_rank);

// The numpy descr ckpt writes for a dtype: bfloat16 as '<u2' and float8 as '|u1' (numpy has
// neither; the dtype rides along in ckpt's convention, format-spec/conventions.md §6).
std::string descr(DType dtype);

// A version 1.0 preamble (2.0 when the header needs more than 65535 bytes) for a C-order array,
// padded so that `offset_in_file` + its length is a multiple of 64.
std::string make_header(DType dtype, const Shape& shape, std::uint64_t offset_in_file = 0);

}  // namespace ckpt::detail::npy

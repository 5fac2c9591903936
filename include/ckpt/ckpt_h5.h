// ckpt-h5: the native format, an HDF5 file with separate parameter and buffer sections.
// Specification: format-spec/ckpt-h5.md. Outline of a file (version 1.0):
//
//   /                      attrs ckpt_format = "ckpt-h5", ckpt_version = uint32[2] {major, minor}
//   /index                 scalar fixed-length UTF-8 string: JSON {"tensors": [...], "metadata"}
//                          (one read lists every tensor: name, section, dtype, shape, checksum)
//   /parameters/<key>      one dataset per parameter, named by the escaped key
//   /buffers/<key>         one dataset per buffer
//   /sections/<s>/<key>    further sections (optimizer state, ...)
//
// Datasets use native HDF5 types (bfloat16 as a custom float, bool as an int8 enum, complex as an
// {r, i} compound) so h5dump and h5py show true values; float8 types are stored as uint8 with a
// `ckpt_dtype` attribute. Uncompressed data is contiguous and aligned (read zero-copy through
// mmap); compressed data is chunked, byte-shuffled, then zstd (HDF5 filter 32015).
#pragma once

#include "ckpt/api.h"

#include <filesystem>
#include <memory>

#include "ckpt/io.h"

CKPT_API_BEGIN

namespace ckpt {

inline constexpr unsigned kCkptH5VersionMajor = 1;
inline constexpr unsigned kCkptH5VersionMinor = 0;
// The HDF5 filter id registered for zstd.
inline constexpr int kZstdFilterId = 32015;

std::unique_ptr<Reader> open_ckpt_h5(const std::filesystem::path& path,
                                     const ReadOptions& options = {});
void write_ckpt_h5(Source& source, const std::filesystem::path& path,
                   const WriteOptions& options = {});

// Register the zstd filter with the HDF5 library in this process (idempotent; the reader and
// writer call it). Lets plain H5Dread calls of the program's own decode zstd datasets.
void register_zstd_filter();

}  // namespace ckpt

CKPT_API_END

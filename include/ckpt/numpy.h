// NumPy files: .npy (one array) and .npz (a zip of .npy entries, stored by numpy.savez, deflated
// by numpy.savez_compressed). numpy.load reads what ckpt writes exactly.
//
// Roles (format-spec/conventions.md §6): each .npz entry's zip comment holds its role, section,
// collection, persistence and ckpt dtype as JSON, and the archive comment holds the metadata;
// numpy ignores both. An entry without a comment gets inferred roles. numpy has no bfloat16 or
// float8: those are written as uint16 / uint8 bits, the entry comment naming the real dtype.
// A .npy file holds one array, read as a parameter named after the file's stem.
#pragma once

#include "ckpt/api.h"

#include <filesystem>
#include <memory>

#include "ckpt/io.h"

CKPT_API_BEGIN

namespace ckpt {

std::unique_ptr<Reader> open_numpy(const std::filesystem::path& path, const ReadOptions& options = {});

// .npz (stored entries, data 64-byte aligned; deflated with Compression::deflate), or .npy when `path` ends in .npy (the source must
// then hold exactly one tensor). Fails before creating anything when metadata exceeds the 64 KiB
// zip comment that carries it.
void write_numpy(Source& source, const std::filesystem::path& path, const WriteOptions& options = {});

}  // namespace ckpt

CKPT_API_END

// safetensors (huggingface): u64 little-endian header length, a JSON header, then the data.
// Roles survive through `__metadata__` by the convention in format-spec/conventions.md; a file
// without it gets inferred roles (see infer_roles in ckpt/roles.h).
#pragma once

#include <filesystem>
#include <memory>

#include "ckpt/io.h"

namespace ckpt {

std::unique_ptr<Reader> open_safetensors(const std::filesystem::path& path,
                                         const ReadOptions& options = {});
// Fails before creating any file if a tensor's dtype has no safetensors code (complex128).
void write_safetensors(Source& source, const std::filesystem::path& path,
                       const WriteOptions& options = {});

}  // namespace ckpt

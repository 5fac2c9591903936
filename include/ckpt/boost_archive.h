// Boost.Serialization archives as checkpoint files: one ckpt StateDict saved under the name
// "state_dict" in a text, xml or binary archive (the layout of ckpt/boost_serialization.h,
// format-spec/conventions.md §3), so training code that already writes Boost archives can hand
// them to checkpoint-convert. Archives are streams: the reader lists one in a single pass that
// steps over tensor data (allocating no more than the file's size), then reads each tensor where
// it lies: zero-copy from binary archives, through Boost's base64 decoder from text and xml. The
// writer streams one tensor at a time. Binary archives are not portable across architectures
// (Boost writes native sizes and byte order).
#pragma once

#include "ckpt/api.h"

#include <filesystem>
#include <memory>

#include "ckpt/io.h"

CKPT_API_BEGIN

namespace ckpt {

std::unique_ptr<Reader> open_boost(const std::filesystem::path& path, const ReadOptions& options = {});
void write_boost_text(Source& source, const std::filesystem::path& path, const WriteOptions& options = {});
void write_boost_xml(Source& source, const std::filesystem::path& path, const WriteOptions& options = {});
void write_boost_binary(Source& source, const std::filesystem::path& path, const WriteOptions& options = {});

}  // namespace ckpt

CKPT_API_END

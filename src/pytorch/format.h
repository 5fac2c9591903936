// The pytorch folder's entry points for the rest of ckpt.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "core/format_reader.h"

namespace ckpt::detail::pytorch {

// A zip whose first entry lies in one folder as torch.save and torch.jit.save write them, or the
// legacy format's pickled magic number.
bool sniff(std::span<const std::byte> head, std::uint64_t file_size);
std::unique_ptr<FormatReader> open_reader(std::shared_ptr<const ByteSource> source, const ReadOptions& options);

// One object that torch.save wrote (an item of a distributed checkpoint): a tensor, listed by
// `tensor` as its one tensor (named ""), or a value holding no tensor, as metadata. Throws
// unsupported for anything else (a dict of tensors, a pickle that calls what ckpt does not
// allow), format for a file that is not a torch.save zip.
struct SavedObject {
  std::unique_ptr<FormatReader> tensor;
  std::optional<Metadata> value;
  std::vector<Metadata> tuples;  // key paths, within the value, of arrays that were tuples
};
SavedObject open_saved_object(std::shared_ptr<const ByteSource> source, const ReadOptions& options);

}  // namespace ckpt::detail::pytorch

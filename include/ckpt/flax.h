// Flax msgpack checkpoints (flax.serialization.to_bytes / msgpack_serialize): a msgpack map of
// nested maps, arrays as msgpack extension values (type 1: [shape, dtype name, bytes]; type 3:
// numpy scalars), arrays over 2**30 bytes split into `__msgpack_chunked_array__` chunks.
//
// Roles (format-spec/conventions.md §5): with a top-level `params` collection, `params` holds
// the parameters and every other top-level collection holding arrays (`batch_stats`, `cache`,
// ...) holds buffers of that collection; `opt_state` and the sections named in a `ckpt.roles`
// entry are extra sections; plain values are metadata. A file without `params` (a bare params
// tree) is all parameters. Names are the dotted paths of the nested maps
// ("Dense_0.kernel"); writing splits them on dots again.
#pragma once

#include "ckpt/api.h"

#include <filesystem>
#include <memory>

#include "ckpt/io.h"

CKPT_API_BEGIN

namespace ckpt {

std::unique_ptr<Reader> open_flax(const std::filesystem::path& path, const ReadOptions& options = {});

// Writes {collection: nested dict} (params, each buffer collection, extra sections, metadata)
// that flax.serialization.msgpack_restore reads back as the variables dict; a file read as a bare
// params tree is written back bare. Every dtype ckpt has is written under its numpy name.
void write_flax(Source& source, const std::filesystem::path& path, const WriteOptions& options = {});

// The metadata key recording that a file was a bare params tree: {"collections": false}.
inline constexpr std::string_view kFlaxShapeKey = "ckpt.flax";

}  // namespace ckpt

CKPT_API_END

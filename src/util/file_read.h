// Reading a byte range of a file into memory, optionally hashing it on the way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace ckpt::detail {

// pread()s `out.size()` bytes at `offset` of `fd` into `out`. With `hash`, also returns the XXH3-64
// of those bytes, computed by a helper thread one block behind the reads (so verifying costs
// about nothing on a machine with two cores). Throws io naming `file` on a failed or short read.
std::optional<std::uint64_t> read_at(int fd, std::uint64_t offset, std::span<std::byte> out, bool hash,
                                     const std::string& file);

}  // namespace ckpt::detail

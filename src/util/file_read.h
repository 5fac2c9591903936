// Reading a byte range of a file into memory, optionally hashing it on the way.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace ckpt::detail {

// What read_at computes over the bytes it reads.
enum class Digest { none, xxh3_64, crc32 };

// pread()s `out.size()` bytes at `offset` of `fd` into `out`. With a digest, also returns it: the
// XXH3-64 of those bytes, or their CRC-32 continued from `crc` (a zip entry's checksum, util/checksum.h),
// computed by a helper thread one block behind the reads (so verifying costs about nothing on a
// machine with two cores). Throws io naming `file` on a failed or short read.
std::optional<std::uint64_t> read_at(int fd, std::uint64_t offset, std::span<std::byte> out, Digest digest,
                                     const std::string& file, std::uint32_t crc = 0);
inline std::optional<std::uint64_t> read_at(int fd, std::uint64_t offset, std::span<std::byte> out, bool hash,
                                            const std::string& file) {
  return read_at(fd, offset, out, hash ? Digest::xxh3_64 : Digest::none, file);
}

}  // namespace ckpt::detail

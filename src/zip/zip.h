// Reading zip archives (torch.save files and .npz are zips) from a mapped file.
//
// Hand-written rather than through libzip: zero-copy needs each entry's data offset in the file,
// which libzip does not expose, and the records are few and fixed-size (PKWARE APPNOTE 4.3/4.5,
// zip64 included). Deflated entries are inflated with zlib.
//
// Every offset and size read from the archive is checked against the file before use; inflating
// never allocates more than the entry claims, and a claim beyond what deflate can produce from
// the compressed bytes (1032:1) or beyond ZipLimits is refused before any allocation.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "ckpt/io.h"
#include "core/location.h"

namespace ckpt::detail::zip {

struct Entry {
  std::string name;
  std::uint16_t method = 0;  // 0 stored, 8 deflated
  std::uint32_t crc32 = 0;
  std::uint64_t compressed_size = 0;
  std::uint64_t size = 0;          // uncompressed
  std::uint64_t local_offset = 0;  // of the local header in the file
  std::string comment;             // the central directory's comment for the entry
  // Where the next record starts (another entry's local header, or the central directory): the
  // entry's header, data and data descriptor must end before it.
  std::uint64_t next_record = 0;
};

struct ZipLimits {
  std::uint64_t max_entries = 1u << 20;
  std::uint64_t max_inflated_bytes = 1ull << 34;  // one deflated entry, after inflating
};

class Archive {
 public:
  // Parses the end records and the central directory of `file` (the whole archive, mapped).
  // Local headers are read when an entry's data is first asked for (data_offset): touching
  // every one at open would fault in a page per entry, spread over the whole file, which is
  // most of the cost of opening a large torch.save file. Throws ckpt::Error (format/unsupported)
  // naming `name`.
  Archive(std::span<const std::byte> file, std::string name, const ZipLimits& limits = {});

  const std::vector<Entry>& entries() const noexcept { return entries_; }
  const std::string& comment() const noexcept { return comment_; }  // the archive's comment
  const Entry* find(std::string_view name) const;

  // Where the entry's (compressed) data starts in the file, from its local header, checked
  // against the central directory: signature, name and method; CRC-32 and sizes when the local
  // header has them, else a data descriptor with the CRC-32 right after the data; and the data
  // lies inside the file, before the next record.
  std::uint64_t data_offset(const Entry& entry) const;

  // The bytes of a stored entry, in place (no CRC check: that would read them all).
  std::span<const std::byte> stored(const Entry& entry) const;
  // The entry's CRC-32 for deliver() (core/location.h) to check, one object per entry so that
  // tensors sharing an entry check it once. Stored entries: the range of their data; deflated
  // ones are checked by read_range when it inflates to the end.
  std::shared_ptr<StreamCrc> crc_check(const Entry& entry) const;
  // Bytes [skip, skip + out.size()) of an entry, inflated if need be (inflating no further, and
  // dropping the first `skip` bytes). When they run to the entry's end, the CRC-32 of the whole
  // entry is checked (integrity error) and so is the end of its deflate stream.
  void read_range(const Entry& entry, std::uint64_t skip, std::span<std::byte> out) const;
  // The first `max_bytes` bytes of an entry (all of it when shorter, then CRC-checked).
  std::vector<std::byte> read_prefix(const Entry& entry, std::size_t max_bytes) const;
  // The bytes of any entry, inflated if need be; the CRC-32 is checked.
  std::vector<std::byte> read(const Entry& entry) const;

 private:
  const std::byte* at(std::uint64_t offset, std::uint64_t size, const char* what) const;
  std::span<const std::byte> file_;
  std::string name_;
  ZipLimits limits_;
  std::vector<Entry> entries_;
  std::string comment_;
  std::unordered_map<std::string_view, std::size_t> by_name_;
  mutable std::vector<std::shared_ptr<StreamCrc>> crc_checks_;  // per entry, when first asked for
};

}  // namespace ckpt::detail::zip

namespace ckpt::detail {
class AtomicFile;
}

namespace ckpt::detail::zip {

// Writes a zip of stored (uncompressed) entries through an AtomicFile, each entry's data aligned
// to `alignment` bytes in the file (padding in the local header's extra field, as torch.save
// does), so readers can map the data in place. Sizes must be known when an entry starts; the
// CRC-32 is computed as the data streams and patched into the local header. zip64 records are
// written when an offset or size needs them.
class Writer {
 public:
  Writer(AtomicFile& file, std::size_t alignment);
  // `comment` (at most 65535 bytes) goes to the entry's central directory record.
  void begin(const std::string& name, std::uint64_t size, const std::string& comment = {});
  void write(std::span<const std::byte> data);
  // The same data, copied file to file where it also lies in one (AtomicFile::write).
  void write(std::span<const std::byte> data, const std::optional<Source::FileSpan>& from);
  void end();
  // A deflated entry (zlib level 6, as Python's zipfile) of `parts` concatenated, compressed in
  // memory first so its sizes are known when the header is written; not aligned.
  void add_deflated(const std::string& name, const std::vector<std::span<const std::byte>>& parts,
                    const std::string& comment = {});
  // Writes the central directory and end records, with the archive comment (at most 65535 bytes).
  void finish(const std::string& comment = {});

 private:
  struct Written {
    std::string name;
    std::uint64_t offset, size;
    std::uint32_t crc;
    std::string comment;
    std::uint16_t method = 0;         // 0 stored, 8 deflated
    std::uint64_t compressed = 0;     // deflated: bytes in the file
  };
  void put(std::span<const std::byte> bytes);
  static std::pair<std::string, std::string> local_header(std::uint16_t method, std::uint32_t crc, std::uint64_t size,
                                                          std::uint64_t compressed, bool zip64);
  AtomicFile& file_;
  std::size_t alignment_;
  std::uint64_t position_ = 0;
  std::vector<Written> written_;
  std::uint64_t expected_ = 0, received_ = 0;
  std::uint32_t crc_ = 0;
};

}  // namespace ckpt::detail::zip

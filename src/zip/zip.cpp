#include "zip/zip.h"

#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "util/atomic_file.h"
#include "util/bytes.h"
#include "util/checksum.h"

namespace ckpt::detail::zip {
namespace {

constexpr std::uint32_t kEndSignature = 0x06054b50;
constexpr std::uint32_t kZip64EndSignature = 0x06064b50;
constexpr std::uint32_t kZip64LocatorSignature = 0x07064b50;
constexpr std::uint32_t kCentralSignature = 0x02014b50;
constexpr std::uint32_t kLocalSignature = 0x04034b50;
constexpr std::size_t kEndSize = 22, kZip64LocatorSize = 20, kZip64EndSize = 56, kCentralSize = 46, kLocalSize = 30;
constexpr std::uint64_t kMaxDeflateRatio = 1032;  // the most deflate can expand

}  // namespace

const std::byte* Archive::at(std::uint64_t offset, std::uint64_t size, const char* what) const {
  if (offset > file_.size() || size > file_.size() - offset)
    fail(ErrorCode::format, name_, "zip {} at offset {} ({} bytes) extends past the end of the file ({} bytes)", what,
         offset, size, file_.size());
  return file_.data() + offset;
}

Archive::Archive(std::span<const std::byte> file, std::string name, const ZipLimits& limits)
    : file_(file), name_(std::move(name)), limits_(limits) {
  // The end record is in the last 22 + 65535 bytes (it ends with a comment of up to 64 KiB).
  if (file_.size() < kEndSize) fail(ErrorCode::format, name_, "file of {} bytes is too short for a zip", file_.size());
  std::uint64_t end = file_.size() - kEndSize;
  const std::uint64_t lowest = file_.size() > kEndSize + 0xffff ? file_.size() - kEndSize - 0xffff : 0;
  while (load_le<std::uint32_t>(file_.data() + end) != kEndSignature) {
    if (end == lowest) fail(ErrorCode::format, name_, "no zip end-of-central-directory record");
    --end;
  }
  const std::byte* e = file_.data() + end;
  const std::uint64_t comment_size = std::min<std::uint64_t>(load_le<std::uint16_t>(e + 20), file_.size() - end - kEndSize);
  comment_.assign(reinterpret_cast<const char*>(e + kEndSize), static_cast<std::size_t>(comment_size));
  std::uint64_t count = load_le<std::uint16_t>(e + 10);
  std::uint64_t cd_size = load_le<std::uint32_t>(e + 12);
  std::uint64_t cd_offset = load_le<std::uint32_t>(e + 16);
  if (load_le<std::uint16_t>(e + 4) != 0 || load_le<std::uint16_t>(e + 6) != 0)
    fail(ErrorCode::unsupported, name_, "multi-disk zip archives are not supported");
  std::uint64_t cd_end = end;  // where the central directory must end: at the (zip64) end record
  if (end >= kZip64LocatorSize && load_le<std::uint32_t>(file_.data() + end - kZip64LocatorSize) == kZip64LocatorSignature) {
    const std::uint64_t z_offset = load_le<std::uint64_t>(file_.data() + end - kZip64LocatorSize + 8);
    const std::byte* z = at(z_offset, kZip64EndSize, "zip64 end record");
    if (load_le<std::uint32_t>(z) != kZip64EndSignature)
      fail(ErrorCode::format, name_, "zip64 end record at offset {} has a wrong signature", z_offset);
    count = load_le<std::uint64_t>(z + 32);
    cd_size = load_le<std::uint64_t>(z + 40);
    cd_offset = load_le<std::uint64_t>(z + 48);
    cd_end = z_offset;
  }
  const std::byte* cd = at(cd_offset, cd_size, "central directory");
  if (cd_offset + cd_size != cd_end)
    fail(ErrorCode::format, name_, "zip central directory (offset {}, {} bytes) does not end where the end record starts ({})",
         cd_offset, cd_size, cd_end);
  if (count > limits_.max_entries) fail(ErrorCode::format, name_, "zip claims {} entries, more than the limit of {}", count, limits_.max_entries);
  if (count > cd_size / kCentralSize)
    fail(ErrorCode::format, name_, "zip claims {} entries in a central directory of {} bytes", count, cd_size);
  entries_.reserve(static_cast<std::size_t>(count));
  std::uint64_t pos = 0;
  for (std::uint64_t i = 0; i < count; ++i) {
    if (cd_size - pos < kCentralSize) fail(ErrorCode::format, name_, "zip central directory ends inside entry {}", i);
    const std::byte* h = cd + pos;
    if (load_le<std::uint32_t>(h) != kCentralSignature)
      fail(ErrorCode::format, name_, "zip central directory entry {} at offset {} has a wrong signature", i, cd_offset + pos);
    const auto flags = load_le<std::uint16_t>(h + 8);
    Entry entry;
    entry.method = load_le<std::uint16_t>(h + 10);
    entry.crc32 = load_le<std::uint32_t>(h + 16);
    entry.compressed_size = load_le<std::uint32_t>(h + 20);
    entry.size = load_le<std::uint32_t>(h + 24);
    const std::uint64_t name_len = load_le<std::uint16_t>(h + 28), extra_len = load_le<std::uint16_t>(h + 30),
                        comment_len = load_le<std::uint16_t>(h + 32);
    std::uint64_t local = load_le<std::uint32_t>(h + 42);
    if (cd_size - pos - kCentralSize < name_len + extra_len + comment_len)
      fail(ErrorCode::format, name_, "zip central directory entry {} runs past the directory", i);
    entry.name.assign(reinterpret_cast<const char*>(h + kCentralSize), name_len);
    entry.comment.assign(reinterpret_cast<const char*>(h + kCentralSize + name_len + extra_len), comment_len);
    // zip64 extra field: the 64-bit values of whichever fields hold 0xffffffff, in this order.
    const std::byte* extra = h + kCentralSize + name_len;
    for (std::uint64_t x = 0; x + 4 <= extra_len;) {
      const auto id = load_le<std::uint16_t>(extra + x), len = load_le<std::uint16_t>(extra + x + 2);
      if (x + 4 + len > extra_len) fail(ErrorCode::format, name_, "zip entry {}: extra field runs past its end", quote(entry.name));
      if (id == 0x0001) {
        std::uint64_t field = 0;
        auto next = [&](std::uint64_t& value) {
          if (field + 8 > len) fail(ErrorCode::format, name_, "zip entry {}: zip64 field too short", quote(entry.name));
          value = load_le<std::uint64_t>(extra + x + 4 + field);
          field += 8;
        };
        if (entry.size == 0xffffffffu) next(entry.size);
        if (entry.compressed_size == 0xffffffffu) next(entry.compressed_size);
        if (local == 0xffffffffu) next(local);
      }
      x += 4 + len;
    }
    pos += kCentralSize + name_len + extra_len + comment_len;
    if (flags & 0x1) fail(ErrorCode::unsupported, name_, "zip entry {} is encrypted", quote(entry.name));
    if (entry.method != 0 && entry.method != 8)
      fail(ErrorCode::unsupported, name_, "zip entry {} uses compression method {} (only stored and deflate are read)",
           quote(entry.name), entry.method);
    if (entry.method == 0 && entry.size != entry.compressed_size)
      fail(ErrorCode::format, name_, "zip entry {} is stored but its sizes differ ({} and {})", quote(entry.name),
           entry.compressed_size, entry.size);
    if (local > file_.size() || entry.compressed_size > file_.size() - local)
      fail(ErrorCode::format, name_, "zip entry {}: {} bytes at offset {} lie past the end of the file ({} bytes)",
           quote(entry.name), entry.compressed_size, local, file_.size());
    entry.local_offset = local;
    entries_.push_back(std::move(entry));
  }
  if (pos != cd_size)
    fail(ErrorCode::format, name_, "zip central directory holds {} more bytes after the {} entries the end record counts",
         cd_size - pos, count);
  for (std::size_t i = 0; i < entries_.size(); ++i)
    if (!by_name_.emplace(entries_[i].name, i).second)
      fail(ErrorCode::format, name_, "zip names entry {} twice", quote(entries_[i].name));
  // Records must not overlap: each entry's local header and data end before the next record (the
  // next local header in the file, or the central directory). Checked here with what the central
  // directory says (a local header is 30 bytes and the name); data_offset() checks the rest.
  std::vector<std::size_t> order(entries_.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(),
            [&](std::size_t a, std::size_t b) { return entries_[a].local_offset < entries_[b].local_offset; });
  for (std::size_t k = 0; k < order.size(); ++k) {
    Entry& e = entries_[order[k]];
    if (e.local_offset >= cd_offset && e.local_offset < cd_offset + cd_size)
      fail(ErrorCode::format, name_, "zip entry {}: local header at offset {} lies inside the central directory",
           quote(e.name), e.local_offset);
    const Entry* next = k + 1 < order.size() ? &entries_[order[k + 1]] : nullptr;
    e.next_record = file_.size();
    const char* what = "the end of the file";
    if (next) {
      e.next_record = next->local_offset;
      what = "the next entry's local header";
    }
    if (cd_offset > e.local_offset && cd_offset < e.next_record) {
      e.next_record = cd_offset;
      what = "the central directory";
    }
    if (next && next->local_offset == e.local_offset)
      fail(ErrorCode::format, name_, "zip entries {} and {} both start at offset {}", quote(e.name), quote(next->name),
           e.local_offset);
    const std::uint64_t least = e.local_offset + kLocalSize + e.name.size() + e.compressed_size;  // within the file
    if (least > e.next_record)
      fail(ErrorCode::format, name_,
           "zip entry {} (local header at offset {}, {} bytes of data) overlaps {} at offset {}", quote(e.name),
           e.local_offset, e.compressed_size, next && e.next_record == next->local_offset ? "entry " + quote(next->name) : std::string(what),
           e.next_record);
  }
  crc_checks_.resize(entries_.size());
}

const Entry* Archive::find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &entries_[it->second];
}

std::uint64_t Archive::data_offset(const Entry& entry) const {
  const std::byte* l = at(entry.local_offset, kLocalSize, "local header");
  if (load_le<std::uint32_t>(l) != kLocalSignature)
    fail(ErrorCode::format, name_, "zip entry {}: local header at offset {} has a wrong signature", quote(entry.name),
         entry.local_offset);
  const auto flags = load_le<std::uint16_t>(l + 6), method = load_le<std::uint16_t>(l + 8);
  const std::uint64_t name_len = load_le<std::uint16_t>(l + 26), extra_len = load_le<std::uint16_t>(l + 28);
  const std::byte* local_name = at(entry.local_offset + kLocalSize, name_len + extra_len, "local header");
  if (std::string_view(reinterpret_cast<const char*>(local_name), name_len) != entry.name || method != entry.method)
    fail(ErrorCode::format, name_,
         "zip entry {}: local header at offset {} names {} (method {}), the central directory {} (method {})",
         quote(entry.name), entry.local_offset,
         quote(std::string(reinterpret_cast<const char*>(local_name), std::min<std::uint64_t>(name_len, 256))), method,
         quote(entry.name), entry.method);
  const std::uint64_t offset = entry.local_offset + kLocalSize + name_len + extra_len;
  (void)at(offset, entry.compressed_size, ("data of entry " + quote(entry.name)).c_str());
  std::uint64_t end = offset + entry.compressed_size;
  if (flags & 0x8) {
    // Sizes and CRC-32 follow the data (a data descriptor: an optional signature, then the
    // CRC-32): it must be where the central directory's sizes say the data ends.
    constexpr std::uint32_t kDescriptorSignature = 0x08074b50;
    std::uint64_t crc_at = end;
    if (end + 4 <= file_.size() && load_le<std::uint32_t>(file_.data() + end) == kDescriptorSignature) crc_at += 4;
    if (crc_at + 4 > file_.size() || load_le<std::uint32_t>(file_.data() + crc_at) != entry.crc32)
      fail(ErrorCode::format, name_, "zip entry {}: no data descriptor with its CRC-32 {:08x} where its data ends (offset {})",
           quote(entry.name), entry.crc32, end);
    // A descriptor without its signature, right after one: the data was placed 4 bytes too far
    // (a local header whose extra field grew by 4), which the CRC alone cannot tell.
    if (crc_at == end && end - offset >= 4 && load_le<std::uint32_t>(file_.data() + end - 4) == kDescriptorSignature)
      fail(ErrorCode::format, name_,
           "zip entry {}: its data descriptor starts 4 bytes before the end of its data (offset {}): the local header's "
           "lengths are wrong",
           quote(entry.name), end);
    end = crc_at + 4;
  } else {
    std::uint64_t size = load_le<std::uint32_t>(l + 22), compressed = load_le<std::uint32_t>(l + 18);
    const std::byte* extra = local_name + name_len;
    for (std::uint64_t x = 0; x + 4 <= extra_len;) {  // zip64: the sizes that read 0xffffffff
      const auto id = load_le<std::uint16_t>(extra + x), len = load_le<std::uint16_t>(extra + x + 2);
      if (x + 4 + len > extra_len) break;
      if (id == 0x0001) {
        std::uint64_t field = 0;
        for (std::uint64_t* value : {&size, &compressed})
          if (*value == 0xffffffffu && field + 8 <= len) {
            *value = load_le<std::uint64_t>(extra + x + 4 + field);
            field += 8;
          }
      }
      x += 4 + len;
    }
    const auto crc = load_le<std::uint32_t>(l + 14);
    if (crc != entry.crc32 || size != entry.size || compressed != entry.compressed_size)
      fail(ErrorCode::format, name_,
           "zip entry {}: local header at offset {} gives CRC-32 {:08x} and sizes {} and {}, the central directory "
           "{:08x}, {} and {}",
           quote(entry.name), entry.local_offset, crc, compressed, size, entry.crc32, entry.compressed_size, entry.size);
  }
  if (end > entry.next_record)
    fail(ErrorCode::format, name_, "zip entry {}: its data (offset {}, {} bytes) runs into the next record at offset {}",
         quote(entry.name), offset, entry.compressed_size, entry.next_record);
  return offset;
}

std::shared_ptr<StreamCrc> Archive::crc_check(const Entry& entry) const {
  auto& check = crc_checks_.at(static_cast<std::size_t>(&entry - entries_.data()));
  if (!check) {
    check = std::make_shared<StreamCrc>();
    check->what = "zip entry " + quote(entry.name);
    check->expected = entry.crc32;
    if (entry.method == 0) check->whole = {data_offset(entry), entry.size};
  }
  return check;
}

std::span<const std::byte> Archive::stored(const Entry& entry) const {
  if (entry.method != 0) fail(ErrorCode::invalid_argument, name_, "zip entry {} is not stored", quote(entry.name));
  return file_.subspan(static_cast<std::size_t>(data_offset(entry)), static_cast<std::size_t>(entry.size));
}

void Archive::read_range(const Entry& entry, std::uint64_t skip, std::span<std::byte> out) const {
  if (skip > entry.size || out.size() > entry.size - skip)
    fail(ErrorCode::invalid_argument, name_, "zip entry {}: bytes {}..{} asked of {}", quote(entry.name), skip,
         skip + out.size(), entry.size);
  const bool complete = skip + out.size() == entry.size;  // then the CRC-32 is checked
  const std::uint64_t offset = data_offset(entry);          // may throw: before zlib holds memory
  std::uint32_t crc = 0;
  if (entry.method == 0) {
    if (!out.empty()) std::memcpy(out.data(), file_.data() + offset + skip, out.size());
    if (complete) crc = detail::crc32(0, file_.subspan(static_cast<std::size_t>(offset), static_cast<std::size_t>(entry.size)));
  } else {
    if (entry.size > limits_.max_inflated_bytes)
      fail(ErrorCode::format, name_, "zip entry {} claims {} bytes, more than the limit of {}", quote(entry.name),
           entry.size, limits_.max_inflated_bytes);
    if (entry.size / kMaxDeflateRatio > entry.compressed_size)
      fail(ErrorCode::format, name_, "zip entry {} claims {} bytes from {} compressed bytes, more than deflate can give",
           quote(entry.name), entry.size, entry.compressed_size);
    z_stream z{};
    if (inflateInit2(&z, -MAX_WBITS) != Z_OK) fail(ErrorCode::io, name_, "zlib cannot start inflating");
    // The bytes before `skip` are inflated into a scratch block and dropped (hashed if complete).
    std::vector<std::byte> dropped(static_cast<std::size_t>(std::min<std::uint64_t>(skip, 1u << 20)));
    const std::byte* in = file_.data() + offset;
    std::uint64_t in_left = entry.compressed_size, produced = 0;
    const std::uint64_t end = skip + out.size();
    int rc = Z_OK;
    while (rc == Z_OK && produced < end) {
      if (z.avail_in == 0 && in_left > 0) {  // zlib counts in 32 bits: feed it in pieces
        z.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(in));
        z.avail_in = static_cast<uInt>(std::min<std::uint64_t>(in_left, 1u << 30));
        in += z.avail_in;
        in_left -= z.avail_in;
      }
      std::byte* target = produced < skip ? dropped.data() : out.data() + (produced - skip);
      const std::uint64_t room = produced < skip ? std::min<std::uint64_t>(dropped.size(), skip - produced) : end - produced;
      z.next_out = reinterpret_cast<Bytef*>(target);
      z.avail_out = static_cast<uInt>(std::min<std::uint64_t>(room, 1u << 30));
      const uInt before_out = z.avail_out, before_in = z.avail_in;
      rc = inflate(&z, Z_NO_FLUSH);
      const std::size_t n = before_out - z.avail_out;
      if (complete) crc = detail::crc32(crc, std::span<const std::byte>(target, n));
      produced += n;
      if (rc == Z_OK && n == 0 && z.avail_in == before_in && in_left == 0) rc = Z_BUF_ERROR;  // no progress
    }
    if (complete && rc == Z_OK) {  // all bytes produced: the stream must end here
      std::byte extra{};
      z.next_out = reinterpret_cast<Bytef*>(&extra);
      z.avail_out = 1;
      if (z.avail_in == 0 && in_left > 0) {
        z.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(in));
        z.avail_in = static_cast<uInt>(std::min<std::uint64_t>(in_left, 1u << 30));
      }
      rc = inflate(&z, Z_NO_FLUSH);
      if (z.avail_out == 0) rc = Z_DATA_ERROR;  // more bytes than the entry claims
    }
    inflateEnd(&z);
    if (produced != end || (complete ? rc != Z_STREAM_END : rc != Z_OK && rc != Z_STREAM_END))
      fail(ErrorCode::format, name_, "zip entry {}: deflate data is corrupt or not {} bytes long", quote(entry.name),
           entry.size);
  }
  if (complete && crc != entry.crc32)
    fail(ErrorCode::integrity, name_, "zip entry {}: CRC-32 {:08x} does not match the stored {:08x}", quote(entry.name),
         crc, entry.crc32);
}

std::vector<std::byte> Archive::read_prefix(const Entry& entry, std::size_t max_bytes) const {
  std::vector<std::byte> out(static_cast<std::size_t>(std::min<std::uint64_t>(max_bytes, entry.size)));
  read_range(entry, 0, out);
  return out;
}

std::vector<std::byte> Archive::read(const Entry& entry) const {
  if (entry.size > limits_.max_inflated_bytes)
    fail(ErrorCode::format, name_, "zip entry {} claims {} bytes, more than the limit of {}", quote(entry.name),
         entry.size, limits_.max_inflated_bytes);
  if (entry.method != 0 && entry.size / kMaxDeflateRatio > entry.compressed_size)
    fail(ErrorCode::format, name_, "zip entry {} claims {} bytes from {} compressed bytes, more than deflate can give",
         quote(entry.name), entry.size, entry.compressed_size);
  std::vector<std::byte> out(static_cast<std::size_t>(entry.size));
  read_range(entry, 0, out);
  return out;
}

}  // namespace ckpt::detail::zip

// --- Writer --------------------------------------------------------------------------------

namespace ckpt::detail::zip {
namespace {

void append16(std::string& s, std::uint16_t v) { s.append(reinterpret_cast<const char*>(&v), 2); }
void append32(std::string& s, std::uint32_t v) { s.append(reinterpret_cast<const char*>(&v), 4); }
void append64(std::string& s, std::uint64_t v) { s.append(reinterpret_cast<const char*>(&v), 8); }
constexpr std::uint32_t k32 = 0xffffffffu;

}  // namespace

Writer::Writer(AtomicFile& file, std::size_t alignment) : file_(file), alignment_(alignment) {}

// A local file header up to (not including) the name and extra-field lengths, and its zip64
// extra field when needed (sizes in the header then read 0xffffffff).
std::pair<std::string, std::string> Writer::local_header(std::uint16_t method, std::uint32_t crc, std::uint64_t size,
                                                         std::uint64_t compressed, bool zip64) {
  std::string header, extra;
  append32(header, kLocalSignature);
  append16(header, zip64 ? 45 : 20);  // version needed
  append16(header, 0);                // flags
  append16(header, method);
  append16(header, 0);                // time
  append16(header, 0x21);             // date: 1980-01-01
  append32(header, crc);
  append32(header, zip64 ? k32 : static_cast<std::uint32_t>(compressed));
  append32(header, zip64 ? k32 : static_cast<std::uint32_t>(size));
  if (zip64) {
    append16(extra, 0x0001);
    append16(extra, 16);
    append64(extra, size);
    append64(extra, compressed);
  }
  return {header, extra};
}

void Writer::put(std::span<const std::byte> bytes) {
  file_.write(bytes);
  position_ += bytes.size();
}

void Writer::begin(const std::string& name, std::uint64_t size, const std::string& comment) {
  if (name.size() > 0xffff) fail(ErrorCode::invalid_argument, file_.target().string(), "zip entry name too long");
  if (comment.size() > 0xffff)
    fail(ErrorCode::invalid_argument, file_.target().string(), "zip entry {}: comment of {} bytes is over 65535",
         quote(name), comment.size());
  const bool zip64 = size >= k32 || position_ >= k32;
  auto [header, extra] = local_header(0, 0, size, size, zip64);  // CRC-32 patched in end()
  // Padding so that the data starts on an `alignment` boundary (an extra field of id 'FB').
  const std::uint64_t data_at = position_ + kLocalSize + name.size() + extra.size();
  if (data_at % alignment_ != 0) {
    std::uint64_t pad = alignment_ - data_at % alignment_;
    if (pad < 4) pad += alignment_;
    append16(extra, 0x4246);
    append16(extra, static_cast<std::uint16_t>(pad - 4));
    extra.append(pad - 4, 'Z');
  }
  append16(header, static_cast<std::uint16_t>(name.size()));
  append16(header, static_cast<std::uint16_t>(extra.size()));
  header += name;
  header += extra;
  written_.push_back({name, position_, size, 0, comment, 0, size});
  put(std::as_bytes(std::span(header)));
  expected_ = size;
  received_ = 0;
  crc_ = 0;
}

void Writer::write(std::span<const std::byte> data) { write(data, std::nullopt); }

void Writer::write(std::span<const std::byte> data, const std::optional<Source::FileSpan>& from) {
  if (data.size() > expected_ - received_)
    fail(ErrorCode::invalid_argument, file_.target().string(), "zip entry {} given more than its {} bytes",
         quote(written_.back().name), expected_);
  crc_ = detail::crc32(crc_, data);
  file_.write(data, from);
  position_ += data.size();
  received_ += data.size();
}

void Writer::end() {
  if (received_ != expected_)
    fail(ErrorCode::invalid_argument, file_.target().string(), "zip entry {} got {} of its {} bytes",
         quote(written_.back().name), received_, expected_);
  written_.back().crc = crc_;
  // Patch the CRC-32 into the local header (offset 14).
  const std::uint32_t crc = crc_;
  if (::pwrite(file_.fd(), &crc, 4, static_cast<off_t>(written_.back().offset + 14)) != 4)
    fail(ErrorCode::io, file_.target().string(), "cannot write a zip header: {}", std::strerror(errno));
}

void Writer::add_deflated(const std::string& name, const std::vector<std::span<const std::byte>>& parts,
                          const std::string& comment) {
  const std::string file = file_.target().string();
  if (name.size() > 0xffff) fail(ErrorCode::invalid_argument, file, "zip entry name too long");
  if (comment.size() > 0xffff)
    fail(ErrorCode::invalid_argument, file, "zip entry {}: comment of {} bytes is over 65535", quote(name), comment.size());
  std::uint64_t size = 0;
  for (const auto& part : parts) size += part.size();
  std::vector<std::byte> out(static_cast<std::size_t>(std::max<std::uint64_t>(64, size / 2)));
  z_stream z{};
  if (deflateInit2(&z, 6, Z_DEFLATED, -MAX_WBITS, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    fail(ErrorCode::io, file, "zlib cannot start deflating");
  std::uint32_t crc = 0;
  std::uint64_t produced = 0;
  auto pump = [&](std::span<const std::byte> in, int flush) {
    // zlib counts in 32 bits: feed at most 1 GiB at a time; grow the output as needed.
    for (std::size_t done = 0;;) {
      const std::size_t now = std::min<std::size_t>(in.size() - done, 1u << 30);
      z.next_in = reinterpret_cast<Bytef*>(const_cast<std::byte*>(in.data() + done));
      z.avail_in = static_cast<uInt>(now);
      const int mode = done + now == in.size() ? flush : Z_NO_FLUSH;
      int rc = Z_OK;
      do {
        if (produced == out.size()) out.resize(out.size() * 2);
        const std::size_t room = std::min<std::size_t>(out.size() - produced, 1u << 30);
        z.next_out = reinterpret_cast<Bytef*>(out.data() + produced);
        z.avail_out = static_cast<uInt>(room);
        rc = deflate(&z, mode);
        if (rc == Z_STREAM_ERROR) {
          deflateEnd(&z);
          fail(ErrorCode::io, file, "zlib failed deflating zip entry {}", quote(name));
        }
        produced += room - z.avail_out;
      } while (z.avail_out == 0 || (mode == Z_FINISH && rc != Z_STREAM_END));
      done += now;
      if (done == in.size()) return;
    }
  };
  for (std::size_t k = 0; k < parts.size(); ++k) {
    crc = detail::crc32(crc, parts[k]);
    pump(parts[k], k + 1 == parts.size() ? Z_FINISH : Z_NO_FLUSH);
  }
  if (parts.empty()) pump({}, Z_FINISH);
  deflateEnd(&z);
  const bool zip64 = size >= k32 || produced >= k32 || position_ >= k32;
  auto [header, extra] = local_header(8, static_cast<std::uint32_t>(crc), size, produced, zip64);
  append16(header, static_cast<std::uint16_t>(name.size()));
  append16(header, static_cast<std::uint16_t>(extra.size()));
  header += name;
  header += extra;
  written_.push_back({name, position_, size, static_cast<std::uint32_t>(crc), comment, 8, produced});
  put(std::as_bytes(std::span(header)));
  put(std::span(out).first(static_cast<std::size_t>(produced)));
}

void Writer::finish(const std::string& comment) {
  if (comment.size() > 0xffff)
    fail(ErrorCode::invalid_argument, file_.target().string(), "zip comment of {} bytes is over 65535", comment.size());
  const std::uint64_t cd_offset = position_;
  std::string cd;
  for (const auto& w : written_) {
    const bool zip64 = w.size >= k32 || w.compressed >= k32 || w.offset >= k32;
    append32(cd, kCentralSignature);
    append16(cd, zip64 ? 45 : 20);  // made by
    append16(cd, zip64 ? 45 : 20);  // needed
    append16(cd, 0);
    append16(cd, w.method);
    append16(cd, 0);
    append16(cd, 0x21);
    append32(cd, w.crc);
    append32(cd, zip64 ? k32 : static_cast<std::uint32_t>(w.compressed));
    append32(cd, zip64 ? k32 : static_cast<std::uint32_t>(w.size));
    append16(cd, static_cast<std::uint16_t>(w.name.size()));
    append16(cd, zip64 ? 28 : 0);
    append16(cd, static_cast<std::uint16_t>(w.comment.size()));
    append16(cd, 0);  // disk
    append16(cd, 0);  // internal attributes
    append32(cd, 0);  // external attributes
    append32(cd, zip64 ? k32 : static_cast<std::uint32_t>(w.offset));
    cd += w.name;
    if (zip64) {
      append16(cd, 0x0001);
      append16(cd, 24);
      append64(cd, w.size);
      append64(cd, w.compressed);
      append64(cd, w.offset);
    }
    cd += w.comment;
  }
  const std::uint64_t cd_size = cd.size();
  const bool zip64 = cd_offset + cd_size >= k32 || written_.size() >= 0xffff;
  if (zip64) {
    const std::uint64_t z_offset = cd_offset + cd_size;
    append32(cd, kZip64EndSignature);
    append64(cd, kZip64EndSize - 12);
    append16(cd, 45);
    append16(cd, 45);
    append32(cd, 0);
    append32(cd, 0);
    append64(cd, written_.size());
    append64(cd, written_.size());
    append64(cd, cd_size);
    append64(cd, cd_offset);
    append32(cd, kZip64LocatorSignature);
    append32(cd, 0);
    append64(cd, z_offset);
    append32(cd, 1);
  }
  append32(cd, kEndSignature);
  append16(cd, 0);
  append16(cd, 0);
  append16(cd, zip64 ? 0xffff : static_cast<std::uint16_t>(written_.size()));
  append16(cd, zip64 ? 0xffff : static_cast<std::uint16_t>(written_.size()));
  append32(cd, zip64 ? k32 : static_cast<std::uint32_t>(cd_size));
  append32(cd, zip64 ? k32 : static_cast<std::uint32_t>(cd_offset));
  append16(cd, static_cast<std::uint16_t>(comment.size()));
  cd += comment;
  put(std::as_bytes(std::span(cd)));
}

}  // namespace ckpt::detail::zip

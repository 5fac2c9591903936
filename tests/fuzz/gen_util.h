// Building blocks of the structure-aware generator targets (fuzz_pickle_gen, fuzz_json_gen): the
// fuzzer's bytes are a program that builds a well-formed file, so mutation explores structure
// (sharing, nesting, sizes) instead of breaking syntax.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "util/bytes.h"
#include "util/checksum.h"

namespace fuzzgen {

// Reads the program's bytes; 0 once they run out.
class Program {
 public:
  Program(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  bool done() const { return at_ >= size_; }
  std::uint8_t next() { return at_ < size_ ? data_[at_++] : 0; }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t at_ = 0;
};

inline void put_le(std::string& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

// A zip of stored entries, as torch.save writes them (no alignment padding needed by readers).
inline std::string stored_zip(const std::vector<std::pair<std::string, std::string>>& entries) {
  std::string out, central;
  for (const auto& [name, data] : entries) {
    const auto crc = ckpt::detail::crc32(0, std::as_bytes(std::span(data.data(), data.size())));
    const auto offset = out.size();
    out += "PK\x03\x04";
    put_le(out, 20, 2), put_le(out, 0, 2), put_le(out, 0, 2), put_le(out, 0, 4);
    put_le(out, crc, 4), put_le(out, data.size(), 4), put_le(out, data.size(), 4);
    put_le(out, name.size(), 2), put_le(out, 0, 2);
    out += name;
    out += data;
    central += "PK\x01\x02";
    put_le(central, 20, 2), put_le(central, 20, 2), put_le(central, 0, 2), put_le(central, 0, 2), put_le(central, 0, 4);
    put_le(central, crc, 4), put_le(central, data.size(), 4), put_le(central, data.size(), 4);
    put_le(central, name.size(), 2), put_le(central, 0, 2), put_le(central, 0, 2), put_le(central, 0, 2);
    put_le(central, 0, 2), put_le(central, 0, 4), put_le(central, offset, 4);
    central += name;
  }
  const auto cd_offset = out.size();
  out += central;
  out += "PK\x05\x06";
  put_le(out, 0, 2), put_le(out, 0, 2), put_le(out, entries.size(), 2), put_le(out, entries.size(), 2);
  put_le(out, central.size(), 4), put_le(out, cd_offset, 4), put_le(out, 0, 2);
  return out;
}

}  // namespace fuzzgen

// The safetensors header's JSON read in one pass, straight into tensor entries: nlohmann's SAX
// lexer with a handler that keeps only what the reader needs. No JSON tree is built per tensor:
// building it (std::map nodes for every entry and field), then destroying it, was most of the
// time of listing a file of 40,000 tensors.
//
// The JSON is refused as parse_json_strict (util/json_strict.h) refuses it: nesting beyond
// kMaxJsonDepth, a member named twice in any object, integers beyond 64 bits. Tensor entries are
// kept as written (Entry) for the reader to check; unknown fields are skipped.
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

namespace ckpt::detail::safetensors {

struct HeaderEntry {
  std::string name;
  bool is_object = true;
  enum class Field : std::uint8_t { absent, wrong_type, present };
  Field dtype = Field::absent, shape = Field::absent, offsets = Field::absent;
  std::string dtype_code;
  // Shape elements as written: kNotUnsigned for a value that is not a non-negative integer,
  // kTooLarge beyond INT64_MAX.
  static constexpr std::int64_t kNotUnsigned = -1, kTooLarge = -2;
  std::vector<std::int64_t> dims;
  std::uint64_t offset_count = 0;  // elements of data_offsets
  std::uint64_t offset_values[2] = {0, 0};
  bool offsets_unsigned = true;  // the first two elements are non-negative integers
};

struct Header {
  bool is_object = true;
  std::deque<HeaderEntry> entries;  // in file order (a deque: names stay in place for the index)
  bool has_metadata = false;
  nlohmann::json metadata = nlohmann::json::object();  // __metadata__'s string values
  std::string metadata_error;                          // why __metadata__ is not an object of strings
};

// Parses `text` into `out`. Returns an empty string, or what is wrong with the JSON ("is not valid
// JSON: ...", "member 'x' appears twice in one object", "nests deeper than 128 levels", "integer
// ... does not fit in 64 bits").
std::string parse_header(std::string_view text, Header& out);

}  // namespace ckpt::detail::safetensors

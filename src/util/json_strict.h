// Parsing JSON that comes from a file: nlohmann's own parser, through a SAX handler that builds
// the value while it refuses what would make readers disagree or the process fail. Hand-written
// (a small handler, not a parser) because nlohmann's parse() keeps the last of duplicate member
// names, turns integers beyond 64 bits into floats, and accepts any nesting, which its recursive
// copy, dump and destruction then follow into a stack overflow; and its callback parser, the
// usual way to see duplicates, rescans an object after each member (quadratic: a safetensors
// header of 40,000 tensors took 25 s).
#pragma once

#include <cstddef>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "util/bytes.h"

namespace ckpt::detail {

// The deepest nesting of arrays and objects accepted in a file's JSON.
inline constexpr std::size_t kMaxJsonDepth = 128;

// Parses `text` into `out` (nlohmann::json or ordered_json). Returns an empty string, or what is
// wrong ("is not valid JSON: ...", "member 'x' appears twice in one object", "nests deeper than
// 128 levels", "integer ... does not fit in 64 bits").
template <class Json>
std::string parse_json_strict(std::string_view text, Json& out) {
  struct Builder : nlohmann::json_sax<Json> {
    using typename nlohmann::json_sax<Json>::number_integer_t;
    using typename nlohmann::json_sax<Json>::number_unsigned_t;
    using typename nlohmann::json_sax<Json>::number_float_t;
    using typename nlohmann::json_sax<Json>::string_t;
    using typename nlohmann::json_sax<Json>::binary_t;

    Json& root;
    std::vector<Json*> open;  // containers being filled, innermost last
    std::vector<std::set<std::string>> members;
    std::string pending_key, error;
    bool started = false;

    explicit Builder(Json& r) : root(r) {}

    bool fail(std::string why) {
      if (error.empty()) error = std::move(why);
      return false;
    }
    Json* put(Json value) {
      if (!started) {
        started = true;
        root = std::move(value);
        return &root;
      }
      Json& top = *open.back();
      if (top.is_array()) {
        top.push_back(std::move(value));
        return &top.back();
      }
      return &(top[pending_key] = std::move(value));
    }
    bool container(Json value) {
      if (open.size() >= kMaxJsonDepth) return fail(fmt::format("nests deeper than {} levels", kMaxJsonDepth));
      open.push_back(put(std::move(value)));
      members.emplace_back();
      return true;
    }
    bool close() {
      open.pop_back();
      members.pop_back();
      return true;
    }

    bool null() override { return put(nullptr), true; }
    bool boolean(bool v) override { return put(v), true; }
    bool number_integer(number_integer_t v) override { return put(v), true; }
    bool number_unsigned(number_unsigned_t v) override { return put(v), true; }
    bool number_float(number_float_t v, const string_t& raw) override {
      if (raw.find_first_of(".eE") == string_t::npos)
        return fail(fmt::format("integer {} does not fit in 64 bits", raw));
      return put(v), true;
    }
    bool string(string_t& v) override { return put(std::move(v)), true; }
    bool binary(binary_t&) override { return fail("holds binary values"); }
    bool start_object(std::size_t) override { return container(Json::object()); }
    bool start_array(std::size_t) override { return container(Json::array()); }
    bool end_object() override { return close(); }
    bool end_array() override { return close(); }
    bool key(string_t& k) override {
      if (!members.back().insert(k).second) return fail(fmt::format("member {} appears twice in one object", quote(k)));
      pending_key = std::move(k);
      return true;
    }
    bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
      return fail(std::string("is not valid JSON: ") + e.what());
    }
  };
  Builder builder(out);
  if (!Json::sax_parse(text.begin(), text.end(), &builder) && builder.error.empty()) builder.error = "is not valid JSON";
  if (!builder.error.empty()) out = Json();  // partly built: dropped (its depth is bounded)
  return builder.error;
}

}  // namespace ckpt::detail

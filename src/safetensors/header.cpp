#include "safetensors/header.h"

#include <memory>
#include <set>
#include <unordered_set>

#include <fmt/format.h>

#include "safetensors/dtypes.h"
#include "util/bytes.h"
#include "util/json_strict.h"

namespace ckpt::detail::safetensors {
namespace {

using json = nlohmann::json;

class Handler final : public nlohmann::json_sax<json> {
 public:
  Handler(Header& out, std::size_t expected_entries) : out_(out) { names_.reserve(expected_entries); }
  std::string error;

  bool null() override { return scalar(Scalar::other); }
  bool boolean(bool) override { return scalar(Scalar::other); }
  bool number_integer(number_integer_t v) override {
    return v >= 0 ? unsigned_value(static_cast<std::uint64_t>(v)) : scalar(Scalar::other);
  }
  bool number_unsigned(number_unsigned_t v) override { return unsigned_value(v); }
  bool number_float(number_float_t, const string_t& raw) override {
    if (raw.find_first_of(".eE") == string_t::npos) return fail(fmt::format("integer {} does not fit in 64 bits", raw));
    return scalar(Scalar::other);
  }
  bool string(string_t& v) override {
    text_ = &v;
    return scalar(Scalar::string);
  }
  bool binary(binary_t&) override { return fail("holds binary values"); }

  bool start_object(std::size_t) override { return start(true); }
  bool start_array(std::size_t) override { return start(false); }
  bool end_object() override { return end(); }
  bool end_array() override { return end(); }

  bool key(string_t& k) override {
    Frame& f = frames_.back();
    bool fresh = true;
    switch (f.kind) {
      case Kind::top:
        if (k == kMetadataKey) {
          fresh = !out_.has_metadata;
        } else {
          out_.entries.emplace_back();
          out_.entries.back().name = std::move(k);
          fresh = names_.insert(out_.entries.back().name).second;
          if (!fresh) k = out_.entries.back().name;
        }
        break;
      case Kind::tensor: {
        const unsigned bit = k == "dtype" ? 1u : k == "shape" ? 2u : k == "data_offsets" ? 4u : 0u;
        fresh = bit ? !(f.known & bit) : f.others_insert(k);
        f.known |= bit;
        break;
      }
      case Kind::metadata: fresh = !out_.metadata.contains(k); break;
      default: fresh = f.others_insert(k); break;
    }
    if (!fresh) return fail(fmt::format("member {} appears twice in one object", quote(k)));
    if (f.kind != Kind::top || k == kMetadataKey) key_ = std::move(k);
    else key_.clear();
    at_metadata_ = f.kind == Kind::top && key_ == kMetadataKey;
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    return fail(std::string("is not valid JSON: ") + e.what());
  }

 private:
  enum class Kind : std::uint8_t { top, tensor, shape, offsets, metadata, skip };
  enum class Scalar : std::uint8_t { string, unsigned_integer, other };
  struct Frame {
    Kind kind;
    bool object;
    unsigned known = 0;                              // tensor: dtype, shape, data_offsets seen
    std::unique_ptr<std::set<std::string>> others;  // other member names (made when needed)
    bool others_insert(const std::string& k) {
      if (!object) return true;
      if (!others) others = std::make_unique<std::set<std::string>>();
      return others->insert(k).second;
    }
  };

  bool fail(std::string why) {
    if (error.empty()) error = std::move(why);
    return false;
  }

  bool unsigned_value(std::uint64_t v) {
    unsigned_ = v;
    return scalar(Scalar::unsigned_integer);
  }

  HeaderEntry& entry() { return out_.entries.back(); }

  // A value that is not a container, in whatever holds it.
  bool scalar(Scalar s) {
    if (frames_.empty()) {  // the whole header
      out_.is_object = false;
      return true;
    }
    Frame& f = frames_.back();
    switch (f.kind) {
      case Kind::top:
        if (at_metadata_) {
          out_.has_metadata = true;
          note_metadata("__metadata__ is not an object");
        } else {
          entry().is_object = false;
        }
        break;
      case Kind::tensor:
        if (key_ == "dtype") {
          entry().dtype = s == Scalar::string ? HeaderEntry::Field::present : HeaderEntry::Field::wrong_type;
          if (s == Scalar::string) entry().dtype_code = std::move(*text_);
        } else if (key_ == "shape") {
          entry().shape = HeaderEntry::Field::wrong_type;
        } else if (key_ == "data_offsets") {
          entry().offsets = HeaderEntry::Field::wrong_type;
        }
        break;
      case Kind::shape:
        entry().dims.push_back(s != Scalar::unsigned_integer ? HeaderEntry::kNotUnsigned
                               : unsigned_ > static_cast<std::uint64_t>(INT64_MAX)
                                   ? HeaderEntry::kTooLarge
                                   : static_cast<std::int64_t>(unsigned_));
        break;
      case Kind::offsets: offset(s == Scalar::unsigned_integer); break;
      case Kind::metadata:
        if (s == Scalar::string) {
          out_.metadata[key_] = std::move(*text_);
        } else {
          out_.metadata[key_] = nullptr;  // still a member: named twice is refused
          note_metadata(fmt::format("__metadata__ value of {} is not a string", quote(key_)));
        }
        break;
      case Kind::skip: break;
    }
    return true;
  }

  void offset(bool is_unsigned) {
    HeaderEntry& e = entry();
    if (e.offset_count < 2) {
      if (is_unsigned) e.offset_values[e.offset_count] = unsigned_;
      else e.offsets_unsigned = false;
    }
    ++e.offset_count;
  }

  void note_metadata(std::string why) {
    if (out_.metadata_error.empty()) out_.metadata_error = std::move(why);
  }

  bool start(bool object) {
    if (frames_.size() >= kMaxJsonDepth) return fail(fmt::format("nests deeper than {} levels", kMaxJsonDepth));
    Kind kind = Kind::skip;
    if (frames_.empty()) {
      if (object) kind = Kind::top;
      else out_.is_object = false;
    } else {
      Frame& f = frames_.back();
      switch (f.kind) {
        case Kind::top:
          if (at_metadata_) {
            out_.has_metadata = true;
            if (object) kind = Kind::metadata;
            else note_metadata("__metadata__ is not an object");
          } else if (object) {
            kind = Kind::tensor;
          } else {
            entry().is_object = false;
          }
          break;
        case Kind::tensor:
          if (key_ == "shape" && !object) {
            entry().shape = HeaderEntry::Field::present;
            kind = Kind::shape;
          } else if (key_ == "data_offsets" && !object) {
            entry().offsets = HeaderEntry::Field::present;
            kind = Kind::offsets;
          } else if (key_ == "dtype" || key_ == "shape" || key_ == "data_offsets") {
            (key_ == "dtype" ? entry().dtype : key_ == "shape" ? entry().shape : entry().offsets) =
                HeaderEntry::Field::wrong_type;
          }
          break;
        case Kind::shape: entry().dims.push_back(HeaderEntry::kNotUnsigned); break;
        case Kind::offsets: offset(false); break;
        case Kind::metadata:
          out_.metadata[key_] = nullptr;
          note_metadata(fmt::format("__metadata__ value of {} is not a string", quote(key_)));
          break;
        case Kind::skip: break;
      }
    }
    frames_.push_back(Frame{kind, object, 0, nullptr});
    return true;
  }

  bool end() {
    const Kind kind = frames_.back().kind;
    frames_.pop_back();
    // Back in a tensor entry or the top: the key that led here is spent.
    if (kind == Kind::tensor || kind == Kind::metadata) at_metadata_ = false;
    return true;
  }

  Header& out_;
  std::vector<Frame> frames_;
  std::unordered_set<std::string_view> names_;  // of the tensor entries (in out_.entries)
  std::string key_;
  bool at_metadata_ = false;
  std::uint64_t unsigned_ = 0;
  string_t* text_ = nullptr;
};

}  // namespace

std::string parse_header(std::string_view text, Header& out) {
  Handler handler(out, text.size() / 64);  // an entry takes at least about 64 bytes of JSON
  if (!json::sax_parse(text.begin(), text.end(), &handler) && handler.error.empty()) handler.error = "is not valid JSON";
  return handler.error;
}

}  // namespace ckpt::detail::safetensors

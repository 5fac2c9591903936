#include "ckpt_h5/index.h"

#include <set>

#include <nlohmann/json.hpp>

#include "core/blocks.h"
#include "util/bytes.h"
#include "util/checksum.h"
#include "util/json_strict.h"

namespace ckpt::detail::ckpt_h5 {
namespace {

using json = nlohmann::ordered_json;

// SAX handler for the index. Known fields go straight into TensorInfo; "metadata" is built as a
// JSON tree (it is small); anything unknown is skipped, as minor versions require.
class IndexHandler final : public nlohmann::json_sax<json> {
 public:
  IndexHandler(const ReadOptions& options, Index& index) : options_(options), index_(index) {}

  std::string error;  // set when a handler returns false

  bool null() override { return scalar(json()); }
  bool boolean(bool v) override { return scalar(json(v)); }
  bool number_integer(number_integer_t v) override { return scalar(json(v)); }
  bool number_unsigned(number_unsigned_t v) override { return scalar(json(v)); }
  // nlohmann reads an integer beyond 64 bits as a float: a changed value, refused in shapes and
  // metadata (not in unknown fields, which a newer minor version may fill as it likes).
  bool number_float(number_float_t v, const string_t& text) override {
    if ((mode_ == Mode::capture || mode_ == Mode::shape) && text.find_first_of(".eE") == string_t::npos)
      return fail_with(fmt::format("integer {} does not fit in 64 bits", text));
    return scalar(json(v));
  }
  bool string(string_t& v) override { return scalar(json(std::move(v))); }
  bool binary(binary_t&) override { return fail_with("binary values are not JSON"); }

  // A member named twice would be read as one or the other: refused in every object.
  bool key(string_t& k) override {
    if (!members_.back().insert(k).second) {
      const std::string what = fmt::format("member {} appears twice in one object", quote(k));
      return mode_ == Mode::entry ? entry_error(what) : fail_with(what);
    }
    key_ = std::move(k);
    return true;
  }

  // Nesting is capped before anything is built: nlohmann's copy and dump of a value recurse.
  bool start_object(std::size_t) override {
    if (members_.size() > kMaxJsonDepth) return fail_with(fmt::format("nests deeper than {} levels", kMaxJsonDepth));
    members_.emplace_back();
    return start_container(true);
  }
  bool start_array(std::size_t) override {
    if (members_.size() > kMaxJsonDepth) return fail_with(fmt::format("nests deeper than {} levels", kMaxJsonDepth));
    members_.emplace_back();
    return start_container(false);
  }
  bool end_object() override {
    members_.pop_back();
    return end_container();
  }
  bool end_array() override {
    members_.pop_back();
    return end_container();
  }

  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    return fail_with(std::string("is not valid JSON: ") + e.what());
  }

  bool finished() {
    if (!saw_tensors_) return fail_with("is not a JSON object with a \"tensors\" array");
    return true;
  }

 private:
  enum class Mode { top, root, tensors, entry, shape, capture, skip };
  struct Fields {
    bool name = false, section = false, dtype = false, shape = false;
    std::string section_name, collection;
    std::optional<bool> persistent;
    json blocks;  // null when absent
  };

  bool fail_with(std::string message) {
    if (error.empty()) error = std::move(message);
    return false;
  }
  bool entry_error(const std::string& what) {
    return fail_with(fmt::format("tensors[{}]: {}", index_.tensors.size() - 1, what));
  }

  // A value (scalar or container) begins in the current mode under key_.
  bool scalar(json value) {
    switch (mode_) {
      case Mode::capture: return capture(std::move(value), false);
      case Mode::skip: return true;
      case Mode::root:
        if (key_ == "tensors") return fail_with("\"tensors\" must be an array");
        if (key_ == "metadata") return fail_with("\"metadata\" must be an object");
        return true;  // unknown top-level field
      case Mode::entry: return entry_field(std::move(value));
      case Mode::shape: {
        auto& info = index_.tensors.back();
        if (!value.is_number_integer() || value.get<std::int64_t>() < 0)
          return entry_error("\"shape\" must hold non-negative integers");
        if (info.shape.size() >= options_.max_rank)
          return entry_error(fmt::format("rank exceeds the limit of {}", options_.max_rank));
        info.shape.push_back(value.get<std::int64_t>());
        return true;
      }
      case Mode::tensors: return fail_with(fmt::format("tensors[{}]: not an object", index_.tensors.size()));
      case Mode::top: return fail_with("is not a JSON object with a \"tensors\" array");
    }
    return true;
  }

  bool entry_field(json value) {
    auto& info = index_.tensors.back();
    auto text = [&](const char* name) -> const std::string* {
      if (!value.is_string()) {
        entry_error(fmt::format("\"{}\" must be a string", name));
        return nullptr;
      }
      return &value.get_ref<const std::string&>();
    };
    if (key_ == "name") {
      const auto* s = text("name");
      if (!s) return false;
      info.name = *s;
      fields_.name = true;
    } else if (key_ == "section") {
      const auto* s = text("section");
      if (!s) return false;
      fields_.section_name = *s;
      fields_.section = true;
    } else if (key_ == "collection") {
      const auto* s = text("collection");
      if (!s) return false;
      fields_.collection = *s;
    } else if (key_ == "persistent") {
      if (!value.is_boolean()) return entry_error("\"persistent\" must be a boolean");
      fields_.persistent = value.get<bool>();
    } else if (key_ == "dtype") {
      const auto* s = text("dtype");
      if (!s) return false;
      const auto dtype = dtype_from_name(*s);
      if (!dtype) unknown_dtype_ = *s;  // reported once the entry's name is known
      else info.dtype = *dtype;
      fields_.dtype = true;
    } else if (key_ == "checksum") {
      const auto* s = text("checksum");
      if (!s) return false;
      std::uint64_t sum = 0;
      switch (parse_checksum(*s, sum)) {
        case ChecksumText::xxh3_64: index_.checksums.back() = sum; break;
        case ChecksumText::unknown_algorithm: break;  // unverifiable here, not corrupt (§7)
        case ChecksumText::malformed:
          return entry_error(fmt::format("checksum {} is not \"ALGORITHM:DIGITS\" (xxh3-64: 16 hex digits)", quote(*s)));
      }
    } else if (key_ == "shape") {
      return entry_error("\"shape\" must be an array");
    } else if (key_ == "blocks") {
      return entry_error("\"blocks\" must be an array");
    }
    return true;  // unknown fields are ignored
  }

  bool start_container(bool object) {
    switch (mode_) {
      case Mode::capture: return capture(object ? json::object() : json::array(), true);
      case Mode::skip: ++skip_depth_; return true;
      case Mode::top:
        if (!object) return fail_with("is not a JSON object with a \"tensors\" array");
        mode_ = Mode::root;
        return true;
      case Mode::root:
        if (key_ == "tensors") {
          if (object) return fail_with("\"tensors\" must be an array");
          if (saw_tensors_) return fail_with("\"tensors\" appears twice");
          saw_tensors_ = true;
          mode_ = Mode::tensors;
        } else if (key_ == "metadata") {
          if (!object) return fail_with("\"metadata\" must be an object");
          index_.metadata = json::object();
          stack_.assign(1, &index_.metadata);
          mode_ = Mode::capture;
          capture_return_ = Mode::root;
        } else {
          begin_skip(Mode::root);
        }
        return true;
      case Mode::tensors:
        if (!object) return fail_with(fmt::format("tensors[{}]: not an object", index_.tensors.size()));
        index_.tensors.emplace_back();
        index_.checksums.emplace_back();
        index_.blocks.emplace_back();
        fields_ = Fields();
        mode_ = Mode::entry;
        return true;
      case Mode::entry:
        if (key_ == "shape" && !object) {
          if (fields_.shape) return entry_error("\"shape\" appears twice");
          fields_.shape = true;
          mode_ = Mode::shape;
          return true;
        }
        // Per-block checksums (1.1, spec §7.1): small, captured as a tree and checked at the
        // entry's end, when its shape is known.
        if (key_ == "blocks" && !object) {
          fields_.blocks = json::array();
          stack_.assign(1, &fields_.blocks);
          mode_ = Mode::capture;
          capture_return_ = Mode::entry;
          return true;
        }
        if (key_ == "shape" || key_ == "blocks" || key_ == "name" || key_ == "section" || key_ == "dtype" || key_ == "checksum" ||
            key_ == "collection" || key_ == "persistent")
          return entry_error(fmt::format("\"{}\" has the wrong type", key_));
        begin_skip(Mode::entry);
        return true;
      case Mode::shape: return entry_error("\"shape\" must hold non-negative integers");
    }
    return true;
  }

  bool end_container() {
    switch (mode_) {
      case Mode::capture:
        stack_.pop_back();
        if (stack_.empty()) mode_ = capture_return_;
        return true;
      case Mode::skip:
        if (--skip_depth_ == 0) mode_ = skip_return_;
        return true;
      case Mode::shape: mode_ = Mode::entry; return true;
      case Mode::entry: mode_ = Mode::tensors; return finish_entry();
      case Mode::tensors: mode_ = Mode::root; return true;
      case Mode::root: mode_ = Mode::top; return true;
      case Mode::top: return true;
    }
    return true;
  }

  void begin_skip(Mode back) {
    skip_return_ = back;
    skip_depth_ = 1;
    mode_ = Mode::skip;
  }

  bool capture(json value, bool container) {
    json& top = *stack_.back();
    json* inserted = nullptr;
    if (top.is_array()) {
      top.push_back(std::move(value));
      inserted = &top.back();
    } else {
      inserted = &(top[key_] = std::move(value));
    }
    if (container) stack_.push_back(inserted);
    return true;
  }

  bool finish_entry() {
    auto& info = index_.tensors.back();
    if (!fields_.name) return entry_error("\"name\" must be a string");
    if (!fields_.section) return entry_error("\"section\" must be a string");
    if (!fields_.dtype) return entry_error("\"dtype\" must be a string");
    if (!fields_.shape) return entry_error("\"shape\" must be an array");
    if (!unknown_dtype_.empty()) return false;
    const std::string& section = fields_.section_name;
    if (section == kParametersSection) {
      info.role = Role::parameter;
    } else if (section == kBuffersSection) {
      info.role = Role::buffer;
      info.collection = fields_.collection.empty() ? std::string(kDefaultBufferCollection) : fields_.collection;
      info.persistent = fields_.persistent.value_or(true);
    } else if (section.empty()) {
      return entry_error("\"section\" is empty");
    } else {
      info.role = Role::extra;
      info.section = section;
    }
    if (!checked_mul(shape_numel_unchecked(info.shape), dtype_size(info.dtype)))
      return entry_error(fmt::format("shape {} overflows", shape_to_string(info.shape)));
    if (!fields_.blocks.is_null()) return finish_blocks(info);
    return true;
  }

  // Spec §7.1: every block inside the tensor, of its rank, none overlapping another, their
  // volumes summing to the tensor's element count (so together they cover it).
  bool finish_blocks(const TensorInfo& info) {
    std::vector<BlockChecksum> blocks;
    bool verifiable = true;
    const std::uint64_t numel = shape_numel_unchecked(info.shape);
    if (fields_.blocks.size() > std::max<std::uint64_t>(numel, 1))
      return entry_error(fmt::format("{} blocks for {} elements", fields_.blocks.size(), numel));
    std::uint64_t total = 0;
    for (std::size_t b = 0; b < fields_.blocks.size(); ++b) {
      const json& block = fields_.blocks[b];
      auto block_error = [&](const std::string& what) { return entry_error(fmt::format("blocks[{}]: {}", b, what)); };
      if (!block.is_object()) return block_error("not an object");
      BlockChecksum out;
      for (const char* field : {"offset", "shape"}) {
        const auto it = block.find(field);
        if (it == block.end() || !it->is_array() || it->size() != info.shape.size())
          return block_error(fmt::format("\"{}\" must be an array of {} non-negative integers", field, info.shape.size()));
        auto& dims = std::string_view(field) == "offset" ? out.box.offsets : out.box.sizes;
        for (const auto& v : *it) {
          if (!v.is_number_integer() || v.get<std::int64_t>() < 0)
            return block_error(fmt::format("\"{}\" must be an array of {} non-negative integers", field, info.shape.size()));
          dims.push_back(v.get<std::uint64_t>());
        }
      }
      const auto sum = block.find("checksum");
      if (sum == block.end() || !sum->is_string()) return block_error("\"checksum\" must be a string");
      switch (parse_checksum(sum->get_ref<const std::string&>(), out.xxh3)) {
        case ChecksumText::xxh3_64: break;
        case ChecksumText::unknown_algorithm: verifiable = false; break;  // §7: unverifiable, not corrupt
        case ChecksumText::malformed:
          return block_error(fmt::format("checksum {} is not \"ALGORITHM:DIGITS\" (xxh3-64: 16 hex digits)",
                                         quote(sum->get_ref<const std::string&>())));
      }
      if (!box_inside(out.box, info.shape))
        return block_error(fmt::format("{} lies outside the tensor {}", box_to_string(out.box), shape_to_string(info.shape)));
      total += *box_volume(out.box);  // inside the tensor: no overflow, and the sum stays <= numel below
      if (total > numel) return entry_error(fmt::format("blocks hold more than the tensor's {} elements", numel));
      blocks.push_back(std::move(out));
    }
    if (total != numel)
      return entry_error(fmt::format("blocks hold {} of the tensor's {} elements", total, numel));
    std::vector<Box> boxes;
    for (const auto& b : blocks) boxes.push_back(b.box);
    bool exhausted = false;
    if (const auto pair = find_overlap(boxes, overlap_budget_, exhausted))
      return entry_error(fmt::format("blocks[{}] {} and blocks[{}] {} overlap", pair->first, box_to_string(boxes[pair->first]),
                                     pair->second, box_to_string(boxes[pair->second])));
    if (exhausted) return entry_error("too many blocks to check for overlaps");
    if (verifiable) index_.blocks.back() = std::move(blocks);
    return true;
  }

  // Element count, or 2^64 - 1 on overflow (which then fails the size check too).
  static std::uint64_t shape_numel_unchecked(const Shape& shape) {
    std::uint64_t n = 1;
    for (auto d : shape) {
      auto m = checked_mul(n, static_cast<std::uint64_t>(d));
      if (!m) return UINT64_MAX;
      n = *m;
    }
    return n;
  }

 public:
  std::string unknown_dtype_;

 private:
  const ReadOptions& options_;
  Index& index_;
  Mode mode_ = Mode::top;
  Mode skip_return_ = Mode::root;
  std::size_t skip_depth_ = 0;
  std::string key_;
  Fields fields_;
  bool saw_tensors_ = false;
  Mode capture_return_ = Mode::root;
  // Comparisons the overlap checks of all entries may make together (spec §11).
  std::uint64_t overlap_budget_ = kOverlapBudget;
  std::vector<json*> stack_;
  std::vector<std::set<std::string>> members_{1};  // of each open container (arrays: unused)
};

}  // namespace

Index parse_index(std::string_view text, const ReadOptions& options, const std::string& file) {
  // The text ends at its first NUL; what follows must be NUL padding (fixed-length strings are
  // padded so), never more data.
  if (const auto nul = text.find('\0'); nul != std::string_view::npos) {
    if (text.find_first_not_of('\0', nul) != std::string_view::npos)
      fail(ErrorCode::format, file, "/index has bytes after its NUL padding (at offset {})", text.find_first_not_of('\0', nul));
    text = text.substr(0, nul);
  }
  if (text.starts_with("\xEF\xBB\xBF")) fail(ErrorCode::format, file, "/index starts with a byte order mark, which JSON text must not");
  Index index;
  IndexHandler handler(options, index);
  const bool ok = json::sax_parse(text.begin(), text.end(), &handler) && handler.finished();
  if (ok) return index;
  if (!handler.unknown_dtype_.empty())
    fail(ErrorCode::unsupported, file, "tensor {}: unknown dtype {}", quote(index.tensors.back().name),
         quote(handler.unknown_dtype_));
  fail(ErrorCode::format, file, "/index {}", handler.error);
}

void IndexWriter::add(const TensorInfo& info, std::optional<std::uint64_t> checksum,
                      const std::vector<BlockChecksum>& blocks) {
  json entry = {{"name", info.name}, {"section", info.section_name()}};
  if (info.role == Role::buffer) {
    entry["collection"] = info.collection.empty() ? std::string(kDefaultBufferCollection) : info.collection;
    entry["persistent"] = info.persistent;
  }
  entry["dtype"] = dtype_name(info.dtype);
  entry["shape"] = info.shape;
  if (checksum) entry["checksum"] = format_checksum(*checksum);
  if (!blocks.empty()) {
    json list = json::array();
    for (const auto& b : blocks)
      list.push_back({{"offset", b.box.offsets}, {"shape", b.box.sizes}, {"checksum", format_checksum(b.xxh3)}});
    entry["blocks"] = std::move(list);
  }
  std::string text;
  try {
    text = entry.dump();
  } catch (const json::type_error&) {
    fail(ErrorCode::invalid_argument, "", "name is not valid UTF-8");
  }
  if (!first_) text_ += ',';
  first_ = false;
  text_ += text;
}

std::string IndexWriter::finish(const Metadata& metadata) {
  text_ += R"(],"metadata":)";
  try {
    text_ += metadata.dump();
  } catch (const json::type_error&) {
    fail(ErrorCode::invalid_argument, "", "metadata holds a string that is not valid UTF-8");
  }
  text_ += '}';
  return std::move(text_);
}

}  // namespace ckpt::detail::ckpt_h5

// checkpoint-inspect: what is inside a checkpoint, without Python.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>

#include "ckpt/ckpt.h"
#include "cli_common.h"

namespace {

using namespace ckpt;
using json = nlohmann::ordered_json;

struct Options {
  std::string file, other;
  bool diff = false;
  double atol = 0, rtol = 0;
  bool json_output = false;
  bool stats = false;
  bool verify = false;
  std::string buffer_regex;
  std::string model_key;
  std::vector<std::string> slices;
};

struct Totals {
  std::size_t count = 0;
  std::uint64_t bytes = 0;
};

std::string role_column(const TensorInfo& t) {
  if (t.role == Role::buffer) {
    std::string s = "buffer";
    if (t.collection != kDefaultBufferCollection) s += "(" + t.collection + ")";
    if (!t.persistent) s += " non-persistent";
    return s;
  }
  if (t.role == Role::extra) return t.section;
  return "parameter";
}

std::string tensor_count(std::size_t n) { return fmt::format("{} tensor{}", n, n == 1 ? "" : "s"); }

std::vector<std::string> split_dots(const std::string& name) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    const auto dot = name.find('.', start);
    parts.push_back(name.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) return parts;
    start = dot + 1;
  }
}

json stats_json(const TensorStats& s) {
  json j = {{"count", s.count}, {"nan", s.nan_count}, {"inf", s.inf_count}};
  if (s.count) {
    j["min"] = s.min;
    j["max"] = s.max;
    j["mean"] = s.mean;
    j["std"] = s.std;
  }
  return j;
}

std::string stats_text(const TensorStats& s) {
  if (s.count == 0 && s.nan_count == 0 && s.inf_count == 0) return "(empty)";
  std::string text = s.count ? fmt::format("min {:.6g} max {:.6g} mean {:.6g} std {:.6g}", s.min, s.max, s.mean, s.std)
                             : "no finite values";
  if (s.nan_count) text += fmt::format(" nan {}", s.nan_count);
  if (s.inf_count) text += fmt::format(" inf {}", s.inf_count);
  return text;
}

// A --slice: "NAME" (the whole tensor) or "NAME[r0, r1, ...]" with one range per leading dimension
// (the rest whole): "a:b" (elements a to b-1), "a:", ":b", ":", or "i" (element i, keeping its
// dimension of size 1); negative numbers count from the end, as in Python.
struct SliceRequest {
  std::size_t index = 0;  // of the tensor in the reader
  std::string name;       // as asked for
  std::vector<std::uint64_t> offsets, sizes;
};

SliceRequest parse_slice(const std::string& text, Reader& reader) {
  auto bad = [&](const std::string& why) {
    throw Error(ErrorCode::invalid_argument, "", fmt::format("--slice '{}': {}", cli::one_line(text), why));
  };
  SliceRequest r;
  std::string ranges;
  const auto open_bracket = text.rfind('[');
  if (!text.empty() && text.back() == ']' && open_bracket != std::string::npos) {
    r.name = text.substr(0, open_bracket);
    ranges = text.substr(open_bracket + 1, text.size() - open_bracket - 2);
  } else {
    r.name = text;
  }
  try {
    r.index = reader.find(r.name);
  } catch (const Error&) {  // a tensor of an extra section: SECTION/NAME
    const auto slash = r.name.find('/');
    if (slash == std::string::npos) throw;
    r.index = reader.find(r.name.substr(slash + 1), r.name.substr(0, slash));
  }
  const Shape& shape = reader.tensors()[r.index].shape;
  std::vector<std::string> parts;
  for (std::size_t start = 0; !ranges.empty();) {
    const auto comma = ranges.find(',', start);
    parts.push_back(ranges.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  if (parts.size() > 1 && parts.back().find_first_not_of(' ') == std::string::npos) parts.pop_back();  // "w[1,]"
  for (const auto& part : parts)
    if (part.find_first_not_of(' ') == std::string::npos) bad("an empty range");
  if (parts.size() > shape.size()) bad(fmt::format("{} ranges for a tensor of rank {}", parts.size(), shape.size()));
  for (std::size_t k = 0; k < shape.size(); ++k) {
    const auto dim = shape[k];
    // A number as Python reads it, negative ones counting from the end; nullopt when empty.
    auto number = [&](std::string v) -> std::optional<std::int64_t> {
      v.erase(0, v.find_first_not_of(' '));
      v.erase(v.find_last_not_of(' ') + 1);
      if (v.empty()) return std::nullopt;
      std::size_t used = 0;
      std::int64_t n = 0;
      try {
        n = std::stoll(v, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != v.size()) bad(fmt::format("'{}' is not an index", v));
      return n < 0 ? n + dim : n;
    };
    // Ranges are clamped to the dimension, as Python's slices are; a single index must lie in it.
    auto bound = [&](std::string v, std::int64_t otherwise) {
      return std::clamp<std::int64_t>(number(std::move(v)).value_or(otherwise), 0, dim);
    };
    std::int64_t begin = 0, end = dim;
    if (k < parts.size()) {
      parts[k].erase(0, parts[k].find_first_not_of(' '));
      parts[k].erase(parts[k].find_last_not_of(' ') + 1);
      const auto colon = parts[k].find(':');
      if (colon == std::string::npos) {
        const auto index = number(parts[k]);
        if (!index || *index < 0 || *index >= dim)
          bad(fmt::format("index {} is outside dimension {} of size {}", parts[k], k, dim));
        begin = *index;
        end = begin + 1;
      } else {
        begin = bound(parts[k].substr(0, colon), 0);
        end = std::max(begin, bound(parts[k].substr(colon + 1), dim));
      }
    }
    r.offsets.push_back(static_cast<std::uint64_t>(begin));
    r.sizes.push_back(static_cast<std::uint64_t>(end - begin));
  }
  return r;
}

int print_slices(const Options& options, Reader& reader) {
  json all = json::array();
  for (const auto& text : options.slices) {
    const SliceRequest r = parse_slice(text, reader);
    const Tensor t = reader.read_slice(r.index, r.offsets, r.sizes);
    const std::string where = fmt::format("{}[{}]", r.name, fmt::join([&] {
      std::vector<std::string> out;
      for (std::size_t k = 0; k < r.offsets.size(); ++k) out.push_back(fmt::format("{}:{}", r.offsets[k], r.offsets[k] + r.sizes[k]));
      return out;
    }(), ", "));
    if (options.json_output) {
      std::string hex;
      for (const std::byte b : t.bytes()) hex += fmt::format("{:02x}", static_cast<unsigned>(b));
      all.push_back({{"name", r.name}, {"offsets", r.offsets}, {"sizes", r.sizes}, {"dtype", dtype_name(t.dtype())},
                     {"values", tensor_values(t)}, {"hex", hex}});
    } else {
      fmt::print("{} {} {}\n{}\n", where, dtype_name(t.dtype()), shape_to_string(t.shape()), tensor_values(t).dump());
    }
  }
  if (options.json_output) fmt::print("{}\n", all.dump(2));
  return cli::kOk;
}

int inspect(const Options& options) {
  ReadOptions read_options;
  read_options.buffer_regex = options.buffer_regex;
  read_options.model_key = options.model_key;
  auto reader = open(options.file, read_options);
  if (!options.slices.empty()) return print_slices(options, *reader);
  const auto& tensors = reader->tensors();

  std::size_t verified = 0;
  if (options.verify) {
    verified = reader->verify(cli::terminal_progress("verifying"));
    cli::finish_progress();
  }
  std::vector<TensorStats> stats;
  if (options.stats) {
    for (std::size_t i = 0; i < tensors.size(); ++i) stats.push_back(compute_stats(reader->read(i)));
  }

  Totals parameters, buffers;
  std::map<std::string, Totals> sections;
  std::vector<std::string> collections;
  for (const auto& t : tensors) {
    Totals& totals = t.role == Role::parameter ? parameters : t.role == Role::buffer ? buffers : sections[t.section];
    ++totals.count;
    totals.bytes += t.nbytes();
    if (t.role == Role::buffer && std::find(collections.begin(), collections.end(), t.collection) == collections.end())
      collections.push_back(t.collection);
  }
  // A directory (a distributed checkpoint): the bytes of the files in it.
  std::error_code ec;
  std::uintmax_t file_bytes = 0;
  if (std::filesystem::is_directory(options.file, ec)) {
    for (const auto& entry : std::filesystem::directory_iterator(options.file, ec))
      if (entry.is_regular_file(ec)) file_bytes += entry.file_size(ec);
  } else {
    file_bytes = std::filesystem::file_size(options.file, ec);
  }

  if (options.json_output) {
    json out;
    out["file"] = options.file;
    out["file_bytes"] = file_bytes;
    out["format"] = reader->format();
    out["format_version"] = reader->format_version();
    out["role_source"] = role_source_name(reader->role_source());
    out["model_key"] = reader->model_key();
    out["parameters"] = {{"count", parameters.count}, {"bytes", parameters.bytes}};
    out["buffers"] = {{"count", buffers.count}, {"bytes", buffers.bytes}, {"collections", collections}};
    json section_json = json::object();
    for (const auto& [name, totals] : sections) section_json[name] = {{"count", totals.count}, {"bytes", totals.bytes}};
    out["sections"] = section_json;
    json list = json::array();
    for (std::size_t i = 0; i < tensors.size(); ++i) {
      const auto& t = tensors[i];
      json entry = {{"name", t.name}, {"role", role_name(t.role)}};
      if (t.role == Role::extra) entry["section"] = t.section;
      if (t.role == Role::buffer) {
        entry["collection"] = t.collection;
        entry["persistent"] = t.persistent;
      }
      entry["dtype"] = dtype_name(t.dtype);
      entry["shape"] = t.shape;
      entry["bytes"] = t.nbytes();
      if (const auto sum = reader->checksum(i)) entry["checksum"] = fmt::format("xxh3-64:{:016x}", *sum);
      if (options.stats) entry["stats"] = stats_json(stats[i]);
      list.push_back(std::move(entry));
    }
    out["tensors"] = std::move(list);
    out["metadata"] = reader->metadata();
    if (!reader->notes().empty()) out["notes"] = reader->notes();
    if (options.verify) out["verify"] = {{"ok", true}, {"checked", verified}};
    fmt::print("{}\n", out.dump(2));
    return cli::kOk;
  }

  fmt::print("file:        {} ({})\n", options.file, cli::human_bytes(file_bytes));
  fmt::print("format:      {}{}\n", reader->format(),
             reader->format_version().empty() ? "" : " " + reader->format_version());
  fmt::print("roles:       {}\n", role_source_name(reader->role_source()));
  if (!reader->model_key().empty()) fmt::print("model:       the dict at key '{}'\n", reader->model_key());
  fmt::print("parameters:  {}, {}\n", tensor_count(parameters.count), cli::human_bytes(parameters.bytes));
  fmt::print("buffers:     {}, {}{}\n", tensor_count(buffers.count), cli::human_bytes(buffers.bytes),
             collections.empty() ? "" : fmt::format(" (collections: {})", fmt::join(collections, ", ")));
  for (const auto& [name, totals] : sections)
    fmt::print("section {}: {}, {}\n", name, tensor_count(totals.count), cli::human_bytes(totals.bytes));
  if (!reader->metadata().empty()) fmt::print("metadata:    {}\n", reader->metadata().dump());
  for (const auto& note : reader->notes()) fmt::print("note:        {}\n", cli::one_line(note));
  if (options.verify)
    fmt::print("verify:      ok, {} checksums match{}\n", verified,
               verified < tensors.size() ? fmt::format(" ({} tensors have none)", tensors.size() - verified) : "");

  // The tree: one line per module path component, tensors as leaves with aligned columns.
  struct Line {
    std::vector<std::string> cells;  // label only for a module; label, role, dtype, shape, size[, stats]
  };
  std::vector<Line> lines;
  std::vector<std::string> open;  // module path of the previous tensor
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    std::vector<std::string> parts = split_dots(t.name);
    if (t.role == Role::extra) parts.insert(parts.begin(), "[" + t.section + "]");
    std::size_t common = 0;
    while (common < open.size() && common + 1 < parts.size() && open[common] == parts[common]) ++common;
    for (std::size_t k = common; k + 1 < parts.size(); ++k) lines.push_back({{std::string(2 * k, ' ') + parts[k]}});
    open.assign(parts.begin(), parts.end() - 1);
    Line leaf{{std::string(2 * (parts.size() - 1), ' ') + parts.back(), role_column(t), std::string(dtype_name(t.dtype)),
               shape_to_string(t.shape), cli::human_bytes(t.nbytes())}};
    if (options.stats) leaf.cells.push_back(stats_text(stats[i]));
    lines.push_back(std::move(leaf));
  }
  std::vector<std::size_t> widths;
  for (const auto& l : lines)
    if (l.cells.size() > 1)
      for (std::size_t c = 0; c < l.cells.size(); ++c) {
        if (widths.size() <= c) widths.push_back(0);
        widths[c] = std::max(widths[c], l.cells[c].size());
      }
  fmt::print("\n");
  for (const auto& l : lines) {
    if (l.cells.size() == 1) {
      fmt::print("{}\n", l.cells[0]);
      continue;
    }
    std::string row;
    for (std::size_t c = 0; c < l.cells.size(); ++c) {
      const bool last = c + 1 == l.cells.size();
      if (c == 4) row += fmt::format("{:>{}}", l.cells[c], widths[c]);  // sizes align right
      else row += last ? l.cells[c] : fmt::format("{:<{}}", l.cells[c], widths[c]);
      if (!last) row += "  ";
    }
    fmt::print("{}\n", row);
  }
  return cli::kOk;
}

std::string shape_text(const Shape& shape) { return fmt::format("[{}]", fmt::join(shape, ", ")); }

// --diff: A against B, in any formats; exit 0 when equal within tolerance, 4 when not.
int diff_files(const Options& options) {
  ReadOptions read;
  read.buffer_regex = options.buffer_regex;
  read.model_key = options.model_key;
  read.zero_copy = false;
  auto a = open(options.file, read);
  auto b = open(options.other, read);
  DiffOptions d;
  d.atol = options.atol;
  d.rtol = options.rtol;
  const DiffResult r = diff(*a, *b, d);
  const auto differing = std::count_if(r.tensors.begin(), r.tensors.end(), [](const TensorDiff& t) { return !t.same(); });
  if (options.json_output) {
    json out = {{"a", options.file}, {"b", options.other}, {"equal", r.equal()}, {"atol", options.atol},
                {"rtol", options.rtol}, {"only_in_a", r.only_in_a}, {"only_in_b", r.only_in_b},
                {"compared", r.tensors.size()}, {"differing", differing}, {"metadata_equal", r.metadata_equal},
                {"tensors", json::array()}};
    for (const auto& t : r.tensors) {
      json e = {{"name", t.key}, {"same", t.same()}};
      if (t.role_a != t.role_b) e["role"] = {t.role_a, t.role_b};
      if (t.dtype_a != t.dtype_b) e["dtype"] = {dtype_name(t.dtype_a), dtype_name(t.dtype_b)};
      if (t.shape_a != t.shape_b) e["shape"] = {t.shape_a, t.shape_b};
      if (t.compared) {
        e["max_abs"] = std::isfinite(t.max_abs) ? json(t.max_abs) : json(fmt::format("{}", t.max_abs));
        e["max_rel"] = std::isfinite(t.max_rel) ? json(t.max_rel) : json(fmt::format("{}", t.max_rel));
        e["mismatched"] = t.mismatched;
      }
      out["tensors"].push_back(std::move(e));
    }
    fmt::print("{}\n", out.dump(2));
  } else {
    if (!r.only_in_a.empty()) fmt::print("only in A: {}\n", fmt::join(r.only_in_a, ", "));
    if (!r.only_in_b.empty()) fmt::print("only in B: {}\n", fmt::join(r.only_in_b, ", "));
    for (const auto& t : r.tensors) {
      if (t.same() && t.max_abs == 0) continue;
      std::vector<std::string> what;
      if (t.role_a != t.role_b) what.push_back(fmt::format("role {} vs {}", t.role_a, t.role_b));
      if (t.dtype_a != t.dtype_b) what.push_back(fmt::format("dtype {} vs {}", dtype_name(t.dtype_a), dtype_name(t.dtype_b)));
      if (t.shape_a != t.shape_b) what.push_back(fmt::format("shape {} vs {}", shape_text(t.shape_a), shape_text(t.shape_b)));
      if (t.compared && (t.max_abs != 0 || t.mismatched))
        what.push_back(fmt::format("max abs diff {:.6g}, max rel diff {:.6g}, {} of {} values outside tolerance",
                                   t.max_abs, t.max_rel, t.mismatched, shape_numel(t.shape_a)));
      fmt::print("{}: {}{}\n", t.key, fmt::join(what, "; "), t.same() ? " (within tolerance)" : "");
    }
    fmt::print("{}: {} tensors compared, {} differ, {} only in A, {} only in B; metadata {}\n",
               r.equal() ? "equal" : "different", r.tensors.size(), differing, r.only_in_a.size(),
               r.only_in_b.size(), r.metadata_equal ? "same" : "differs");
  }
  return r.equal() ? cli::kOk : cli::kDiffer;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  CLI::App app{
      "Show what is inside a checkpoint: format, parameters and buffers, a tree by module path with\n"
      "role, dtype, shape and size, and metadata. Formats are detected by content: "
      "ckpt-h5, safetensors, pytorch (.pt, TorchScript), flax (msgpack), numpy (.npz, .npy), Boost archives;\n"
      "FILE may also be the directory of a PyTorch distributed checkpoint (.metadata and .distcp files).\n"
      "Notes say what a reader left out (a distributed checkpoint's values that are not plain data).\n\n"
      "With --diff, compares FILE (A) with OTHER (B), in any formats: names only in one, role, dtype and\n"
      "shape mismatches, and per tensor the largest absolute and relative difference.\n\n"
      "Exit codes: 0 ok (--diff: equal within tolerance), 1 a file could not be read, 2 bad usage,\n"
      "3 a checksum does not match, 4 (--diff) the checkpoints differ.",
      "checkpoint-inspect"};
  app.add_option("FILE", options.file, "Checkpoint to inspect, a file or a distributed checkpoint's directory (with --diff: A)")->required();
  app.add_option("OTHER", options.other, "With --diff: the checkpoint to compare with (B)");
  app.add_flag("--diff", options.diff, "Compare FILE with OTHER (exit 4 when they differ)");
  app.add_option("--atol", options.atol, "--diff: absolute tolerance (|a-b| <= atol + rtol*|b|; default 0)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--rtol", options.rtol, "--diff: relative tolerance (default 0)")->check(CLI::NonNegativeNumber);
  app.add_flag("--json", options.json_output,
               "Print JSON: format, format_version, file_bytes, role_source, parameters{count,bytes}, "
               "buffers{count,bytes,collections}, sections, tensors[{name,role,section,collection,persistent,"
               "dtype,shape,bytes,checksum,stats}], metadata, notes (when any), verify");
  app.add_flag("--stats", options.stats, "Per tensor: min, max, mean, std over finite values; NaN and Inf counts");
  app.add_flag("--verify", options.verify, "Read every tensor and check its stored checksum (exit 3 on mismatch)");
  app.add_option("--buffers", options.buffer_regex,
                 "Files without stored roles: tensors whose full name matches this regex are buffers "
                 "(besides integer/bool tensors and running_mean/running_var/num_batches_tracked)");
  app.add_option("--slice", options.slices,
                 "Print the values of NAME or NAME[a:b, i, :] (one range per leading dimension, the rest whole; a "
                 "single index keeps its dimension; negative numbers count from the end), reading only what the slice "
                 "needs; repeatable; with --json: name, offsets, sizes, dtype, values (nested; NaN and Inf as strings) "
                 "and hex (the little-endian bytes)");
  app.add_option("--key", options.model_key,
                 "Nested .pt and distributed checkpoints: dotted key of the dict holding the model (default: found "
                 "automatically)");
  app.set_version_flag("--version", CKPT_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    ckpt::cli::print_error("checkpoint-inspect", e.what());
    return ckpt::cli::kUsage;
  }
  if (options.diff != !options.other.empty()) {
    ckpt::cli::print_error("checkpoint-inspect",
                           options.diff ? "--diff needs two files: FILE OTHER" : "a second file is only taken with --diff");
    return ckpt::cli::kUsage;
  }
  return ckpt::cli::run_guarded("checkpoint-inspect",
                                [&] { return options.diff ? diff_files(options) : inspect(options); });
}

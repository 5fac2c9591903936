// checkpoint-convert: any supported checkpoint format to any other, keeping roles and metadata.
#include <malloc.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <charconv>
#include <fmt/format.h>

#include "ckpt/ckpt.h"
#include "cli_common.h"

namespace {

using namespace ckpt;

struct Options {
  std::string input, output, to, compression = "none", buffer_regex, model_key, layout, embedding, conv_transpose,
      layout_template,
      max_shard_size;
  bool force = false, no_checksums = false, quiet = false, keep_unmapped = false;
  std::uint64_t chunk_bytes = 4u << 20;
  unsigned threads = 0;
};

void parse_compression(const std::string& text, WriteOptions& write) {
  if (text == "none") {
    write.compression = Compression::none;
    return;
  }
  if (text.rfind("zstd", 0) == 0) {
    write.compression = Compression::zstd;
    if (text.size() == 4) return;
    int level = 0;
    const char* begin = text.data() + 5;
    const char* end = text.data() + text.size();
    auto [ptr, ec] = std::from_chars(begin, end, level);
    if (text[4] == ':' && ec == std::errc() && ptr == end) {
      write.zstd_level = level;
      return;
    }
  }
  if (text == "deflate") {
    write.compression = Compression::deflate;
    return;
  }
  throw Error(ErrorCode::invalid_argument, "",
              fmt::format("--compression '{}': expected none, zstd, zstd:LEVEL (ckpt-h5) or deflate (numpy .npz)", text));
}

int convert_files(const Options& o) {
  ConvertOptions options;
  options.read.buffer_regex = o.buffer_regex;
  options.read.model_key = o.model_key;
  options.write.format = o.to;
  options.write.overwrite = o.force;
  options.write.checksums = !o.no_checksums;
  options.write.chunk_bytes = o.chunk_bytes;
  options.write.threads = o.threads;
  options.read.threads = o.threads;
  parse_compression(o.compression, options.write);
  if (!o.max_shard_size.empty()) options.write.max_shard_bytes = cli::parse_size(o.max_shard_size);
  if (!o.to.empty() && !find_format(o.to))
    throw Error(ErrorCode::invalid_argument, "", fmt::format("--to '{}': unknown format ({})", o.to, writable_format_names()));
  if (!o.to.empty() && !find_format(o.to)->write)
    throw Error(ErrorCode::invalid_argument, "",
                fmt::format("--to '{}': ckpt reads {} but does not write it (output formats: {})", o.to, o.to,
                            writable_format_names()));
  if (o.to.empty() && !format_for_extension(o.output))
    throw Error(ErrorCode::invalid_argument, o.output,
                fmt::format("cannot tell the output format from the extension; use --to ({})", writable_format_names()));
  const FormatHandler* out_format = !o.to.empty() ? find_format(o.to) : format_for_extension(o.output);
  if (options.write.compression == Compression::zstd && out_format->name != "ckpt-h5")
    throw Error(ErrorCode::invalid_argument, "", fmt::format("--compression zstd applies to ckpt-h5 output, not {}", out_format->name));
  if (options.write.compression == Compression::deflate && out_format->name != "numpy")
    throw Error(ErrorCode::invalid_argument, "", fmt::format("--compression deflate applies to numpy output, not {}", out_format->name));
  if (!o.max_shard_size.empty() && out_format->name != "safetensors" && out_format->name != "safetensors-sharded")
    throw Error(ErrorCode::invalid_argument, "", "--max-shard-size applies to safetensors output only");
  {
    // Only a regular file is ever replaced (--force or not); say so before any work is done.
    std::error_code ec;
    const auto st = std::filesystem::symlink_status(o.output, ec);
    if (std::filesystem::is_symlink(st))
      throw Error(ErrorCode::io, o.output, "is a symbolic link: not replacing it (write to the file itself)");
    if (std::filesystem::is_directory(st)) throw Error(ErrorCode::io, o.output, "is a directory");
    if (std::filesystem::exists(st) && !std::filesystem::is_regular_file(st))
      throw Error(ErrorCode::io, o.output, "is not a regular file (a device, FIFO or socket): not replacing it");
    if (!o.force && std::filesystem::exists(st))
      throw Error(ErrorCode::io, o.output, "already exists; use --force to replace it");
  }
  LayoutReport report;
  if (!o.layout.empty()) {
    LayoutOptions layout;
    if (o.layout == "flax") layout.target = Layout::flax;
    else if (o.layout == "torch") layout.target = Layout::torch;
    else throw Error(ErrorCode::invalid_argument, "", fmt::format("--layout '{}': expected flax or torch", o.layout));
    layout.keep_unmapped = o.keep_unmapped;
    layout.embedding = o.embedding;
    layout.conv_transpose = o.conv_transpose;
    if (!o.layout_template.empty()) layout.template_tensors = open(o.layout_template)->tensors();
    options.layout = layout;
    options.layout_report = &report;
  } else if (o.keep_unmapped || !o.embedding.empty() || !o.conv_transpose.empty() || !o.layout_template.empty()) {
    throw Error(ErrorCode::invalid_argument, "", "--keep-unmapped, --embedding, --conv-transpose and --template need --layout");
  }
  if (!o.quiet) options.write.progress = cli::terminal_progress("converting");
  // Notes say what a format left out or what was decided for the user: printed once the output
  // is written, even with --quiet.
  std::vector<std::string> notes;
  options.write.notice = [&notes](const std::string& note) { notes.push_back(note); };
  const std::size_t count = convert(o.input, o.output, options);
  cli::finish_progress();
  for (const auto& note : report.notes) fmt::print(stderr, "checkpoint-convert: note: {}\n", cli::one_line(note));
  for (const auto& note : notes) fmt::print(stderr, "checkpoint-convert: note: {}\n", cli::one_line(note));
  if (!o.quiet) {
    if (!report.dropped.empty())
      fmt::print(stderr, "checkpoint-convert: dropped {} (values kept in metadata '{}'): {}\n",
                 report.dropped.size() == 1 ? "1 tensor" : fmt::format("{} tensors", report.dropped.size()),
                 kLayoutKey, fmt::join(report.dropped, ", "));
    if (!report.unmapped.empty())
      fmt::print(stderr, "checkpoint-convert: left {} as they were (--keep-unmapped): {}\n",
                 report.unmapped.size() == 1 ? "1 tensor" : fmt::format("{} tensors", report.unmapped.size()),
                 fmt::join(report.unmapped, ", "));
    std::error_code ec;
    const auto size = std::filesystem::file_size(o.output, ec);
    if (!ec) {
      fmt::print(stderr, "checkpoint-convert: wrote {} tensors to {} ({})\n", count, o.output, cli::human_bytes(size));
    } else {  // sharded: NAME.safetensors became shards and an index
      std::string stem = std::filesystem::path(o.output).filename().string();
      if (stem.ends_with(".safetensors")) stem.resize(stem.size() - 12);
      fmt::print(stderr, "checkpoint-convert: wrote {} tensors to shards {}-*-of-*.safetensors and {}.safetensors.index.json\n",
                 count, (std::filesystem::path(o.output).parent_path() / stem).string(), stem);
    }
  }
  return cli::kOk;
}

}  // namespace

int main(int argc, char** argv) {
  // Conversion allocates and frees one tensor-sized buffer after another, between HDF5's small
  // allocations. glibc's adaptive threshold would then serve them from the heap, where aligned
  // blocks leave holes the next one does not fit, and the heap grows by a tensor each time
  // (measured: 1 GB resident converting 1 GiB). A fixed threshold maps them and gives them back.
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  Options o;
  CLI::App app{
      "Convert a checkpoint between formats, keeping parameter/buffer roles, sections and metadata.\n"
      "The input format is detected by content (ckpt-h5, safetensors, pytorch .pt incl. TorchScript,\n"
      "flax msgpack, numpy, Boost archives), or IN is the directory of a PyTorch distributed checkpoint\n"
      "(torch.distributed.checkpoint: .metadata and .distcp files, from any number of ranks; read only:\n"
      "its chunks are assembled one tensor at a time). The output format comes from --to or OUT's extension:\n"
      "  .ckpt.h5 .h5 .hdf5 .ckpt  ckpt-h5\n"
      "  .safetensors              safetensors (--max-shard-size: shards and an index)\n"
      "  .safetensors.index.json   sharded safetensors (read: the index and all its shards)\n"
      "  .pt .pth .bin             pytorch: a state_dict, or the whole checkpoint when the input was one\n"
      "  .msgpack .flax            flax: {collection: nested dict}\n"
      "  .npz .npy                 numpy\n"
      "  .boost.txt .boost.xml .boost.bin   Boost text/xml/binary archive of a StateDict\n"
      "The output is written atomically: on failure (a full disk, a kill) an existing OUT is left as it was,\n"
      "and only a regular file is ever replaced (not a symbolic link, directory, device or FIFO).\n\n"
      "Exit codes: 0 ok, 1 the input could not be read or the output written, 2 bad usage,\n"
      "3 a checksum in the input does not match.",
      "checkpoint-convert"};
  app.add_option("IN", o.input, "Checkpoint to read: a file, or a distributed checkpoint's directory")->required();
  app.add_option("OUT", o.output, "File to write")->required();
  app.add_option("--to", o.to, "Output format: " + writable_format_names() + " (default: from OUT's extension)");
  app.add_option("--compression", o.compression, "none; zstd or zstd:LEVEL (1-22; default 1) for ckpt-h5; deflate for numpy .npz")
      ->capture_default_str();
  app.add_option("--buffers", o.buffer_regex,
                 "Inputs without stored roles: tensors whose full name matches this regex are buffers "
                 "(besides integer/bool tensors and running_mean/running_var/num_batches_tracked)");
  app.add_option("--key", o.model_key,
                 "Nested .pt and distributed checkpoints: dotted key of the dict holding the model (default: found "
                 "automatically); other tensors go to sections named by their top-level key (\"optimizer\")");
  app.add_option("--chunk-size", o.chunk_bytes, "ckpt-h5 output with zstd: bytes per compressed chunk")
      ->capture_default_str()
      ->check(CLI::PositiveNumber);
  app.add_option("--threads", o.threads, "Threads compressing or decompressing ckpt-h5 zstd chunks (default: one per core); each holds about 4 chunks of memory compressing, 2 decompressing (16 / 8 MiB at the default chunk size)");
  app.add_option("--layout", o.layout,
                 "Map between PyTorch and Flax layouts: flax (torch names and [out, in] weights to Flax kernels, "
                 "scales, embeddings and batch_stats) or torch (the inverse); see format-spec/conventions.md")
      ->check(CLI::IsMember({"flax", "torch"}));
  app.add_flag("--keep-unmapped", o.keep_unmapped,
               "With --layout: carry tensors the mapping cannot place over unchanged instead of failing");
  app.add_option("--embedding", o.embedding,
                 "With --layout: modules whose whole name matches this regex are Embeddings (a state_dict cannot "
                 "tell them from Linear layers without bias; whole pickled modules and TorchScript files name their "
                 "classes; otherwise names such as emb, embed_tokens, wte, word_embeddings decide, with a note)");
  app.add_option("--conv-transpose", o.conv_transpose,
                 "With --layout: modules whose whole name matches this regex are ConvTranspose layers (needed "
                 "only for state_dicts, as --embedding)");
  app.add_option("--template", o.layout_template,
                 "With --layout: a checkpoint in the target layout (e.g. the Flax model's own); its names and shapes "
                 "decide which 2-D weights are Embeddings and which are Linear kernels")
      ->check(CLI::ExistingPath);
  app.add_option("--max-shard-size", o.max_shard_size,
                 "safetensors output: shards of at most this size (5GB, 500MiB, bytes) with NAME.safetensors.index.json, "
                 "as huggingface writes them");
  app.add_flag("--no-checksums", o.no_checksums, "Do not store per-tensor checksums");
  app.add_flag("-f,--force", o.force, "Replace OUT if it exists");
  app.add_flag("-q,--quiet", o.quiet, "No progress and no summary on stderr (notes on what a format leaves out still print)");
  app.set_version_flag("--version", CKPT_VERSION);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    ckpt::cli::print_error("checkpoint-convert", e.what());
    return ckpt::cli::kUsage;
  }
  return ckpt::cli::run_guarded("checkpoint-convert", [&] { return convert_files(o); });
}

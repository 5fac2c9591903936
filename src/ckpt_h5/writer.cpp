// ckpt-h5 writer: streams tensors from a Source into a temporary HDF5 file, one at a time, then
// writes the index and renames the file into place (format-spec/ckpt-h5.md).
#include <zstd.h>

#include <future>
#include <map>
#include <memory>

#include "ckpt/ckpt_h5.h"
#include "ckpt/version.h"
#include "ckpt_h5/chunks.h"
#include "ckpt_h5/index.h"
#include "ckpt_h5/schema.h"
#include "util/atomic_file.h"
#include "util/bytes.h"
#include "util/checksum.h"
#include "util/mapped_file.h"
#include "util/parallel.h"

namespace ckpt {
namespace {

using detail::fail;
namespace h5 = detail::h5;
namespace schema = detail::ckpt_h5;

std::vector<std::uint64_t> to_dims(const Shape& shape) { return {shape.begin(), shape.end()}; }

// Per compression worker: scratch for one chunk (an edge chunk padded to full size, the
// shuffled bytes) and zstd's context.
struct ZstdWorker {
  std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> cctx{ZSTD_createCCtx(), ZSTD_freeCCtx};
  std::vector<std::byte> padded, shuffled;
};
// A compressed chunk waiting to be written: the buffer keeps its full size (shrinking and growing
// it again would zero-fill it for every chunk), `size` says how much of it is the frame.
struct CompressedChunk {
  std::vector<std::byte> frame;
  std::size_t size = 0;
};

class Writer {
 public:
  Writer(Source& source, const std::filesystem::path& path, const WriteOptions& options)
      : source_(source), options_(options), name_(path.string()), file_(path, options.overwrite) {}

  void run() {
    h5::register_zstd_filter();
    const h5::Where w{name_};
    file_.close_fd();  // HDF5 reopens the temporary by name
    h5::Handle file = h5::create_file(w, file_.temp_path(), {});
    h5::write_string_attribute(w, file, schema::kFormatAttribute, schema::kFormatName);
    h5::write_uint_array_attribute(w, file, schema::kVersionAttribute, {kCkptH5VersionMajor, kCkptH5VersionMinor});
    h5::write_string_attribute(w, file, schema::kWriterAttribute, "ckpt " CKPT_VERSION);
    groups_.emplace(std::string(kParametersSection), h5::create_group(w, file, std::string(kParametersSection)));
    groups_.emplace(std::string(kBuffersSection), h5::create_group(w, file, std::string(kBuffersSection)));

    const auto& infos = source_.tensors();
    std::uint64_t total = 0, done = 0;
    for (const auto& info : infos) total += info.nbytes();
    schema::IndexWriter index;
    for (std::size_t i = 0; i < infos.size(); ++i) {
      const TensorInfo& info = infos[i];
      const Tensor tensor = source_.read_checked(i, name_);
      write_tensor(file, info, tensor, source_.file_span(i), index);
      done += info.nbytes();
      if (options_.progress) options_.progress(done, total);
    }
    std::string index_text;
    try {
      index_text = index.finish(source_.metadata());
    } catch (const Error& e) {
      throw Error(e.code(), name_, e.message());
    }
    h5::write_string_dataset(w, file, schema::kIndexDataset, index_text);
    groups_.clear();
    sections_group_ = h5::Handle();
    h5::close_file(w, file);
    file_.commit();
  }

 private:
  const h5::Handle& group_for(const h5::Handle& file, const TensorInfo& info) {
    const std::string section(info.section_name());
    auto it = groups_.find(section);
    if (it != groups_.end()) return it->second;
    const h5::Where w{name_};
    if (!sections_group_.valid()) sections_group_ = h5::create_group(w, file, schema::kSectionsGroup);
    return groups_.emplace(section, h5::create_group(w, sections_group_, schema::encode_link_name(section)))
        .first->second;
  }

  int out_fd(const h5::Handle& file) {
    if (!out_fd_.valid()) out_fd_ = detail::UniqueFd(h5::duplicate_file_descriptor({name_}, file));
    return out_fd_.get();
  }

  // `from`: where the tensor's bytes also lie in a file (Source::file_span). Contiguous data is then
  // copied there inside the kernel, into the space HDF5 allocated for it at creation; HDF5 never
  // touches that space itself (no fill value, and raw data it does not write is not cached).
  void write_tensor(const h5::Handle& file, const TensorInfo& info, const Tensor& tensor,
                    const std::optional<Source::FileSpan>& from, schema::IndexWriter& index) {
    const h5::Where w{name_};
    const auto dims = to_dims(info.shape);
    const std::string link = schema::encode_link_name(info.name);
    const h5::Handle& group = group_for(file, info);
    const h5::Handle type = schema::file_type(info.dtype);
    const std::size_t itemsize = dtype_size(info.dtype);
    const bool compress = options_.compression == Compression::zstd && !dims.empty() && tensor.numel() > 0 &&
                          tensor.nbytes() >= options_.min_compress_bytes;
    try {
      h5::DatasetLayout layout;
      if (compress) {
        layout.chunked = true;
        layout.chunk = schema::choose_chunk(dims, itemsize, options_.chunk_bytes);
        if (itemsize > 1) layout.filters.push_back({h5::kShuffleFilter, {}});
        layout.filters.push_back({h5::kZstdFilter, {static_cast<unsigned>(options_.zstd_level)}});
      }
      layout.allocate_early = !compress && from && tensor.nbytes() > 0;
      h5::Handle dataset = h5::create_dataset(w, group, link, type, dims, layout);
      const auto offset = layout.allocate_early ? h5::contiguous_offset(dataset) : std::nullopt;
      if (compress) write_compressed(dataset, dims, layout.chunk, tensor);
      else if (offset) detail::write_at(out_fd(file), *offset, tensor.bytes(), from, name_);
      else if (tensor.nbytes() > 0) h5::write_all(w, dataset, type, tensor.bytes().data());
      if (schema::stored_as_raw_bytes(info.dtype))
        h5::write_string_attribute(w, dataset, schema::kDtypeAttribute, std::string(dtype_name(info.dtype)));
      index.add(info, options_.checksums ? std::optional(detail::xxh3_64(tensor.bytes())) : std::nullopt);
    } catch (const Error& e) {
      throw Error(e.code(), name_, fmt::format("tensor {}: {}", detail::quote(info.name), e.message()));
    }
  }

  // Chunks are shuffled and compressed on worker threads (HDF5 itself would compress on one
  // thread), a batch of one chunk per worker at a time, and written in order with H5Dwrite_chunk
  // on a helper thread while the next batch compresses: two sets of compressed chunks alternate.
  void write_compressed(const h5::Handle& dataset, const std::vector<std::uint64_t>& dims,
                        const std::vector<std::uint64_t>& chunk, const Tensor& tensor) {
    const std::size_t itemsize = dtype_size(tensor.dtype());
    std::uint64_t chunk_bytes = itemsize;
    for (auto c : chunk) chunk_bytes *= c;
    const auto origins = schema::chunk_origins(dims, chunk);
    const unsigned workers = detail::worker_count(options_.threads);
    workers_.resize(std::max<std::size_t>(workers_.size(), workers));
    if (chunks_.size() < 2 * workers) chunks_.resize(2 * workers);
    const std::size_t bound = ZSTD_compressBound(chunk_bytes);
    std::future<void> writing;  // the previous batch's writes
    for (std::size_t first = 0, set = 0; first < origins.size(); first += workers, set ^= 1) {
      const std::size_t count = std::min<std::size_t>(workers, origins.size() - first);
      CompressedChunk* out = &chunks_[set * workers];
      detail::parallel_for(count, workers, [&](unsigned w, std::size_t j) {
        ZstdWorker& worker = workers_[w];
        CompressedChunk& compressed = out[j];
        if (compressed.frame.size() < bound) compressed.frame.resize(bound);
        // A chunk inside the tensor is one contiguous run of its bytes: used where it lies. An
        // edge chunk is copied and padded first.
        std::span<const std::byte> input;
        if (const auto start = schema::interior_chunk_start(dims, chunk, origins[first + j]))
          input = tensor.bytes().subspan(*start * itemsize, chunk_bytes);
        else {
          worker.padded.resize(chunk_bytes);
          schema::copy_tensor_to_chunk(tensor.bytes(), worker.padded, dims, chunk, origins[first + j], itemsize);
          input = worker.padded;
        }
        if (itemsize > 1) {
          worker.shuffled.resize(chunk_bytes);
          schema::shuffle(input, worker.shuffled, itemsize);
          input = worker.shuffled;
        }
        const std::size_t n = ZSTD_compressCCtx(worker.cctx.get(), compressed.frame.data(), compressed.frame.size(),
                                                input.data(), input.size(), options_.zstd_level);
        if (ZSTD_isError(n)) fail(ErrorCode::io, name_, "zstd compression failed: {}", ZSTD_getErrorName(n));
        compressed.size = n;
      });
      if (writing.valid()) writing.get();  // rethrows its error
      writing = std::async(std::launch::async, [this, &dataset, &origins, first, count, out] {
        for (std::size_t j = 0; j < count; ++j)
          h5::write_raw_chunk({name_}, dataset, origins[first + j], 0, std::span(out[j].frame.data(), out[j].size));
      });
    }
    if (writing.valid()) writing.get();
  }

  Source& source_;
  const WriteOptions& options_;
  std::string name_;
  detail::AtomicFile file_;
  std::map<std::string, h5::Handle> groups_;
  h5::Handle sections_group_;
  std::vector<ZstdWorker> workers_;
  std::vector<CompressedChunk> chunks_;  // two sets of one per worker
  detail::UniqueFd out_fd_;  // a dup of HDF5's descriptor of the file being written
};

}  // namespace

void write_ckpt_h5(Source& source, const std::filesystem::path& path, const WriteOptions& options) {
  if (options.compression == Compression::deflate)
    fail(ErrorCode::unsupported, path.string(), "ckpt-h5 compresses with zstd, not deflate");
  if (options.compression == Compression::zstd &&
      (options.zstd_level < ZSTD_minCLevel() || options.zstd_level > ZSTD_maxCLevel() || options.zstd_level < 1))
    fail(ErrorCode::invalid_argument, path.string(), "zstd level {} is outside 1..{}", options.zstd_level,
         ZSTD_maxCLevel());
  if (options.chunk_bytes == 0) fail(ErrorCode::invalid_argument, path.string(), "chunk size must be positive");
  Writer(source, path, options).run();
}

void register_zstd_filter() { detail::h5::register_zstd_filter(); }

}  // namespace ckpt

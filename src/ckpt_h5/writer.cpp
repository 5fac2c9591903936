// ckpt-h5 writer: streams tensors from a Source into a temporary HDF5 file, one at a time, then
// writes the index and renames the file into place (format-spec/ckpt-h5.md).
#include <zstd.h>

#include <condition_variable>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "ckpt/ckpt_h5.h"
#include "ckpt/version.h"
#include "core/chunks.h"
#include "ckpt_h5/index.h"
#include "ckpt_h5/schema.h"
#include "util/atomic_file.h"
#include "util/bytes.h"
#include "util/checksum.h"
#include "util/mapped_file.h"
#include "util/parallel.h"  // worker_count

namespace ckpt {
namespace {

using detail::fail;
namespace h5 = detail::h5;
namespace schema = detail::ckpt_h5;

std::vector<std::uint64_t> to_dims(const Shape& shape) { return {shape.begin(), shape.end()}; }

// Compressed chunks: shuffled and zstd-compressed by worker threads, written in order by the
// writer's thread with H5Dwrite_chunk (HDF5 itself would compress on one thread, and is not
// thread-safe). The queue runs across tensors: while the last chunks of one tensor compress, the
// next tensor is read and its chunks queued, so the workers stay busy even on tensors of one
// chunk. The writer performs the oldest queued chunk when the queue is full and waits only for
// it; so the order of HDF5 calls, and the file's bytes, depend on the input alone, not on timing.
class ChunkPipeline {
 public:
  ChunkPipeline(unsigned workers, int level, std::string file)
      : level_(level), file_(std::move(file)), max_in_flight_(2 * workers + 2) {
    for (unsigned w = 0; w < workers; ++w) threads_.emplace_back([this] { work(); });
  }
  ~ChunkPipeline() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }
  ChunkPipeline(const ChunkPipeline&) = delete;
  ChunkPipeline& operator=(const ChunkPipeline&) = delete;

  // A tensor whose chunks are queued; lives until its last chunk is written.
  struct Tensor {
    ckpt::Tensor data;
    std::string name;
    h5::Handle dataset;
    std::vector<std::uint64_t> dims, chunk;
    std::vector<std::vector<std::uint64_t>> origins;
    std::size_t itemsize = 0;
    std::uint64_t chunk_bytes = 0;
  };

  void queue(const std::shared_ptr<Tensor>& tensor) {
    for (std::size_t c = 0; c < tensor->origins.size(); ++c) {
      if (queue_.size() >= max_in_flight_) perform_oldest();
      auto step = std::make_unique<Step>();
      step->tensor = tensor;
      step->chunk = c;
      if (!free_frames_.empty()) {
        step->frame = std::move(free_frames_.back());
        free_frames_.pop_back();
      }
      {
        std::lock_guard lock(mutex_);
        to_start_.push_back(step.get());
      }
      queue_.push_back(std::move(step));
      wake_.notify_one();
    }
  }

  // Writes every queued chunk.
  void finish() {
    while (!queue_.empty()) perform_oldest();
  }

 private:
  struct Step {
    std::shared_ptr<Tensor> tensor;
    std::size_t chunk = 0;
    std::vector<std::byte> frame;  // keeps its size from chunk to chunk (no zero-filling again)
    std::size_t size = 0;
    std::exception_ptr error;
    bool done = false;
  };
  struct Scratch {  // per worker: an edge chunk padded to full size, the shuffled bytes
    std::unique_ptr<ZSTD_CCtx, decltype(&ZSTD_freeCCtx)> cctx{ZSTD_createCCtx(), ZSTD_freeCCtx};
    std::vector<std::byte> padded, shuffled;
  };

  void work() {
    Scratch scratch;
    std::unique_lock lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return stop_ || !to_start_.empty(); });
      if (stop_) return;
      Step* step = to_start_.front();
      to_start_.pop_front();
      lock.unlock();
      try {
        compress(*step, scratch);
      } catch (...) {
        step->error = std::current_exception();
      }
      lock.lock();
      step->done = true;
      done_.notify_all();
    }
  }

  void compress(Step& step, Scratch& scratch) const {
    const Tensor& t = *step.tensor;
    const auto& origin = t.origins[step.chunk];
    // A chunk inside the tensor is one contiguous run of its bytes: used where it lies. An edge
    // chunk is copied and padded first.
    std::span<const std::byte> input;
    if (const auto start = detail::interior_chunk_start(t.dims, t.chunk, origin)) {
      input = t.data.bytes().subspan(*start * t.itemsize, t.chunk_bytes);
    } else {
      scratch.padded.resize(t.chunk_bytes);
      detail::copy_tensor_to_chunk(t.data.bytes(), scratch.padded, t.dims, t.chunk, origin, t.itemsize);
      input = scratch.padded;
    }
    if (t.itemsize > 1) {
      scratch.shuffled.resize(t.chunk_bytes);
      detail::shuffle(input, scratch.shuffled, t.itemsize);
      input = scratch.shuffled;
    }
    const std::size_t bound = ZSTD_compressBound(input.size());
    if (step.frame.size() < bound) step.frame.resize(bound);
    const std::size_t n =
        ZSTD_compressCCtx(scratch.cctx.get(), step.frame.data(), step.frame.size(), input.data(), input.size(), level_);
    if (ZSTD_isError(n)) fail(ErrorCode::io, "", "zstd compression failed: {}", ZSTD_getErrorName(n));
    step.size = n;
  }

  void perform_oldest() {
    std::unique_ptr<Step> step = std::move(queue_.front());
    queue_.pop_front();
    {
      std::unique_lock lock(mutex_);
      done_.wait(lock, [&] { return step->done; });
    }
    Tensor& t = *step->tensor;
    try {
      if (step->error) std::rethrow_exception(step->error);
      h5::write_raw_chunk({file_}, t.dataset, t.origins[step->chunk], 0, std::span(step->frame.data(), step->size));
      if (step->chunk + 1 == t.origins.size()) h5::close_object({file_}, t.dataset);
    } catch (const Error& e) {
      throw Error(e.code(), file_, fmt::format("tensor {}: {}", detail::quote(t.name), e.message()));
    }
    free_frames_.push_back(std::move(step->frame));
  }

  const int level_;
  const std::string file_;
  const std::size_t max_in_flight_;
  std::deque<std::unique_ptr<Step>> queue_;  // in order; only the writer's thread touches it
  std::vector<std::vector<std::byte>> free_frames_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  std::deque<Step*> to_start_;
  bool stop_ = false;
  std::vector<std::thread> threads_;  // last: they start once the rest exists
};

class Writer {
 public:
  Writer(Source& source, const std::filesystem::path& path, const WriteOptions& options)
      : source_(source), options_(options), name_(path.string()), file_(path, options.overwrite) {}

  void run() {
    h5::register_zstd_filter();
    const h5::Where w{name_};
    h5file_ = h5::create_file(w, file_.fd(), status_, {});
    const h5::Handle& file = h5file_;
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
      check_writes();
      done += info.nbytes();
      if (options_.progress) options_.progress(done, total);
    }
    if (pipeline_) pipeline_->finish();
    pipeline_.reset();
    std::string index_text;
    try {
      index_text = index.finish(source_.metadata());
    } catch (const Error& e) {
      throw Error(e.code(), name_, e.message());
    }
    h5::write_string_dataset(w, file, schema::kIndexDataset, index_text);
    // Every object is closed, each close checked, the file last; then nothing may have failed.
    for (auto& [section, group] : groups_) h5::close_object(w, group);
    groups_.clear();
    if (sections_group_.valid()) h5::close_object(w, sections_group_);
    h5::close_file(w, h5file_);
    check_writes();
    verify_written(index_text);
    file_.commit();
  }

 private:
  // A write that failed inside HDF5 (recorded by the file driver) fails the conversion.
  void check_writes() const {
    if (status_.failed()) fail(ErrorCode::io, name_, "{}", status_.message());
  }

  // The file is complete before it replaces anything: it opens again, and its index reads back
  // as written.
  void verify_written(const std::string& index_text) const {
    const h5::Where w{name_};
    try {
      const h5::Handle again = h5::open_file_readonly(w, file_.fd());
      const std::string read = h5::read_string_dataset(w, again, schema::kIndexDataset, index_text.size() + 1,
                                                        std::numeric_limits<std::uint64_t>::max());
      if (read != index_text) fail(ErrorCode::io, name_, "the index read back differs from the one written");
    } catch (const Error& e) {
      throw Error(ErrorCode::io, name_, "the written file does not read back: " + e.message());
    }
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
        layout.chunk = detail::choose_chunk(dims, itemsize, options_.chunk_bytes);
        if (itemsize > 1) layout.filters.push_back({h5::kShuffleFilter, {}});
        layout.filters.push_back({kZstdFilterId, {static_cast<unsigned>(options_.zstd_level)}});
      }
      layout.allocate_early = !compress && from && tensor.nbytes() > 0;
      h5::Handle dataset = h5::create_dataset(w, group, link, type, dims, layout);
      if (schema::stored_as_raw_bytes(info.dtype))
        h5::write_string_attribute(w, dataset, schema::kDtypeAttribute, std::string(dtype_name(info.dtype)));
      index.add(info, options_.checksums ? std::optional(detail::xxh3_64(tensor.bytes())) : std::nullopt);
      const auto offset = layout.allocate_early ? h5::contiguous_offset(dataset) : std::nullopt;
      if (compress) queue_compressed(std::move(dataset), info, dims, layout.chunk, tensor);
      else if (offset) detail::write_at(file_.fd(), *offset, tensor.bytes(), from, name_);
      else if (tensor.nbytes() > 0) h5::write_all(w, dataset, type, tensor.bytes().data());
      if (dataset.valid()) h5::close_object(w, dataset);
    } catch (const Error& e) {
      throw Error(e.code(), name_, fmt::format("tensor {}: {}", detail::quote(info.name), e.message()));
    }
  }

  void queue_compressed(h5::Handle dataset, const TensorInfo& info, const std::vector<std::uint64_t>& dims,
                        const std::vector<std::uint64_t>& chunk, const Tensor& tensor) {
    if (!pipeline_)
      pipeline_ = std::make_unique<ChunkPipeline>(detail::worker_count(options_.threads), options_.zstd_level, name_);
    auto queued = std::make_shared<ChunkPipeline::Tensor>();
    queued->data = tensor;
    queued->name = info.name;
    queued->dataset = std::move(dataset);
    queued->dims = dims;
    queued->chunk = chunk;
    queued->origins = detail::chunk_origins(dims, chunk);
    queued->itemsize = dtype_size(info.dtype);
    queued->chunk_bytes = queued->itemsize;
    for (auto c : chunk) queued->chunk_bytes *= c;
    pipeline_->queue(queued);
  }

  Source& source_;
  const WriteOptions& options_;
  std::string name_;
  detail::AtomicFile file_;
  h5::WriteStatus status_;
  // Declared after file_ and before the objects in it: on an error they close first, then the
  // file, then the temporary is removed.
  h5::Handle h5file_;
  std::map<std::string, h5::Handle> groups_;
  h5::Handle sections_group_;
  std::unique_ptr<ChunkPipeline> pipeline_;  // with compression, made for the first compressed tensor
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

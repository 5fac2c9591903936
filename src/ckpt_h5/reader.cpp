// ckpt-h5 reader: lists tensors from the index (one dataset read), reads tensors lazily, zero-copy
// for contiguous data through a mapping of the file (format-spec/ckpt-h5.md).
#include <zstd.h>

#include <map>

#include <sys/stat.h>
#include <unistd.h>

#include "ckpt/ckpt_h5.h"
#include "ckpt_h5/check.h"
#include "ckpt_h5/chunks.h"
#include "ckpt_h5/index.h"
#include "ckpt_h5/schema.h"
#include "util/bytes.h"
#include "util/checksum.h"
#include "util/isolate.h"
#include "util/file_read.h"
#include "util/mapped_file.h"
#include "util/parallel.h"


namespace ckpt {
namespace {

using detail::fail;
using detail::quote;
namespace h5 = detail::h5;
namespace schema = detail::ckpt_h5;

class CkptH5Reader final : public Reader {
 public:
  CkptH5Reader(const std::filesystem::path& path, const ReadOptions& options) : Reader(path, options) {
    format_ = schema::kFormatName;
    name_ = path.string();
    h5::register_zstd_filter();
    // What HDF5 parses to list the file (superblock, root group, attributes, index) is parsed
    // first in a child process; a dataset's header and chunk index likewise before it is read.
    if (options_.isolate_hdf5) isolate(schema::CheckStage::listing);
    const h5::Where w{name_};
    std::error_code ec;
    file_size_ = std::filesystem::file_size(path, ec);
    if (ec) fail(ErrorCode::io, name_, "cannot open: {}", ec.message());
    file_ = h5::open_file_readonly(w, path);
    check_identity();
    schema::Index index = schema::parse_index(
        h5::read_string_dataset(w, file_, schema::kIndexDataset, options_.max_header_bytes, file_size_), options_,
        name_);
    infos_ = std::move(index.tensors);
    checksums_ = std::move(index.checksums);
    metadata_ = std::move(index.metadata);
    finish_listing();
    checked_.assign(infos_.size(), false);
  }

  // Makes the HDF5 calls a read of tensor `index` makes, without reading the data (the check run
  // in the child). Errors are thrown; the caller of a check ignores them.
  void check_dataset(std::size_t index) {
    check_index(index);
    const TensorInfo& info = infos_[index];
    const Located located = locate(info);
    if (located.layout.chunked) {
      const std::vector<std::uint64_t> dims(info.shape.begin(), info.shape.end());
      check_chunk_claims(located.layout, info);
      for (const auto& origin : schema::chunk_origins(dims, located.layout.chunk))
        (void)h5::raw_chunk_size({name_}, located.dataset, origin);
    }
  }

  Tensor read(std::size_t index) override {
    check_index(index);
    const TensorInfo& info = infos_[index];
    const auto& expected = checksums_[index];
    if (options_.isolate_hdf5 && !all_checked_ && !checked_[index]) {
      isolate(schema::CheckStage::one_dataset, index);
      checked_[index] = true;
    }
    Loaded loaded;
    last_span_.reset();
    try {
      loaded = read_data(info, options_.verify_checksums ? expected : std::nullopt);
    } catch (const Error& e) {
      throw Error(e.code(), name_, fmt::format("tensor {}: {}", quote(info.name), e.message()));
    }
    if (options_.verify_checksums && expected) {
      const std::uint64_t actual = loaded.checksum ? *loaded.checksum : detail::xxh3_64(loaded.tensor.bytes());
      if (actual != *expected)
        fail(ErrorCode::integrity, name_, "tensor {}: checksum mismatch (stored {}, data has {})", quote(info.name),
             detail::format_checksum(*expected), detail::format_checksum(actual));
    }
    if (loaded.offset) last_span_ = {index, FileSpan{data_fd(), *loaded.offset}};
    return std::move(loaded.tensor);
  }

  // Known for the tensor read last (finding a dataset's offset takes HDF5 calls; writers ask
  // right after reading).
  std::optional<FileSpan> file_span(std::size_t index) const override {
    check_index(index);
    if (!last_span_ || last_span_->first != index) return std::nullopt;
    return last_span_->second;
  }


 private:
  void isolate(schema::CheckStage stage, std::size_t tensor = 0) {
    const schema::CheckRequest request{path_, stage, tensor, options_};
    detail::run_isolated(name_, schema::encode_check(request), [&] { schema::check_structure(request); });
  }

  // Reading everything: one check of every dataset instead of one per tensor.
  void prepare_full_read() override {
    if (options_.isolate_hdf5 && !all_checked_) isolate(schema::CheckStage::all_datasets);
    all_checked_ = true;
  }

  struct Loaded {
    Tensor tensor;
    std::optional<std::uint64_t> checksum;  // computed while reading, when asked for
    std::optional<std::uint64_t> offset;    // where the bytes lie verbatim in the file, if they do
  };

  void check_identity() {
    const h5::Where w{name_};
    const auto format = h5::read_string_attribute(w, file_, schema::kFormatAttribute);
    if (!format)
      fail(ErrorCode::format, name_, "not a ckpt-h5 file: root attribute '{}' is missing", schema::kFormatAttribute);
    if (*format != schema::kFormatName)
      fail(ErrorCode::format, name_, "not a ckpt-h5 file: root attribute '{}' is {}, expected 'ckpt-h5'",
           schema::kFormatAttribute, quote(*format));
    const auto version = h5::read_int_array_attribute(w, file_, schema::kVersionAttribute);
    if (!version || version->size() != 2 || (*version)[0] < 0 || (*version)[1] < 0)
      fail(ErrorCode::format, name_, "root attribute '{}' must be two non-negative integers {{major, minor}}",
           schema::kVersionAttribute);
    format_version_ = fmt::format("{}.{}", (*version)[0], (*version)[1]);
    if ((*version)[0] != static_cast<std::int64_t>(kCkptH5VersionMajor))
      fail(ErrorCode::unsupported, name_, "ckpt-h5 version {} is not supported (this reader reads {}.x)",
           format_version_, kCkptH5VersionMajor);
    // A newer minor version only adds things this reader may ignore.
  }

  const h5::Handle& group_for(const TensorInfo& info) {
    const std::string section(info.section_name());
    auto it = groups_.find(section);
    if (it != groups_.end()) return it->second;
    const h5::Where w{name_};
    h5::Handle group = info.role == Role::extra
                           ? h5::open_group(w, h5::open_group(w, file_, schema::kSectionsGroup),
                                            schema::encode_link_name(section))
                           : h5::open_group(w, file_, section);
    return groups_.emplace(section, std::move(group)).first->second;
  }

  struct Located {
    h5::Handle dataset;
    h5::Handle expected_type;  // the type the dtype is stored as
    bool exact = false;        // the dataset has exactly that type
    h5::DatasetLayout layout;
    std::optional<std::uint64_t> offset;  // of contiguous data in the file, checked against its size
  };

  // Opens the dataset of `info` and checks it against the index (shape, type, data in bounds).
  Located locate(const TensorInfo& info) {
    const h5::Where w{name_};
    const std::string link = schema::encode_link_name(info.name);
    const h5::Handle& group = group_for(info);
    h5::Handle dataset = h5::try_open_dataset(group, link);
    if (!dataset.valid()) {
      if (!h5::link_exists(w, group, link))
        fail(ErrorCode::format, name_, "dataset /{}/{} is missing", info.section_name(), link);
      dataset = h5::open_dataset(w, group, link);  // fails again, with HDF5's reason
    }
    const auto dims = h5::dataset_shape(w, dataset);
    if (!std::equal(dims.begin(), dims.end(), info.shape.begin(), info.shape.end()))
      fail(ErrorCode::format, name_, "dataset shape [{}] does not match the index shape {}", fmt::join(dims, ", "),
           shape_to_string(info.shape));
    Located located;
    located.expected_type = schema::file_type(info.dtype);
    const h5::Handle actual = h5::dataset_type(w, dataset);
    located.exact = h5::types_equal(located.expected_type, actual);
    if (!located.exact && !h5::types_compatible(located.expected_type, actual))
      fail(ErrorCode::format, name_, "dataset type ({}) cannot hold index dtype {} ({})", h5::describe_type(actual),
           dtype_name(info.dtype), h5::describe_type(located.expected_type));
    // Contiguous data has an offset; only the others need their creation properties (costly).
    if (info.nbytes() > 0) located.offset = contiguous_data(dataset, info);
    if (!located.offset) located.layout = h5::dataset_layout(w, dataset);
    located.dataset = std::move(dataset);
    return located;
  }

  // `want_checksum`: compute the checksum on the way if the path can do it cheaply.
  Loaded read_data(const TensorInfo& info, std::optional<std::uint64_t> want_checksum) {
    const h5::Where w{name_};
    Located located = locate(info);
    const h5::Handle& dataset = located.dataset;
    const h5::Handle& expected = located.expected_type;
    const bool exact = located.exact;
    const h5::DatasetLayout& layout = located.layout;
    const std::uint64_t nbytes = info.nbytes();
    if (nbytes == 0) return {Tensor::zeros(info.dtype, info.shape), {}, {}};
    if (exact && !layout.chunked) {
      if (const auto offset = located.offset) {
        // A misaligned view would make typed access undefined: such data is copied.
        if (options_.zero_copy && *offset % dtype_size(info.dtype) == 0 && mapped()) {
          mapping_->prefetch(*offset, nbytes);
          return {Tensor::view(info.dtype, info.shape, mapping_->bytes().data() + *offset, mapping_), {}, *offset};
        }
        Tensor tensor = Tensor::uninitialized(info.dtype, info.shape);
        auto sum = detail::read_at(data_fd(), *offset, tensor.mutable_bytes(), want_checksum.has_value(), name_);
        return {std::move(tensor), sum, *offset};
      }
    }
    if (exact && layout.chunked && only_shuffle_and_zstd(layout)) return {read_chunks(dataset, info, layout), {}, {}};
    // Anything else (other filters, converted types): HDF5 reads it into a tensor of ours.
    if (layout.chunked) check_chunk_claims(layout, info);
    else if (h5::storage_size(dataset) > file_size_)
      fail(ErrorCode::format, name_, "dataset claims {} bytes of storage, more than the file", h5::storage_size(dataset));
    Tensor tensor = Tensor::uninitialized(info.dtype, info.shape);
    h5::read_all(w, dataset, expected, tensor.mutable_bytes().data());
    return {std::move(tensor), {}, {}};
  }

  // File offset of a contiguous dataset's data, checked against the file; nullopt when the data
  // is not allocated or the file has a user block (offsets are then relative to it).
  std::optional<std::uint64_t> contiguous_data(const h5::Handle& dataset, const TensorInfo& info) {
    const auto offset = h5::contiguous_offset(dataset);
    if (!offset || has_userblock()) return std::nullopt;
    const std::uint64_t nbytes = info.nbytes();
    if (*offset > file_size_ || nbytes > file_size_ - *offset)
      fail(ErrorCode::format, name_, "data at offset {} with {} bytes extends past the end of the file ({} bytes)",
           *offset, nbytes, file_size_);
    return offset;
  }

  bool has_userblock() {
    if (!userblock_) userblock_ = h5::userblock_size({name_}, file_);
    return *userblock_ != 0;
  }

  // Our own descriptor of the very file HDF5 has open (a dup of its descriptor).
  int data_fd() {
    if (!fd_.valid()) fd_ = detail::UniqueFd(h5::duplicate_file_descriptor({name_}, file_));
    return fd_.get();
  }

  // A read-only mapping of the file, made on first use; null if the file changed size since open.
  const std::shared_ptr<const detail::MappedFile>& mapped() {
    if (!mapping_tried_) {
      mapping_tried_ = true;
      mapping_ = detail::MappedFile::from_fd(data_fd(), path_);
      if (mapping_->size() != file_size_) mapping_.reset();
    }
    return mapping_;
  }

  static bool only_shuffle_and_zstd(const h5::DatasetLayout& layout) {
    for (const auto& f : layout.filters)
      if (f.id != h5::kShuffleFilter && f.id != h5::kZstdFilter) return false;
    return true;
  }

  std::uint64_t chunk_bytes(const h5::DatasetLayout& layout, const TensorInfo& info) {
    std::uint64_t bytes = dtype_size(info.dtype);
    for (auto c : layout.chunk) {
      auto m = detail::checked_mul(bytes, c);
      if (!m || c == 0) fail(ErrorCode::format, name_, "chunk dims [{}] are invalid", fmt::join(layout.chunk, ", "));
      bytes = *m;
    }
    return bytes;
  }

  void check_chunk_claims(const h5::DatasetLayout& layout, const TensorInfo& info) {
    if (layout.chunk.size() != info.shape.size())
      fail(ErrorCode::format, name_, "chunk rank {} differs from tensor rank {}", layout.chunk.size(), info.shape.size());
    if (chunk_bytes(layout, info) > h5::kMaxChunkBytes)
      fail(ErrorCode::format, name_, "chunk of {} bytes exceeds the 4 GiB HDF5 limit", chunk_bytes(layout, info));
  }

  // Our own layout: raw chunks are read, decompressed and unshuffled here, on worker threads, with
  // every size checked against the chunk geometry before anything is allocated.
  Tensor read_chunks(const h5::Handle& dataset, const TensorInfo& info, const h5::DatasetLayout& layout) {
    check_chunk_claims(layout, info);
    const h5::Where w{name_};
    const std::vector<std::uint64_t> dims(info.shape.begin(), info.shape.end());
    const std::size_t itemsize = dtype_size(info.dtype);
    const std::uint64_t expected = chunk_bytes(layout, info);
    const auto origins = schema::chunk_origins(dims, layout.chunk);
    Tensor tensor = Tensor::uninitialized(info.dtype, info.shape);  // the chunks cover every element
    const auto out = tensor.mutable_bytes();
    const unsigned workers = detail::worker_count(options_.threads);
    // The chunk buffers live as long as the reader: fresh ones per tensor would be zero-filled
    // and faulted in for every tensor (most of the time of reading a compressed file).
    if (slots_.size() < workers) slots_.resize(workers);
    auto& slots = slots_;
    for (std::size_t first = 0; first < origins.size(); first += workers) {
      const std::size_t count = std::min<std::size_t>(workers, origins.size() - first);
      for (std::size_t j = 0; j < count; ++j) {  // HDF5 is not thread-safe: reads stay here
        const auto& origin = origins[first + j];
        const std::uint64_t size = h5::raw_chunk_size(w, dataset, origin);
        if (size > file_size_ || size > ZSTD_compressBound(expected) + 4096)
          fail(ErrorCode::format, name_, "chunk at [{}] claims {} bytes, more than the file or a {}-byte chunk needs",
               fmt::join(origin, ", "), size, expected);
        slots[j].raw.resize(size);
        slots[j].mask = h5::read_raw_chunk(w, dataset, origin, slots[j].raw);
      }
      detail::parallel_for(count, workers, [&](unsigned, std::size_t j) {
        Slot& slot = slots[j];
        std::span<const std::byte> data = slot.raw;
        // A chunk inside the tensor is one contiguous run of it: the last filter undone writes
        // there directly.
        std::span<std::byte> in_place;
        if (const auto start = schema::interior_chunk_start(dims, layout.chunk, origins[first + j]))
          in_place = out.subspan(*start * itemsize, expected);
        // Undo the filters in reverse order; a set mask bit means the filter was skipped.
        for (std::size_t k = layout.filters.size(); k-- > 0;) {
          if (slot.mask & (1u << k)) continue;
          const std::uint32_t below = (1u << k) - 1;  // the filters still to undo after this one
          const bool direct = (slot.mask & below) == below && !in_place.empty();  // all skipped
          if (layout.filters[k].id == h5::kZstdFilter) {
            const unsigned long long content = ZSTD_getFrameContentSize(data.data(), data.size());
            if (content != expected)
              fail(ErrorCode::format, name_, "chunk at [{}]: zstd frame holds {} bytes, expected {}",
                   fmt::join(origins[first + j], ", "),
                   content == ZSTD_CONTENTSIZE_ERROR     ? std::string("an invalid frame")
                   : content == ZSTD_CONTENTSIZE_UNKNOWN ? std::string("an unknown number of")
                                                         : std::to_string(content),
                   expected);
            if (!direct) slot.plain.resize(expected);
            const std::span<std::byte> target = direct ? in_place : std::span<std::byte>(slot.plain);
            const std::size_t n = ZSTD_decompress(target.data(), expected, data.data(), data.size());
            if (ZSTD_isError(n) || n != expected)
              fail(ErrorCode::format, name_, "chunk at [{}]: zstd data is corrupt ({})",
                   fmt::join(origins[first + j], ", "), ZSTD_isError(n) ? ZSTD_getErrorName(n) : "short");
            data = target;
          } else {  // shuffle
            if (data.size() != expected)
              fail(ErrorCode::format, name_, "chunk at [{}] has {} bytes, expected {}",
                   fmt::join(origins[first + j], ", "), data.size(), expected);
            if (!direct) slot.unshuffled.resize(expected);
            const std::span<std::byte> target = direct ? in_place : std::span<std::byte>(slot.unshuffled);
            schema::unshuffle(data, target, itemsize);
            data = target;
          }
        }
        if (data.size() != expected)
          fail(ErrorCode::format, name_, "chunk at [{}] has {} bytes, expected {}", fmt::join(origins[first + j], ", "),
               data.size(), expected);
        if (data.data() != in_place.data())
          schema::copy_chunk_to_tensor(data, out, dims, layout.chunk, origins[first + j], itemsize);
      });
    }
    return tensor;
  }

  std::string name_;
  std::uint64_t file_size_ = 0;
  h5::Handle file_;
  std::map<std::string, h5::Handle> groups_;
  detail::UniqueFd fd_;
  std::optional<std::uint64_t> userblock_;
  bool mapping_tried_ = false;
  bool all_checked_ = false;
  std::vector<bool> checked_;  // per tensor, when not all_checked_
  std::shared_ptr<const detail::MappedFile> mapping_;
  struct Slot {
    std::vector<std::byte> raw, plain, unshuffled;
    std::uint32_t mask = 0;
  };
  std::vector<Slot> slots_;  // read_chunks' per-worker buffers, reused across tensors
  std::optional<std::pair<std::size_t, FileSpan>> last_span_;  // file_span of the tensor read last
};

}  // namespace

namespace detail::ckpt_h5 {

std::vector<std::string> encode_check(const CheckRequest& r) {
  const char* stage = r.stage == CheckStage::listing ? "listing" : r.stage == CheckStage::all_datasets ? "all" : "one";
  return {r.path.string(), stage, std::to_string(r.tensor), std::to_string(r.options.max_header_bytes),
          std::to_string(r.options.max_rank)};
}

CheckRequest decode_check(const std::vector<std::string>& words) {
  CheckRequest r;
  if (words.size() != 5 || (words[1] != "listing" && words[1] != "all" && words[1] != "one"))
    fail(ErrorCode::invalid_argument, "", "bad check request");
  r.path = words[0];
  r.stage = words[1] == "listing" ? CheckStage::listing : words[1] == "all" ? CheckStage::all_datasets
                                                                          : CheckStage::one_dataset;
  try {
    r.tensor = std::stoull(words[2]);
    r.options.max_header_bytes = std::stoull(words[3]);
    r.options.max_rank = static_cast<std::uint32_t>(std::stoul(words[4]));
  } catch (const std::exception&) {
    fail(ErrorCode::invalid_argument, "", "bad check request");
  }
  r.options.isolate_hdf5 = false;
  return r;
}

namespace {

// Runs the datasets part of a check on an open reader; a failing dataset does not stop the others
// (a reader may still read them).
void check_datasets(CkptH5Reader& reader, const CheckRequest& request) {
  const std::size_t first = request.stage == CheckStage::one_dataset ? request.tensor : 0;
  const std::size_t last = request.stage == CheckStage::one_dataset ? request.tensor + 1
                           : request.stage == CheckStage::all_datasets ? reader.tensors().size()
                                                                       : 0;
  for (std::size_t i = first; i < last; ++i) {
    try {
      reader.check_dataset(i);
    } catch (const Error&) {
    }
  }
}

}  // namespace

void check_structure(const CheckRequest& request) {
  ReadOptions direct = request.options;
  direct.isolate_hdf5 = false;
  CkptH5Reader reader(request.path, direct);
  check_datasets(reader, request);
}

void serve_checks() {
  // The last file, kept open while its identity (device, inode, size, mtime) is unchanged.
  std::unique_ptr<CkptH5Reader> cached;
  std::string cached_identity;
  auto identity = [](const std::filesystem::path& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return std::string();
    return fmt::format("{}:{}:{}:{}.{}", st.st_dev, st.st_ino, st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  };
  serve_isolated_requests(STDIN_FILENO, STDOUT_FILENO, [&](const std::vector<std::string>& words) {
    const CheckRequest request = decode_check(words);
    const std::string id = identity(request.path);
    // A listing is what the reader is about to parse afresh: the helper parses afresh too.
    if (request.stage == CheckStage::listing || !cached || id.empty() || id != cached_identity) {
      cached.reset();
      cached = std::make_unique<CkptH5Reader>(request.path, request.options);
      cached_identity = id;
    }
    check_datasets(*cached, request);
  });
}

}  // namespace detail::ckpt_h5

std::unique_ptr<Reader> open_ckpt_h5(const std::filesystem::path& path, const ReadOptions& options) {
  return std::make_unique<CkptH5Reader>(path, options);
}

}  // namespace ckpt

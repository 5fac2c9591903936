// ckpt-h5 reader: lists tensors from the index (one dataset read) and says where each tensor's
// bytes are: a contiguous dataset is one range of the file; a chunked dataset with ckpt's filters
// (shuffle, zstd) is its chunks, found with HDF5's chunk index and then read, decompressed and
// put in place without HDF5 (core/deliver.h); anything else (other filters, types HDF5 converts, a
// user block) HDF5 reads itself, slices as hyperslabs (format-spec/ckpt-h5.md §8).
#include <zstd.h>

#include <map>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt/ckpt_h5.h"
#include "ckpt_h5/check.h"
#include "ckpt_h5/format.h"
#include "ckpt_h5/index.h"
#include "ckpt_h5/schema.h"
#include "core/chunks.h"
#include "core/format_reader.h"
#include "util/bytes.h"
#include "util/isolate.h"

namespace ckpt {
namespace {

using detail::fail;
using detail::quote;
namespace h5 = detail::h5;
namespace schema = detail::ckpt_h5;

// "device:inode" of an open file.
std::string file_identity(int fd) {
  struct stat st {};
  if (::fstat(fd, &st) != 0) return {};
  return fmt::format("{}:{}", st.st_dev, st.st_ino);
}

class CkptH5Reader final : public detail::FormatReader {
 public:
  // HDF5 reads a file through the reader's own descriptor, a checkpoint held in memory in place,
  // both through ckpt's file driver (src/h5/fd_driver.cpp).
  CkptH5Reader(std::shared_ptr<const detail::ByteSource> source, const ReadOptions& options)
      : FormatReader(std::move(source), options) {
    format_ = schema::kFormatName;
    h5::register_zstd_filter();
    if (source_->is_file()) {
      // The helper checks the file by its absolute path (it has a working directory of its own)
      // and makes sure it sees the very file opened here (device and inode).
      absolute_path_ = std::filesystem::absolute(source_->path());
      identity_ = file_identity(source_->fd());
    }
    // What HDF5 parses to list the file (superblock, root group, attributes, index) is parsed
    // first in a child process; a dataset's header and chunk index likewise before it is read.
    if (options_.isolate_hdf5) isolate(schema::CheckStage::listing);
    const h5::Where w{name_};
    if (source_->is_file()) {
      // HDF5 reads through a dup of the descriptor the bytes are read through: the very file that
      // was checked, whatever happens to the path.
      file_ = h5::open_file_readonly(w, source_->fd());
    } else {
      file_ = h5::open_image_readonly(w, source_->bytes());
    }
    file_size_ = source_->size();
    check_identity();
    schema::Index index = schema::parse_index(
        h5::read_string_dataset(w, file_, schema::kIndexDataset, options_.max_header_bytes, file_size_), options_,
        name_);
    infos_ = std::move(index.tensors);
    checksums_ = std::move(index.checksums);
    blocks_ = std::move(index.blocks);
    metadata_ = std::move(index.metadata);
    finish_listing();
    checked_.assign(infos_.size(), false);
  }

  // Makes the HDF5 calls locate() makes for tensor `index` (the check run in the child). Errors
  // are thrown; the caller of a check ignores them.
  void check_dataset(std::size_t index) {
    check_index(index);
    const detail::Location l = locate_dataset(index);
    // Data HDF5 reads itself (types it converts, compact storage, other filters) is read here
    // too, up to a bound: H5Dread has crashed on malformed layouts that passed every check.
    constexpr std::uint64_t kMaxCheckedRead = 64u << 20;
    const TensorInfo& info = infos_[index];
    if (l.read_region && info.nbytes() > 0 && info.nbytes() <= kMaxCheckedRead) {
      std::vector<std::byte> scratch(info.nbytes());
      const std::vector<std::uint64_t> offsets(info.shape.size(), 0), sizes(info.shape.begin(), info.shape.end());
      l.read_region(offsets, sizes, scratch);
    }
  }

  detail::Location locate(std::size_t index) override {
    // A checkpoint in memory is checked in a fork() of this process: once for every dataset,
    // rather than a fork per tensor; if that check fails (one dataset crashes HDF5), dataset by
    // dataset, so that the others still read.
    if (options_.isolate_hdf5 && !all_checked_ && !source_->is_file() && !full_check_failed_) {
      try {
        prepare_full_read();
      } catch (const Error&) {
        full_check_failed_ = true;
      }
    }
    if (options_.isolate_hdf5 && !all_checked_ && !checked_[index]) {
      isolate(schema::CheckStage::one_dataset, index);
      checked_[index] = true;
    }
    return locate_dataset(index);
  }

 private:
  // Files go to the helper by path; memory is checked in a fork() of this process, which has it.
  void isolate(schema::CheckStage stage, std::size_t tensor = 0) {
    const schema::CheckRequest request{absolute_path_, identity_, stage, tensor, options_};
    // The helper gets the descriptor the file is read through; a fork() has it already.
    detail::run_isolated(name_, source_->is_file() ? schema::encode_check(request) : std::vector<std::string>{},
                         source_->is_file() ? source_->fd() : -1, [&] { schema::check_structure(request, source_); });
  }

  // Reading everything: one check of every dataset instead of one per tensor.
  void prepare_full_read() override {
    if (options_.isolate_hdf5 && !all_checked_) isolate(schema::CheckStage::all_datasets);
    all_checked_ = true;
  }

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
    // A group a writer left out because it holds no tensors is fine (spec §3); one that the
    // index needs is not.
    auto open = [&](const h5::Handle& parent, const std::string& link, const std::string& path) {
      if (!h5::link_exists(w, parent, link)) fail(ErrorCode::format, name_, "group {} is missing", path);
      return h5::open_group(w, parent, link);
    };
    h5::Handle group = info.role == Role::extra
                           ? open(open(file_, schema::kSectionsGroup, "/sections"), schema::encode_link_name(section),
                                  "/sections/" + schema::encode_link_name(section))
                           : open(file_, section, "/" + section);
    return groups_.emplace(section, std::move(group)).first->second;
  }

  // Opens the dataset of tensor `index`, checks it against the index (shape, type, data in
  // bounds) and says where its bytes are.
  detail::Location locate_dataset(std::size_t index) {
    const TensorInfo& info = infos_[index];
    const h5::Where w{name_};
    const std::string link = schema::encode_link_name(info.name);
    const h5::Handle& group = group_for(info);
    const std::string where = fmt::format("/{}/{}", info.section_name(), link);
    // Opened with external links refused; why an open failed is looked up only then.
    auto dataset = std::make_shared<h5::Handle>(h5::try_open_dataset(group, link));
    if (!dataset->valid()) {
      if (!h5::link_exists(w, group, link)) fail(ErrorCode::format, name_, "dataset {} is missing", where);
      if (h5::link_is_external(w, group, link))
        fail(ErrorCode::format, name_, "dataset {} is a link to another file: refused (spec §3)", where);
      *dataset = h5::open_dataset(w, group, link);  // fails again, with HDF5's reason
    }
    const auto dims = h5::dataset_shape(w, *dataset);
    if (!std::equal(dims.begin(), dims.end(), info.shape.begin(), info.shape.end()))
      fail(ErrorCode::format, name_, "dataset shape [{}] does not match the index shape {}", fmt::join(dims, ", "),
           shape_to_string(info.shape));
    auto expected = std::make_shared<h5::Handle>(schema::file_type(info.dtype));
    const h5::Handle actual = h5::dataset_type(w, *dataset);
    const bool exact = h5::types_equal(*expected, actual);
    if (!exact && !h5::types_compatible(*expected, actual))
      fail(ErrorCode::format, name_, "dataset type ({}) cannot hold index dtype {} ({})", h5::describe_type(actual),
           dtype_name(info.dtype), h5::describe_type(*expected));
    detail::Location l = location(index);
    const std::uint64_t nbytes = info.nbytes();
    if (nbytes == 0) return l;
    // Offsets HDF5 gives are relative to the end of a user block: such files are left to HDF5.
    const bool plain = exact && !has_userblock();
    // A contiguous dataset stored in this file has an address (the common case: its creation
    // properties, costly to read, are not needed).
    const auto offset = h5::contiguous_offset(*dataset);
    if (offset) {
      if (*offset > file_size_ || nbytes > file_size_ - *offset)
        fail(ErrorCode::format, name_, "data at offset {} with {} bytes extends past the end of the file ({} bytes)",
             *offset, nbytes, file_size_);
      if (plain) {
        l.extents = {{*offset, nbytes}};
        return l;
      }
    }
    const h5::DatasetLayout layout = h5::dataset_layout(w, *dataset);
    // The data must be in this file: external storage and virtual datasets read other files
    // (any file on the disk, even for a checkpoint given in memory).
    if (layout.external_files > 0 || layout.kind == h5::DatasetLayout::Kind::virtual_dataset)
      fail(ErrorCode::format, name_, "dataset {} keeps its data in other files ({}): refused (spec §8)", where,
           layout.external_files > 0 ? "external storage" : "a virtual dataset");
    if (layout.kind == h5::DatasetLayout::Kind::contiguous && !offset)
      fail(ErrorCode::format, name_, "dataset {}: its {} bytes were never written (spec §8)", where, nbytes);
    if (layout.chunked) {
      if (layout.chunk.size() != info.shape.size())
        fail(ErrorCode::format, name_, "chunk rank {} differs from tensor rank {}", layout.chunk.size(), info.shape.size());
      std::uint64_t chunk_bytes = dtype_size(info.dtype);
      for (auto c : layout.chunk) {
        const auto m = c == 0 ? std::nullopt : detail::checked_mul(chunk_bytes, c);
        if (!m || *m > detail::kMaxChunkBytes)
          fail(ErrorCode::format, name_, "chunk dims [{}] are invalid or over HDF5's 4 GiB limit", fmt::join(layout.chunk, ", "));
        chunk_bytes = *m;
      }
      // Every chunk must have been written: HDF5 would fill the others with values that are not
      // the tensor's, and a few bytes of file could claim any size.
      std::uint64_t grid = 1;
      for (std::size_t k = 0; k < dims.size(); ++k) grid *= (dims[k] + layout.chunk[k] - 1) / layout.chunk[k];
      if (grid > file_size_)
        fail(ErrorCode::format, name_, "dataset {} claims {} chunks, more than a file of {} bytes holds", where, grid,
             file_size_);
      if (const std::uint64_t written = h5::allocated_chunks(w, *dataset); written != grid)
        fail(ErrorCode::format, name_, "dataset {}: {} of its {} chunks were never written (spec §8)", where,
             grid - std::min(written, grid), grid);
      // HDF5 may store partial edge chunks unfiltered (H5D_CHUNK_DONT_FILTER_PARTIAL_CHUNKS),
      // with nothing in their filter mask to say so: such datasets are left to HDF5.
      if (plain && ckpt_filters_only(layout) && !layout.partial_chunks_unfiltered) {
        l.chunked = chunks(*dataset, layout, dims, chunk_bytes);
        return l;
      }
    } else if (const std::uint64_t stored = h5::storage_size(*dataset); stored > file_size_) {
      fail(ErrorCode::format, name_, "dataset claims {} bytes of storage, more than the file", stored);
    } else if (stored < nbytes) {
      // A compact dataset whose layout message holds fewer bytes than its shape needs: HDF5 1.10
      // reads past them (from address 0 when they are none, a crash found by fuzz_ckpt_h5).
      fail(ErrorCode::format, name_, "dataset {} stores {} bytes, its shape and type need {}", where, stored, nbytes);
    }
    // Anything else: HDF5 reads it (converting the type), whole or as a hyperslab.
    const std::string name = name_;
    // The source too: a file held in memory must outlive the dataset HDF5 reads from it.
    l.read_region = [dataset, expected, name, source = source_](const std::vector<std::uint64_t>& offsets,
                                              const std::vector<std::uint64_t>& sizes, std::span<std::byte> out) {
      h5::read_region({name}, *dataset, *expected, offsets, sizes, out.data());
    };
    return l;
  }

  static bool ckpt_filters_only(const h5::DatasetLayout& layout) {
    for (const auto& f : layout.filters)
      if (f.id != h5::kShuffleFilter && f.id != kZstdFilterId) return false;
    return true;
  }

  // Where every chunk of the grid is stored, from HDF5's chunk index (every chunk was written).
  std::shared_ptr<detail::ChunkedData> chunks(const h5::Handle& dataset, const h5::DatasetLayout& layout,
                                              const std::vector<std::uint64_t>& dims, std::uint64_t chunk_bytes) {
    auto c = std::make_shared<detail::ChunkedData>();
    c->chunk = layout.chunk;
    bool zstd = false;
    for (const auto& f : layout.filters) {
      zstd = zstd || f.id == kZstdFilterId;
      c->filters.push_back(f.id == kZstdFilterId ? detail::ChunkedData::Filter::zstd : detail::ChunkedData::Filter::shuffle);
    }
    c->max_stored_bytes = zstd ? ZSTD_compressBound(chunk_bytes) + 4096 : chunk_bytes;
    for (auto& origin : detail::chunk_origins(dims, layout.chunk)) {
      const h5::ChunkInfo chunk = h5::chunk_info({name_}, dataset, origin);
      if (!chunk.address)
        fail(ErrorCode::format, name_, "the chunk at [{}] was never written", fmt::join(origin, ", "));
      c->chunks.push_back({std::move(origin), {*chunk.address, chunk.size}, chunk.filter_mask});
    }
    return c;
  }

  bool has_userblock() {
    if (!userblock_) userblock_ = h5::userblock_size({name_}, file_);
    return *userblock_ != 0;
  }

  std::uint64_t file_size_ = 0;
  std::filesystem::path absolute_path_;  // files
  std::string identity_;                 // files: "device:inode"
  bool full_check_failed_ = false;       // memory: check dataset by dataset
  h5::Handle file_;
  std::map<std::string, h5::Handle> groups_;
  std::optional<std::uint64_t> userblock_;
  bool all_checked_ = false;
  std::vector<bool> checked_;  // per tensor, when not all_checked_
};

}  // namespace

namespace detail::ckpt_h5 {

std::vector<std::string> encode_check(const CheckRequest& r) {
  const char* stage = r.stage == CheckStage::listing ? "listing" : r.stage == CheckStage::all_datasets ? "all" : "one";
  return {r.path.string(), stage, std::to_string(r.tensor), std::to_string(r.options.max_header_bytes),
          std::to_string(r.options.max_rank), r.identity};
}

CheckRequest decode_check(const std::vector<std::string>& words) {
  CheckRequest r;
  if (words.size() != 6 || (words[1] != "listing" && words[1] != "all" && words[1] != "one"))
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
  r.identity = words[5];
  r.options.isolate_hdf5 = false;
  return r;
}

namespace {

// Runs the datasets part of a check on an open reader; a failing dataset does not stop the others
// (a reader may still read them).
void check_datasets(CkptH5Reader& reader, const CheckRequest& request) {
  const std::size_t first = request.stage == CheckStage::one_dataset ? request.tensor : 0;
  const std::size_t last = request.stage == CheckStage::one_dataset ? request.tensor + 1
                           : request.stage == CheckStage::all_datasets ? reader.infos_.size()
                                                                       : 0;
  for (std::size_t i = first; i < last && i < reader.infos_.size(); ++i) {
    try {
      reader.check_dataset(i);
    } catch (const Error&) {
    }
  }
}

}  // namespace

// The file the reader has open: the descriptor that came with the request, else the file at the
// request's path if it is that file; else FileChanged (the check must not pass a file it did not
// see).
std::shared_ptr<const ByteSource> checked_file(const CheckRequest& request, int fd) {
  std::shared_ptr<const ByteSource> file;
  try {
    if (fd >= 0) {
      UniqueFd own(::fcntl(fd, F_DUPFD_CLOEXEC, 0));
      if (!own.valid()) throw FileChanged{};
      file = ByteSource::from_fd(std::move(own), request.path);
    } else {
      file = ByteSource::open_file(request.path);
    }
  } catch (const Error&) {
    throw FileChanged{};
  }
  if (file_identity(file->fd()) != request.identity) throw FileChanged{};
  return file;
}

void check_structure(const CheckRequest& request, std::shared_ptr<const ByteSource> memory) {
  ReadOptions direct = request.options;
  direct.isolate_hdf5 = false;
  CkptH5Reader reader(memory ? std::move(memory) : checked_file(request, -1), direct);
  check_datasets(reader, request);
}

void serve_checks() {
  // The last file checked, kept open while requests name it (device and inode) and it has not
  // changed (size, modification time): even after its path is given to another file, the reader
  // that has it open is checked against the file it has.
  std::unique_ptr<CkptH5Reader> cached;
  std::string cached_identity, cached_stamp;
  auto stamp = [](int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) return std::string();
    return fmt::format("{}:{}.{}", st.st_size, st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
  };
  serve_isolated_requests(STDIN_FILENO, STDOUT_FILENO, [&](const std::vector<std::string>& words, int fd) {
    const CheckRequest request = decode_check(words);
    // A listing is what the reader is about to parse afresh: the helper parses afresh too.
    if (request.stage == CheckStage::listing || !cached || cached_identity != request.identity ||
        stamp(cached->source_->fd()) != cached_stamp) {
      cached.reset();
      cached = std::make_unique<CkptH5Reader>(checked_file(request, fd), request.options);
      cached_identity = request.identity;
      cached_stamp = stamp(cached->source_->fd());
    }
    check_datasets(*cached, request);
  });
}

std::unique_ptr<FormatReader> open_reader(std::shared_ptr<const ByteSource> source, const ReadOptions& options) {
  return std::make_unique<CkptH5Reader>(std::move(source), options);
}

}  // namespace detail::ckpt_h5

}  // namespace ckpt

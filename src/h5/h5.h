// The one wrapper through which ckpt calls HDF5. Nothing else includes <hdf5.h>.
//
// Every call is checked; a failure becomes ckpt::Error naming the file, what we were doing and
// the innermost HDF5 message. HDF5's own printing of error stacks is switched off on first use.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "ckpt/ckpt_h5.h"
#include "ckpt/error.h"

#ifdef CKPT_WITH_MPI
#include <mpi.h>
#endif

namespace ckpt::detail::h5 {

using hid = std::int64_t;  // HDF5's hid_t

// Owner of an HDF5 identifier; closes it with the matching H5*close.
class Handle {
 public:
  Handle() = default;
  explicit Handle(hid id) : id_(id) {}
  ~Handle() { reset(); }
  Handle(Handle&& o) noexcept : id_(o.id_) { o.id_ = -1; }
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) { reset(); id_ = o.id_; o.id_ = -1; }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid get() const noexcept { return id_; }
  bool valid() const noexcept { return id_ >= 0; }
  // Give up ownership without closing.
  hid release() noexcept { const hid id = id_; id_ = -1; return id; }
  void reset() noexcept;

 private:
  hid id_ = -1;
};

// Every call below takes the file name used in error messages.
struct Where {
  const std::string& file;
};

// --- files ---------------------------------------------------------------------------------
struct CreateSettings {
  std::uint64_t alignment = 64;  // file offset alignment of raw data
};
// What became of the writes of a file HDF5 writes through ckpt's descriptor driver
// (fd_driver.cpp): the first failure (a full disk, EFBIG) is recorded here and later writes are
// skipped, so that HDF5 never sees a failed write and can always close the file. The writer asks
// failed() after each step and throws message() before it commits anything.
class WriteStatus {
 public:
  void record(int error, const char* what) noexcept;
  bool failed() const noexcept { return failed_.load(std::memory_order_acquire); }
  std::string message() const;  // e.g. "write failed: No space left on device"; empty if none

 private:
  std::atomic<bool> failed_{false};
  mutable std::mutex mutex_;
  int error_ = 0;
  const char* what_ = "";
};

// Creates an HDF5 file in `fd` (an empty file open for reading and writing; HDF5 works on a dup
// of it, never on a path, and takes no lock). Write failures go to `status`.
Handle create_file(Where w, int fd, WriteStatus& status, const CreateSettings& settings);
// Opens the file open on `fd` to read (through a dup of it; no lock is taken: ckpt replaces files
// by renaming a complete file over them, never writes one in place).
Handle open_file_readonly(Where w, int fd);
// A file held in memory, read in place by ckpt's driver (neither copied nor freed): `image` must
// outlive the file and everything opened in it.
Handle open_image_readonly(Where w, std::span<const std::byte> image);
void close_file(Where w, Handle& file);  // close and report errors (Handle's destructor is silent)
// Closes a group, dataset, attribute, ... and reports errors (Handle's destructor is silent).
void close_object(Where w, Handle& object);
std::uint64_t userblock_size(Where w, const Handle& file);
// True if `bytes` starts with the HDF5 superblock signature at offset 0, 512, 1024, 2048, ...
bool has_signature(std::span<const std::byte> head);

// --- groups and links ----------------------------------------------------------------------
// A group that tracks and indexes link creation order (insertion order).
Handle create_group(Where w, const Handle& parent, const std::string& name);
Handle open_group(Where w, const Handle& parent, const std::string& name);
bool link_exists(Where w, const Handle& parent, const std::string& name);
// Whether the link `name` is an external link (to an object in another file). ckpt never follows
// one: every group and dataset it opens is opened with external links refused.
bool link_is_external(Where w, const Handle& parent, const std::string& name);

// --- types ---------------------------------------------------------------------------------
// Predefined little-endian types, and compounds built from them.
enum class Predefined { f64, f32, i64, i32, i16, i8, u64, u32, u16, u8 };
Handle predefined(Predefined type);
// A custom IEEE-style float (H5Tset_fields / H5Tset_ebias), e.g. float16 and bfloat16.
Handle custom_float(std::size_t size, std::size_t sign_pos, std::size_t exp_pos, std::size_t exp_bits,
                    std::size_t mant_bits, std::size_t ebias);
// The enum h5py uses for bool: int8 base, FALSE = 0, TRUE = 1.
Handle bool_enum();
// The compound h5py uses for complex: {r, i} of `part`.
Handle complex_compound(const Handle& part);
bool types_equal(const Handle& a, const Handle& b);
// Types that hold the same values and differ at most in byte order (format-spec/ckpt-h5.md §5):
// reading one as the other converts nothing but the order of bytes. Signedness, precision, float
// fields, enum members and compound layouts must all agree.
bool types_compatible(const Handle& a, const Handle& b);
// Short description for messages: "float 4 bytes", "integer 8 bytes", "string", ...
std::string describe_type(const Handle& type);

// --- datasets ------------------------------------------------------------------------------
struct DatasetLayout {
  enum class Kind { contiguous, chunked, compact, virtual_dataset };
  Kind kind = Kind::contiguous;  // as read from a file (writers set `chunked`)
  bool chunked = false;
  std::size_t external_files = 0;           // H5Pset_external: raw data kept in other files
  bool partial_chunks_unfiltered = false;   // H5D_CHUNK_DONT_FILTER_PARTIAL_CHUNKS
  // Contiguous: allocate the data's file space when the dataset is created (so its offset is
  // known before anything is written; the fill value is never written).
  bool allocate_early = false;
  std::vector<std::uint64_t> chunk;  // chunk dims when chunked
  struct Filter {
    int id;
    std::vector<unsigned> values;
  };
  std::vector<Filter> filters;
};

// Contiguous (filters ignored) or chunked with the given filters; creation order tracked, no
// timestamps, no fill values written. Rank 0 shape = scalar dataspace.
Handle create_dataset(Where w, const Handle& parent, const std::string& name, const Handle& type,
                      const std::vector<std::uint64_t>& shape, const DatasetLayout& layout);
Handle open_dataset(Where w, const Handle& parent, const std::string& name);
// An invalid Handle instead of an error when the dataset cannot be opened.
Handle try_open_dataset(const Handle& parent, const std::string& name);
Handle dataset_type(Where w, const Handle& dataset);
// Dims of a simple dataspace ({} for scalar); throws for null dataspaces.
std::vector<std::uint64_t> dataset_shape(Where w, const Handle& dataset);
DatasetLayout dataset_layout(Where w, const Handle& dataset);
// File offset of a contiguous dataset's data, or nullopt (chunked, compact, not allocated).
std::optional<std::uint64_t> contiguous_offset(const Handle& dataset);
std::uint64_t storage_size(const Handle& dataset);
void write_all(Where w, const Handle& dataset, const Handle& mem_type, const void* data);
void read_all(Where w, const Handle& dataset, const Handle& mem_type, void* data);
// Raw (still filtered) chunks at element offset `offset`.
void write_raw_chunk(Where w, const Handle& dataset, const std::vector<std::uint64_t>& offset,
                     std::uint32_t filter_mask, std::span<const std::byte> data);
// Where the chunk at element offset `offset` is stored: its address (relative to the base
// address, after any user block; nullopt when the chunk was never written), its stored size and
// its filter mask (bit k set: filter k was skipped).
struct ChunkInfo {
  std::optional<std::uint64_t> address;
  std::uint64_t size = 0;
  std::uint32_t filter_mask = 0;
};
ChunkInfo chunk_info(Where w, const Handle& dataset, const std::vector<std::uint64_t>& offset);
// How many chunks of the dataset have storage (were ever written).
std::uint64_t allocated_chunks(Where w, const Handle& dataset);
// Reads the hyperslab of `sizes` elements at `offsets` as `mem_type` into `data` (row-major).
void read_region(Where w, const Handle& dataset, const Handle& mem_type, const std::vector<std::uint64_t>& offsets,
                 const std::vector<std::uint64_t>& sizes, void* data);

// A scalar fixed-length UTF-8 string dataset (used for the ckpt-h5 index).
void write_string_dataset(Where w, const Handle& parent, const std::string& name, const std::string& text);
// Reads a scalar fixed-length string or 1-D uint8 dataset, all its bytes (NUL padding included);
// refuses more than `max_bytes`.
std::string read_string_dataset(Where w, const Handle& parent, const std::string& name,
                                std::uint64_t max_bytes, std::uint64_t file_size);

// --- attributes ----------------------------------------------------------------------------
bool attribute_exists(Where w, const Handle& object, const std::string& name);
void write_string_attribute(Where w, const Handle& object, const std::string& name, const std::string& value);
void write_uint_array_attribute(Where w, const Handle& object, const std::string& name,
                                const std::vector<std::uint32_t>& values);
// Fixed or variable length string attribute; nullopt if absent.
std::optional<std::string> read_string_attribute(Where w, const Handle& object, const std::string& name);
// Integer array attribute (any integer type, converted); nullopt if absent.
std::optional<std::vector<std::int64_t>> read_int_array_attribute(Where w, const Handle& object,
                                                                  const std::string& name);

#ifdef CKPT_WITH_MPI
// --- parallel files (MPI-IO; the MPI build of HDF5) ---------------------------------------------
struct ParallelSettings {
  std::uint64_t alignment = 64, alignment_threshold = 1;
  bool collective_metadata = true;
};
// Creates (truncates) the file at `path` on every rank of `comm` (collective), with the settings
// of create_file.
Handle create_file_parallel(Where w, const std::string& path, MPI_Comm comm, MPI_Info info,
                            const ParallelSettings& settings);
// Writes the box of `sizes` elements at `offsets` from `data` (row-major, `mem_type`); `nothing`:
// this rank writes nothing (a collective write still needs every rank's call).
void write_region(Where w, const Handle& dataset, const Handle& mem_type, const std::vector<std::uint64_t>& offsets,
                  const std::vector<std::uint64_t>& sizes, const void* data, bool collective, bool nothing = false);
#endif

// --- filters -------------------------------------------------------------------------------
inline constexpr int kShuffleFilter = 2;
// The zstd filter's id is ckpt::kZstdFilterId (ckpt/ckpt_h5.h).
void register_zstd_filter();

}  // namespace ckpt::detail::h5

// Format-independent reading and writing, and the format registry.
//
// Every format implements Reader (lazy: list without reading data, then read tensors one at a
// time) and a streaming writer that pulls tensors from a Source one at a time, so converting
// never holds two copies of the state. Formats are detected by content, never by extension.
#pragma once

#include "ckpt/api.h"

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "ckpt/options.h"
#include "ckpt/state_dict.h"

// Internals the public classes hold by pointer (declared outside the exported API).
namespace ckpt::detail {
struct BlockChecksum;
class ByteSource;
class FormatReader;
struct Location;
struct DeliveryScratch;
}  // namespace ckpt::detail

CKPT_API_BEGIN

namespace ckpt {

// Tensors to be written, pulled one at a time. A Reader is a Source, and so is a StateDict
// (through StateDictSource).
class Source {
 public:
  virtual ~Source() = default;
  virtual const std::vector<TensorInfo>& tensors() const = 0;
  virtual const Metadata& metadata() const = 0;
  // The data of tensors()[index]; its dtype and shape match the TensorInfo.
  virtual Tensor read(std::size_t index) = 0;
  // Where the roles of tensors() came from. save() records RoleSource::heuristic in the file
  // (kRoleSourceKey), so that inferred roles are never read back as exact ones. Default: stored.
  virtual RoleSource role_source() const noexcept { return RoleSource::stored; }

  // read(index), checked against tensors()[index] (writers use it; errors name `file`).
  Tensor read_checked(std::size_t index, const std::string& file);

  // Where tensors()[index]'s bytes (as read() returns them) lie verbatim in an open file, if they
  // do: a descriptor and an offset, valid while this Source lives. Writers that store the bytes
  // as they are then copy them file to file inside the kernel (copy_file_range) instead of
  // writing them from memory (still reading them for checksums and checks). A reader may know it
  // only for the tensor it read last (ckpt-h5). Default: nowhere.
  struct FileSpan {
    int fd;
    std::uint64_t offset;
  };
  virtual std::optional<FileSpan> file_span(std::size_t /*index*/) const { return std::nullopt; }
};

class StateDictSource : public Source {
 public:
  explicit StateDictSource(const StateDict& state);
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const Metadata& metadata() const override { return state_.metadata(); }
  Tensor read(std::size_t index) override;
  RoleSource role_source() const noexcept override { return state_.role_source(); }

 private:
  const StateDict& state_;
  std::vector<TensorInfo> infos_;
};

// A checkpoint opened for reading: its listing (names, roles, dtypes, shapes, metadata), read
// when it is opened, and its tensors, read when asked for. Every format is read through the same
// code: a format says where each tensor's bytes are, and one routine delivers them (zero-copy
// view, pread, strided gather, byte swap, decompression, checksum), so every format offers the
// same reads, slices and file spans.
//
// A Reader is not thread-safe: use one per thread (Tensors it returned may be shared freely).
class Reader final : public Source {
 public:
  // Readers come from open(), open_memory() and each format's open_* function.
  explicit Reader(std::unique_ptr<detail::FormatReader> format);
  ~Reader() override;
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  const std::vector<TensorInfo>& tensors() const override;
  const Metadata& metadata() const override;

  // The file's path, or the name given to open_memory().
  const std::filesystem::path& path() const noexcept { return path_; }
  // "ckpt-h5", "safetensors", ...
  const std::string& format() const noexcept;
  // The version found in the file ("1.0"), empty for formats without one.
  const std::string& format_version() const noexcept;
  // As the format records roles, except heuristic when the file says its roles were inferred
  // (kRoleSourceKey).
  RoleSource role_source() const noexcept override;
  // Nested files (.pt checkpoints): the key of the dict taken as the model; empty = top level.
  const std::string& model_key() const noexcept;
  // What the reader left out of the listing or decided for you, one line each (a distributed
  // checkpoint's values that are not plain data, ...); checkpoint-convert and checkpoint-inspect
  // print them. Empty for most files.
  const std::vector<std::string>& notes() const noexcept;
  // The checksum stored for tensors()[index] (XXH3-64 of its logical bytes), if any.
  std::optional<std::uint64_t> checksum(std::size_t index) const;

  // Index of a tensor by section and name; throws invalid_argument if absent.
  std::size_t find(std::string_view name, std::string_view section = {}) const;

  // A whole tensor: a zero-copy view where its bytes lie as they are and ReadOptions::zero_copy
  // allows (writable, copy-on-write, unless ReadOptions::writable is false), else a copy; its
  // stored checksum verified when ReadOptions::verify_checksums: ckpt-h5's XXH3-64 of the tensor,
  // or for .pt and .npz the CRC-32 of the zip entry holding it (the whole entry: a storage shared
  // by several tensors is checked when the first of them is read, once). A view is checked when
  // it is handed out; what later happens to the file under it is not seen.
  Tensor read(std::size_t index) override;
  Tensor read(std::string_view name, std::string_view section = {});

  // Part of a tensor: `sizes[k]` elements from `offsets[k]` in each dimension, as a row-major
  // tensor of shape `sizes`. Only the bytes the slice needs are read where the format allows it
  // (all formats whose tensors lie in the file as they are; for ckpt-h5 zstd only the chunks the
  // slice meets; zip-deflated entries and Boost text decode up to the slice's last byte); a slice
  // that is one aligned run of the stored bytes is a zero-copy view. A slice is not verified
  // against a whole-tensor checksum (use verify() or read()); a tensor written in blocks
  // (ckpt-h5 1.1, ckpt::mpi::save) has a checksum per block, and then every block the slice meets
  // is read whole and verified when ReadOptions::verify_checksums.
  // Throws invalid_argument for a slice outside the tensor.
  Tensor read_slice(std::size_t index, const std::vector<std::uint64_t>& offsets,
                    const std::vector<std::uint64_t>& sizes);
  Tensor read_slice(std::string_view name, const std::vector<std::uint64_t>& offsets,
                    const std::vector<std::uint64_t>& sizes, std::string_view section = {});

  // Where a tensor's logical bytes lie verbatim in the file (uncompressed, contiguous,
  // little-endian), for writers that copy file to file. nullopt otherwise and for memory.
  std::optional<FileSpan> file_span(std::size_t index) const override;

  // Every tensor, with roles and metadata.
  StateDict read_all(const ProgressFn& progress = {});

  // Says that every tensor is about to be read (as convert() does, one at a time): formats may
  // batch work that would otherwise happen per tensor (ckpt-h5 checks all datasets in its
  // isolation helper at once). read_all and verify do this themselves.
  void expect_full_read();

  // Read every tensor and check its checksum whatever ReadOptions said. Returns the number of
  // tensors that carried a checksum (XXH3-64 or their zip entry's CRC-32); throws integrity on
  // the first mismatch.
  std::size_t verify(const ProgressFn& progress = {});

 private:
  const detail::Location& located(std::size_t index) const;
  Tensor read_verified(std::size_t index, bool verify);
  void check_block(std::size_t index, const detail::BlockChecksum& block, std::uint64_t got) const;

  std::unique_ptr<detail::FormatReader> format_;
  std::filesystem::path path_;
  mutable std::vector<std::shared_ptr<const detail::Location>> located_;  // per tensor, when first needed
  std::unique_ptr<detail::DeliveryScratch> scratch_;
};

// A format plugged into the registry (src/core/registry.cpp; each format's folder defines its
// handler in format.cpp).
struct FormatHandler {
  std::string name;                     // "ckpt-h5"
  std::string description;              // one line for --help
  std::vector<std::string> extensions;  // ".h5", ".ckpt.h5": used only to pick an output format
  // Does a file start like this format? `head` holds up to the first 4096 bytes; `file_size` is
  // the whole file's size.
  bool (*sniff)(std::span<const std::byte> head, std::uint64_t file_size);
  // Opens the checkpoint whose bytes `source` holds (a file or memory).
  std::unique_ptr<detail::FormatReader> (*open)(std::shared_ptr<const detail::ByteSource> source,
                                                const ReadOptions& options);
  void (*write)(Source& source, const std::filesystem::path& path, const WriteOptions& options);
  // What the writer honours: compressions besides `none`, and WriteOptions::max_shard_bytes.
  // save() refuses other options rather than ignore them.
  std::vector<Compression> compressions;
  bool shards = false;
  // A second look when no format recognized the first 4096 bytes, for a signature that may lie
  // further in (HDF5's, after a user block of 4 KiB or more); may be null.
  bool (*sniff_further)(const detail::ByteSource& source) = nullptr;
};

// Every registered format, in registration order.
const std::vector<FormatHandler>& formats();
// The registered formats' names, comma-separated ("ckpt-h5, safetensors, ..."), for messages.
std::string format_names();
// The same for the formats ckpt can write (the output formats of save() and checkpoint-convert).
std::string writable_format_names();
const FormatHandler* find_format(std::string_view name);
// The format a file holds, by content; throws format naming the file if none matches.
const FormatHandler& detect_format(const std::filesystem::path& path);
// The format an output path asks for, by extension; nullptr if none matches.
const FormatHandler* format_for_extension(const std::filesystem::path& path);

// Open any supported checkpoint (format detected by content). A directory is opened through the
// file that describes it: a PyTorch distributed checkpoint's `.metadata`.
std::unique_ptr<Reader> open(const std::filesystem::path& path, const ReadOptions& options = {});
StateDict load(const std::filesystem::path& path, const ReadOptions& options = {});

// Open a checkpoint held in memory (received over the network, embedded in a program): `bytes`
// must stay valid while `owner` lives; the Reader and every zero-copy tensor it hands out keep
// `owner` alive. `name` stands for the file in messages and Reader::path(). Every format reads
// from memory except sharded safetensors (its index names other files); ckpt-h5 is read in place
// through HDF5's core driver, and its structure is checked in a fork() of the process.
std::unique_ptr<Reader> open_memory(std::span<const std::byte> bytes, std::shared_ptr<const void> owner,
                                    const ReadOptions& options = {}, std::string name = "<memory>");
// The same, taking the bytes over.
std::unique_ptr<Reader> open_memory(std::vector<std::byte> bytes, const ReadOptions& options = {},
                                    std::string name = "<memory>");
StateDict load_memory(std::span<const std::byte> bytes, const ReadOptions& options = {},
                      std::string name = "<memory>");

// Write a state dict; format from options.format or else the path's extension.
void save(const StateDict& state, const std::filesystem::path& path,
          const WriteOptions& options = {});
void save(Source& source, const std::filesystem::path& path, const WriteOptions& options = {});

}  // namespace ckpt

CKPT_API_END

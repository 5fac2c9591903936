// Format-independent reading and writing, and the format registry.
//
// Every format implements Reader (lazy: list without reading data, then read tensors one at a
// time) and a streaming writer that pulls tensors from a Source one at a time, so converting
// never holds two copies of the state. Formats are detected by content, never by extension.
#pragma once

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

 private:
  const StateDict& state_;
  std::vector<TensorInfo> infos_;
};

// A Reader is not thread-safe: use one per thread (Tensors it returned may be shared freely).
class Reader : public Source {
 public:
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const Metadata& metadata() const override { return metadata_; }

  const std::filesystem::path& path() const noexcept { return path_; }
  // "ckpt-h5", "safetensors", ...
  const std::string& format() const noexcept { return format_; }
  // The version found in the file ("1.0"), empty for formats without one.
  const std::string& format_version() const noexcept { return format_version_; }
  RoleSource role_source() const noexcept { return role_source_; }
  // Nested files (.pt checkpoints): the key of the dict taken as the model; empty = top level.
  const std::string& model_key() const noexcept { return model_key_; }
  // The checksum stored for tensors()[index] (XXH3-64 of its logical bytes), if any.
  std::optional<std::uint64_t> checksum(std::size_t index) const;

  // Index of a tensor by section and name; throws invalid_argument if absent.
  std::size_t find(std::string_view name, std::string_view section = {}) const;
  Tensor read(std::string_view name, std::string_view section = {});
  using Source::read;

  // Every tensor, with roles and metadata.
  StateDict read_all(const ProgressFn& progress = {});

  // Says that every tensor is about to be read (as convert() does, one at a time): formats may
  // batch work that would otherwise happen per tensor (ckpt-h5 checks all datasets in its
  // isolation helper at once). read_all and verify do this themselves.
  void expect_full_read() { prepare_full_read(); }

  // Read every tensor and check its checksum whatever ReadOptions said. Returns the number of
  // tensors that carried a checksum; throws integrity on the first mismatch.
  std::size_t verify(const ProgressFn& progress = {});

 protected:
  Reader(std::filesystem::path path, ReadOptions options);
  // Called before every tensor is read in a row (read_all, verify); formats may batch work.
  virtual void prepare_full_read() {}
  // Builds the name index (rejecting duplicates); formats call it once infos_ is filled.
  void finish_listing();
  // Throws invalid_argument unless index < infos_.size().
  void check_index(std::size_t index) const;

  std::filesystem::path path_;
  ReadOptions options_;
  std::string format_;
  std::string format_version_;
  RoleSource role_source_ = RoleSource::stored;
  std::string model_key_;
  Metadata metadata_ = Metadata::object();
  std::vector<TensorInfo> infos_;
  std::vector<std::optional<std::uint64_t>> checksums_;  // empty, or parallel to infos_

 private:
  std::unordered_map<std::string, std::size_t> by_key_;
};

// A format plugged into the registry.
struct FormatHandler {
  std::string name;                     // "ckpt-h5"
  std::string description;              // one line for --help
  std::vector<std::string> extensions;  // ".h5", ".ckpt.h5": used only to pick an output format
  // Does a file start like this format? `head` holds up to the first 4096 bytes; `file_size` is
  // the whole file's size.
  bool (*sniff)(std::span<const std::byte> head, std::uint64_t file_size);
  std::unique_ptr<Reader> (*open)(const std::filesystem::path& path, const ReadOptions& options);
  void (*write)(Source& source, const std::filesystem::path& path, const WriteOptions& options);
};

// Every registered format, in registration order.
const std::vector<FormatHandler>& formats();
// The registered formats' names, comma-separated ("ckpt-h5, safetensors, ..."), for messages.
std::string format_names();
const FormatHandler* find_format(std::string_view name);
// The format a file holds, by content; throws format naming the file if none matches.
const FormatHandler& detect_format(const std::filesystem::path& path);
// The format an output path asks for, by extension; nullptr if none matches.
const FormatHandler* format_for_extension(const std::filesystem::path& path);

// Open any supported checkpoint (format detected by content).
std::unique_ptr<Reader> open(const std::filesystem::path& path, const ReadOptions& options = {});
StateDict load(const std::filesystem::path& path, const ReadOptions& options = {});

// Write a state dict; format from options.format or else the path's extension.
void save(const StateDict& state, const std::filesystem::path& path,
          const WriteOptions& options = {});
void save(Source& source, const std::filesystem::path& path, const WriteOptions& options = {});

}  // namespace ckpt

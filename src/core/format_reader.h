// What a format's reader is: a listing, made when the checkpoint is opened, and for each tensor a
// description of where its bytes are (core/location.h). The public ckpt::Reader serves reads,
// slices, checksums and file spans from it through one delivery routine (core/deliver.h);
// formats never move tensor bytes themselves.
//
// Adding a format: a folder src/<format>/ with format.cpp (its FormatHandler: name, sniff, open,
// write, what it honours), reader.cpp (a FormatReader) and writer.cpp, and one line in
// core/registry.cpp.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "ckpt/io.h"
#include "core/blocks.h"
#include "core/byte_source.h"
#include "core/location.h"

namespace ckpt::detail {

class FormatReader {
 public:
  FormatReader(std::shared_ptr<const ByteSource> source, ReadOptions options);
  virtual ~FormatReader() = default;
  FormatReader(const FormatReader&) = delete;
  FormatReader& operator=(const FormatReader&) = delete;

  // Where tensor `index`'s bytes are (index already checked). It may call into the format's
  // library (HDF5): it is only called from the thread using the reader, once per tensor (the
  // Reader keeps the result).
  virtual Location locate(std::size_t index) = 0;
  // Every tensor is about to be read in a row: formats may batch work (ckpt-h5 checks every
  // dataset in its isolation helper at once).
  virtual void prepare_full_read() {}

  // The listing, filled by the format's constructor (then finish_listing()).
  std::shared_ptr<const ByteSource> source_;
  std::string name_;  // the source's name, for messages
  ReadOptions options_;
  std::string format_;
  std::string format_version_;
  RoleSource role_source_ = RoleSource::stored;
  std::string model_key_;
  Metadata metadata_ = Metadata::object();
  std::vector<TensorInfo> infos_;
  std::vector<std::optional<std::uint64_t>> checksums_;  // empty, or parallel to infos_
  // Per-block checksums (ckpt-h5 1.1): empty, or parallel to infos_; each list, when not empty,
  // covers its tensor with disjoint blocks (checked when listed).
  std::vector<std::vector<BlockChecksum>> blocks_;
  // What the format left out or decided while listing, one line each (Reader::notes()).
  std::vector<std::string> notes_;

  // Index of a tensor by section and name; throws invalid_argument if absent.
  std::size_t find(std::string_view name, std::string_view section) const;
  // Throws invalid_argument unless index < infos_.size().
  void check_index(std::size_t index) const;

 protected:
  // Builds the name index (rejecting duplicates); formats call it once infos_ is filled.
  void finish_listing();
  // A location in source_ with tensor `index`'s dtype and shape, for the format to complete.
  Location location(std::size_t index) const;

 private:
  std::unordered_map<std::string, std::size_t> by_key_;
};

// The public Reader over a format's reader.
std::unique_ptr<Reader> make_reader(std::unique_ptr<FormatReader> format);
// A Reader of `source`, its format detected by content (what ckpt::open does with a path).
std::unique_ptr<Reader> open_source(std::shared_ptr<const ByteSource> source, const ReadOptions& options);
// The file to open for `path`: itself, or for a directory the file that describes what it holds
// (a distributed checkpoint's .metadata); throws io for a directory without one.
std::filesystem::path checkpoint_file(const std::filesystem::path& path);

}  // namespace ckpt::detail

// Options for reading and writing checkpoints. Every field has a default; limits guard against
// hostile files (a size read from a file is checked against the file and against these caps).
#pragma once

#include "ckpt/api.h"

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

CKPT_API_BEGIN

namespace ckpt {

// zstd: ckpt-h5 chunks; deflate: .npz entries (as numpy.savez_compressed).
enum class Compression { none, zstd, deflate };

// Called during long work with bytes done and bytes in all; may be empty.
using ProgressFn = std::function<void(std::uint64_t done, std::uint64_t total)>;

struct ReadOptions {
  // Verify stored per-tensor checksums whenever tensor data is read.
  bool verify_checksums = true;
  // Hand out zero-copy views of the file where a tensor's bytes lie as they are (one aligned,
  // little-endian, contiguous run); otherwise every tensor is a copy in memory of its own.
  bool zero_copy = true;
  // Tensors may be written (Tensor::mutable_bytes), as a user editing a loaded state expects.
  // Zero-copy tensors of 256 KiB or more are then private copy-on-write mappings of their own
  // bytes (a write copies the pages it touches; the file never changes), smaller ones copies.
  // false: zero-copy tensors are read-only views sharing one mapping of the file (cheapest;
  // mutable_bytes() throws; clone() to edit).
  bool writable = true;
  // Formats without stored roles: tensors whose full name matches this ECMAScript regex are
  // buffers (in addition to the built-in rules; see format-spec/conventions.md).
  std::string buffer_regex;
  // Nested checkpoints (.pt {"model": ..., "optimizer": ..., "epoch": ...}): the dotted key of
  // the dict that holds the model's state_dict. Empty: the top level if it holds tensors, else
  // the top-level dict holding the most tensors (Reader::model_key() says which).
  std::string model_key;
  // Largest safetensors JSON header / ckpt-h5 index accepted, in bytes.
  std::uint64_t max_header_bytes = 100'000'000;
  // Largest number of dimensions of a tensor.
  std::uint32_t max_rank = 64;
  // ckpt-h5: HDF5 1.10 can crash on malformed metadata, so by default a child process (the
  // helper ckpt-h5-check, kept running, or fork()) first parses what HDF5 will parse: the
  // listing when the file is opened, each dataset's header and chunk index before its first
  // read (all at once for read_all). A crash there becomes a format error.
  bool isolate_hdf5 = true;
  // Worker threads decompressing ckpt-h5 zstd chunks; 0 = hardware concurrency. Each holds
  // about two chunks of memory (the compressed chunk and its decompressed bytes).
  unsigned threads = 0;
};

struct WriteOptions {
  // Output format name ("ckpt-h5", "safetensors"); empty: from the output file's extension.
  std::string format;
  Compression compression = Compression::none;
  // zstd level for Compression::zstd. 1: on byte-shuffled float32, bfloat16 and float16 weights it
  // compressed as well as or better than level 3 (by up to 4%) at 1.1-2.4x its speed, as measured
  // with `zstd -b` on 4 MiB chunks (README, Benchmark).
  int zstd_level = 1;
  // Store and verify a per-tensor checksum (XXH3-64 of the logical bytes).
  bool checksums = true;
  // Target size of one compressed chunk in bytes.
  std::uint64_t chunk_bytes = 4u << 20;
  // Tensors smaller than this are stored uncompressed even when compression is on.
  std::uint64_t min_compress_bytes = 4096;
  // Worker threads for compression; 0 = hardware concurrency. Each holds about four chunks
  // (chunk_bytes) of memory while a file is written: its scratch and the compressed chunks queued.
  unsigned threads = 0;
  // Replace an existing file (atomically). When false an existing target is an error.
  bool overwrite = true;
  // safetensors output: split into shards of at most this many bytes (a larger tensor gets a
  // shard of its own) with a model.safetensors.index.json, as huggingface does; 0 = one file.
  std::uint64_t max_shard_bytes = 0;
  ProgressFn progress;
  // Called with a one-line note when a writer leaves something out by its format's rules (the
  // non-persistent buffers a safetensors file does not hold: format-spec/conventions.md §1);
  // may be empty. checkpoint-convert prints these on stderr.
  std::function<void(const std::string& note)> notice;
};

}  // namespace ckpt

CKPT_API_END

// ckpt::mpi: one checkpoint saved and loaded by the ranks of an MPI job, each holding blocks of
// the tensors (FSDP, tensor parallelism). Built with -DCKPT_WITH_MPI=ON against the MPI build of
// HDF5 (Debian: libhdf5-openmpi-dev); the whole library then links that HDF5, since one process
// cannot load the serial and the parallel libhdf5 together.
//
// save(): all ranks write ONE ckpt-h5 file of global tensors through parallel HDF5 (MPI-IO):
// datasets created collectively, each rank writing its own blocks straight from its memory, the
// index once. Every block carries its own checksum (ckpt-h5 1.1, format-spec/ckpt-h5.md §7.1),
// computed by the rank that holds it. The file is an ordinary ckpt-h5 file: h5py, h5dump and
// every ckpt tool read it serially.
//
// load(): on any number of ranks, each rank reads only the blocks it asks for, verified against
// the block checksums they meet.
//
// Both are collective (every rank of `comm` calls them with the same path and options) and agree
// on the outcome: if any rank fails, every rank throws ckpt::Error with the same one-line message
// naming the first failing rank, and a save leaves any old file as it was.
#pragma once

#include "ckpt/api.h"

// The C API only (Open MPI's deprecated C++ bindings are a library of their own).
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "ckpt/options.h"
#include "ckpt/state_dict.h"
#include "ckpt/tensor.h"

CKPT_API_BEGIN

namespace ckpt::mpi {

// A box of a tensor: `sizes[k]` elements from `offsets[k]` in each dimension (both empty for a
// rank-0 tensor).
struct Box {
  std::vector<std::uint64_t> offsets, sizes;
};

// A block of a global tensor held by this rank: where it lies, and its elements (a row-major
// tensor of shape `box.sizes` and the tensor's dtype).
struct Block {
  Box box;
  Tensor data;
};

// One tensor as this rank sees it: the global tensor's name, role, dtype and *global* shape, and
// the blocks of it this rank holds (none is fine). Together the ranks' blocks must cover the
// tensor exactly once: a replicated tensor is passed with its block by one rank only.
struct ShardedTensor {
  TensorInfo info;
  std::vector<Block> blocks;
};

struct LocalShards {
  std::vector<ShardedTensor> tensors;
  // save: rank 0's is written; load: the file's, with kRoleSourceKey (ckpt/state_dict.h) when the
  // reader inferred its roles, so that saving it again does not make them look exact.
  Metadata metadata = Metadata::object();
};

struct ParallelOptions {
  // Replace an existing file (as checkpoint-convert --force); otherwise an existing file is an
  // error (found before anything is written).
  bool overwrite = false;
  // One XXH3-64 per block, computed by the rank that holds it.
  bool checksums = true;
  // MPI-IO collective transfers for the data (H5FD_MPIO_COLLECTIVE: every rank takes part in
  // every tensor's write, and MPI-IO's aggregators merge the ranks' pieces into large writes).
  // Pays when blocks are small or interleaved in the file; off, each rank writes its blocks
  // independently (large contiguous blocks, as on a few ranks, write fastest so).
  bool collective_io = false;
  // HDF5 metadata reads and writes made collectively (H5Pset_all_coll_metadata_ops,
  // H5Pset_coll_metadata_write): one rank reads and broadcasts instead of every rank reading.
  bool collective_metadata = true;
  // File offsets of tensor data are multiples of `alignment` for data of `alignment_threshold`
  // bytes or more (H5Pset_alignment). On a striped parallel file system set it to the stripe
  // size (Lustre: `lfs getstripe -S`), so no two ranks write one stripe.
  std::uint64_t alignment = 64;
  std::uint64_t alignment_threshold = 1;
  // MPI-IO hints (MPI_Info key/value pairs) passed to the file open, e.g. {"cb_nodes", "16"},
  // {"striping_factor", "64"}, {"striping_unit", "4194304"}, {"romio_cb_write", "enable"}.
  std::vector<std::pair<std::string, std::string>> hints;
};

// Writes the ranks' blocks as one ckpt-h5 file at `path`. Collective. Before any byte is written
// the ranks' descriptions are compared: a tensor whose dtype, global shape or role differs
// between ranks, a block outside its tensor or of the wrong shape or dtype, blocks of two ranks
// overlapping, and a tensor not fully covered are errors naming the tensor and the ranks.
// Memory per rank: its own blocks (written from where they are) plus the index (every tensor's
// name and every block's box).
void save(MPI_Comm comm, const std::filesystem::path& path, const LocalShards& local,
          const ParallelOptions& options = {});

// Which boxes of a tensor this rank wants (none: the tensor is skipped on this rank).
using WantFn = std::function<std::vector<Box>(const TensorInfo& tensor)>;

// Reads the boxes each rank asks for from the ckpt-h5 file `path` (written by save() on any
// number of ranks, or by any ckpt-h5 writer). Collective. Each rank reads only the bytes of its
// boxes (rounded up to the blocks they meet when the file has per-block checksums, which are
// verified with ReadOptions::verify_checksums), and the result lists every tensor of the file
// for which `want` returned boxes, in file order, with one Block per box.
LocalShards load(MPI_Comm comm, const std::filesystem::path& path, const WantFn& want,
                 const ReadOptions& options = {});

// Rows [begin, end) of `extent` that part `part` of `parts` gets when split as evenly as
// possible (the first extent % parts parts get one more).
std::pair<std::uint64_t, std::uint64_t> even_range(std::uint64_t extent, int part, int parts);
// The box of `shape` that part `part` of `parts` holds when the tensor is split along `dim` as
// evenly as possible: one box, or none when the part gets no element (rank-0 tensors, and `dim`
// past the rank: part 0 holds all). Made to be returned from a WantFn.
std::vector<Box> even_split(const Shape& shape, std::size_t dim, int part, int parts);

}  // namespace ckpt::mpi

CKPT_API_END

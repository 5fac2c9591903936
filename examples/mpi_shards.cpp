// N ranks each hold a slice of a toy model (a tensor-parallel linear layer, a replicated bias and
// a BatchNorm buffer), save it as one ckpt-h5 file, and load it back on fewer ranks, each asking
// only for its new slice; every rank checks what it got.
//
//   cmake -S . -B build-mpi -DCKPT_WITH_MPI=ON && cmake --build build-mpi
//   mpirun -np 4 build-mpi/example_mpi_shards model.ckpt.h5
//   checkpoint-inspect model.ckpt.h5 --verify        (an ordinary ckpt-h5 file)
#include <cstdio>
#include <vector>

#include "ckpt/ckpt.h"
#include "ckpt/mpi.h"

namespace {

constexpr std::int64_t kIn = 64, kOut = 30;

// The value every element of the layer has, whoever holds it.
float weight_at(std::uint64_t row, std::uint64_t col) { return static_cast<float>(row) + static_cast<float>(col) / 100.0f; }

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  const char* path = argc > 1 ? argv[1] : "model.ckpt.h5";
  int status = 0;
  try {
    // 1. Each rank holds rows [begin, end) of fc.weight (split as evenly as ckpt::mpi::even_split
    // does); rank 0 also holds the bias and the BatchNorm statistics, which every rank has a copy
    // of but only one may save.
    ckpt::mpi::LocalShards mine;
    ckpt::TensorInfo weight;
    weight.name = "fc.weight";
    weight.dtype = ckpt::DType::float32;
    weight.shape = {kOut, kIn};
    ckpt::mpi::ShardedTensor w{weight, {}};
    for (const auto& box : ckpt::mpi::even_split(weight.shape, 0, rank, ranks)) {
      ckpt::Tensor data = ckpt::Tensor::uninitialized(ckpt::DType::float32, {static_cast<std::int64_t>(box.sizes[0]), kIn});
      auto values = data.as_mutable<float>();
      for (std::uint64_t r = 0; r < box.sizes[0]; ++r)
        for (std::uint64_t c = 0; c < kIn; ++c) values[r * kIn + c] = weight_at(box.offsets[0] + r, c);
      w.blocks.push_back({box, std::move(data)});
    }
    mine.tensors.push_back(std::move(w));

    ckpt::TensorInfo bias;
    bias.name = "fc.bias";
    bias.dtype = ckpt::DType::float32;
    bias.shape = {kOut};
    ckpt::TensorInfo mean = bias;
    mean.name = "bn.running_mean";
    mean.role = ckpt::Role::buffer;
    mean.collection = "batch_stats";
    for (const auto& info : {bias, mean}) {
      ckpt::mpi::ShardedTensor t{info, {}};
      if (rank == 0) t.blocks.push_back({{{0}, {kOut}}, ckpt::Tensor::zeros(ckpt::DType::float32, {kOut})});
      mine.tensors.push_back(std::move(t));
    }
    mine.metadata = {{"step", 1000}, {"saved_by_ranks", ranks}};

    ckpt::mpi::ParallelOptions options;
    options.overwrite = true;
    ckpt::mpi::save(MPI_COMM_WORLD, path, mine, options);
    if (rank == 0) std::printf("saved %s from %d ranks\n", path, ranks);

    // 2. Load on fewer ranks (a job of another size): the first max(1, N-1) ranks form it.
    const int loaders = ranks > 1 ? ranks - 1 : 1;
    MPI_Comm job;
    MPI_Comm_split(MPI_COMM_WORLD, rank < loaders ? 0 : MPI_UNDEFINED, rank, &job);
    if (job != MPI_COMM_NULL) {
      int me = 0, size = 1;
      MPI_Comm_rank(job, &me);
      MPI_Comm_size(job, &size);
      // Each rank wants its new rows of fc.weight and the whole of everything else.
      const auto got = ckpt::mpi::load(job, path, [&](const ckpt::TensorInfo& t) {
        if (t.name == "fc.weight") return ckpt::mpi::even_split(t.shape, 0, me, size);
        return ckpt::mpi::even_split(t.shape, 0, 0, 1);
      });
      std::size_t wrong = 0;
      for (const auto& t : got.tensors) {
        for (const auto& b : t.blocks) {
          const auto values = b.data.as<float>();
          for (std::uint64_t i = 0; i < values.size(); ++i) {
            const float want = t.info.name == "fc.weight" ? weight_at(b.box.offsets[0] + i / kIn, i % kIn) : 0.0f;
            wrong += values[i] != want;
          }
        }
      }
      std::printf("rank %d of %d: loaded %zu tensors, %zu wrong values\n", me, size, got.tensors.size(), wrong);
      status = wrong == 0 ? 0 : 1;
      MPI_Comm_free(&job);
    }
  } catch (const ckpt::Error& e) {
    // Every rank has the same error; one prints it.
    if (rank == 0) std::fprintf(stderr, "error: %s\n", e.what());
    status = 1;
  }
  int worst = 0;
  MPI_Allreduce(&status, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  MPI_Finalize();
  return worst;
}

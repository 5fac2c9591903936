// ckpt-mpi-bench: one step of the MPI benchmark (tools/mpi-bench.py runs them all and prints the
// ratios). Each prints one JSON line (rank 0) with the seconds the step took (the slowest rank)
// and every rank's peak resident memory.
//
//   mpirun -np N ckpt-mpi-bench save PATH MIB [--collective]   N ranks save MIB MiB, split by rows
//   mpirun -np N ckpt-mpi-bench load PATH                      N ranks load their rows (copies)
//   ckpt-mpi-bench serial-save PATH MIB                        one process, ckpt::save
//   ckpt-mpi-bench serial-load PATH                            one process, read_all (copies)
//   ckpt-mpi-bench raw-write PATH MIB                          write + fsync of MIB MiB
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "ckpt/ckpt.h"
#include "ckpt/mpi.h"

namespace {

constexpr int kTensors = 32;
constexpr std::int64_t kCols = 4096;  // float32: 16 KiB rows

double now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

long peak_kib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

ckpt::Shape tensor_shape(std::uint64_t mib) {
  const std::uint64_t bytes = (mib << 20) / kTensors;
  return {static_cast<std::int64_t>(bytes / (kCols * 4)), kCols};
}

ckpt::Tensor filled(const ckpt::Shape& shape, std::uint64_t seed) {
  ckpt::Tensor t = ckpt::Tensor::uninitialized(ckpt::DType::float32, shape);
  auto v = t.as_mutable<float>();
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>((i * 2654435761u + seed) % 1000003) * 1e-3f;
  return t;
}

std::string name_of(int i) { return "layer" + std::to_string(i) + ".weight"; }

// Rank 0 prints the slowest rank's seconds and every rank's peak memory.
void report(MPI_Comm comm, const char* step, double seconds, std::uint64_t bytes_held) {
  int rank = 0, size = 1;
  MPI_Comm_rank(comm, &rank);
  MPI_Comm_size(comm, &size);
  double slowest = 0;
  MPI_Reduce(&seconds, &slowest, 1, MPI_DOUBLE, MPI_MAX, 0, comm);
  long mine[2] = {peak_kib(), static_cast<long>(bytes_held >> 10)};
  std::vector<long> all(2 * size);
  MPI_Gather(mine, 2, MPI_LONG, all.data(), 2, MPI_LONG, 0, comm);
  if (rank != 0) return;
  std::printf("{\"step\": \"%s\", \"ranks\": %d, \"seconds\": %.4f, \"peak_kib\": [", step, size, slowest);
  for (int r = 0; r < size; ++r) std::printf("%s%ld", r ? ", " : "", all[2 * r]);
  std::printf("], \"held_kib\": [");
  for (int r = 0; r < size; ++r) std::printf("%s%ld", r ? ", " : "", all[2 * r + 1]);
  std::printf("]}\n");
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, ranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  if (argc < 3) {
    std::fprintf(stderr, "usage: ckpt-mpi-bench save|load|serial-save|serial-load|raw-write PATH [MIB]\n");
    MPI_Finalize();
    return 2;
  }
  const std::string step = argv[1], path = argv[2];
  const std::uint64_t mib = argc > 3 ? std::stoull(argv[3]) : 1024;
  try {
    if (step == "save") {
      ckpt::mpi::LocalShards local;
      std::uint64_t held = 0;
      const ckpt::Shape shape = tensor_shape(mib);
      for (int i = 0; i < kTensors; ++i) {
        ckpt::TensorInfo info;
        info.name = name_of(i);
        info.dtype = ckpt::DType::float32;
        info.shape = shape;
        ckpt::mpi::ShardedTensor t{info, {}};
        for (const auto& box : ckpt::mpi::even_split(shape, 0, rank, ranks)) {
          t.blocks.push_back({box, filled({static_cast<std::int64_t>(box.sizes[0]), kCols}, i)});
          held += t.blocks.back().data.nbytes();
        }
        local.tensors.push_back(std::move(t));
      }
      ckpt::mpi::ParallelOptions options;
      options.overwrite = true;
      for (int a = 4; a < argc; ++a)
        if (std::string(argv[a]) == "--collective") options.collective_io = true;
      MPI_Barrier(MPI_COMM_WORLD);
      const double t0 = now();
      ckpt::mpi::save(MPI_COMM_WORLD, path, local, options);
      report(MPI_COMM_WORLD, "save", now() - t0, held);
    } else if (step == "load") {
      ckpt::ReadOptions options;
      options.zero_copy = false;
      MPI_Barrier(MPI_COMM_WORLD);
      const double t0 = now();
      const auto got = ckpt::mpi::load(
          MPI_COMM_WORLD, path, [&](const ckpt::TensorInfo& t) { return ckpt::mpi::even_split(t.shape, 0, rank, ranks); },
          options);
      const double seconds = now() - t0;
      std::uint64_t held = 0;
      for (const auto& t : got.tensors)
        for (const auto& b : t.blocks) held += b.data.nbytes();
      report(MPI_COMM_WORLD, "load", seconds, held);
    } else if (step == "serial-save") {
      ckpt::StateDict state;
      const ckpt::Shape shape = tensor_shape(mib);
      std::uint64_t held = 0;
      for (int i = 0; i < kTensors; ++i) {
        ckpt::EntryInfo info;
        info.name = name_of(i);
        state.add(info, filled(shape, i));
        held += state.entries().back().tensor.nbytes();
      }
      ckpt::WriteOptions options;
      options.overwrite = true;
      const double t0 = now();
      ckpt::save(state, path, options);
      report(MPI_COMM_WORLD, "serial-save", now() - t0, held);
    } else if (step == "serial-load") {
      ckpt::ReadOptions options;
      options.zero_copy = false;
      const double t0 = now();
      const auto state = ckpt::open(path, options)->read_all();
      const double seconds = now() - t0;
      std::uint64_t held = 0;
      for (const auto& e : state.entries()) held += e.tensor.nbytes();
      report(MPI_COMM_WORLD, "serial-load", seconds, held);
    } else if (step == "raw-write") {
      const ckpt::Tensor data = filled({static_cast<std::int64_t>((mib << 20) / (kCols * 4)), kCols}, 1);
      const double t0 = now();
      const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
      const auto bytes = data.bytes();
      for (std::size_t done = 0; fd >= 0 && done < bytes.size();) {
        const ssize_t n = ::write(fd, bytes.data() + done, std::min<std::size_t>(bytes.size() - done, 64u << 20));
        if (n <= 0) break;
        done += static_cast<std::size_t>(n);
      }
      if (fd >= 0) ::fsync(fd), ::close(fd);
      report(MPI_COMM_WORLD, "raw-write", now() - t0, bytes.size());
    } else {
      std::fprintf(stderr, "unknown step %s\n", step.c_str());
      MPI_Finalize();
      return 2;
    }
  } catch (const ckpt::Error& e) {
    if (rank == 0) std::fprintf(stderr, "error: %s\n", e.what());
    MPI_Finalize();
    return 1;
  }
  MPI_Finalize();
  return 0;
}

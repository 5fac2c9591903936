// ckpt::mpi under mpirun: a model whose every element is a known function of its place in the
// global tensor, saved from any number of ranks and loaded on any other, each rank checking what
// it got; driven by tests/mpi/run_mpi_tests.py.
//
//   mpi_check save PATH [--overwrite] [--collective] [--fsize-rank R BYTES] [--size N]
//   mpi_check load PATH                     (each rank: its part, split another way, checked)
//   mpi_check serial PATH                   (one process: ckpt::open, every tensor checked)
//   mpi_check bad KIND PATH                 (KIND: shape, dtype, role, overlap, missing, outside)
//
// Exit 0 when every check passes; otherwise rank 0 prints the error (one line) and exits 1.
#include <sys/resource.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "ckpt/ckpt.h"
#include "ckpt/mpi.h"

namespace {

using ckpt::DType;
using ckpt::mpi::Box;

int rank = 0, ranks = 1;

// The element at flat index i of every test tensor, as the bytes of `dtype`.
void element(DType dtype, std::uint64_t i, std::byte* out) {
  const double v = static_cast<double>(i % 1000) * 0.25 - 100.0;
  const auto ints = static_cast<std::int64_t>((i * 7919) % 200) - 100;
  const auto uints = static_cast<std::uint64_t>((i * 7919) % 250);
  auto put = [&](auto x) { std::memcpy(out, &x, sizeof x); };
  switch (dtype) {
    case DType::float64: put(v); break;
    case DType::float32: put(static_cast<float>(v)); break;
    case DType::float16: put(static_cast<_Float16>(v)); break;
    case DType::bfloat16: {
      const float f = static_cast<float>(static_cast<int>(i % 256) - 128);
      std::uint32_t bits;
      std::memcpy(&bits, &f, 4);
      put(static_cast<std::uint16_t>(bits >> 16));
      break;
    }
    case DType::float8_e4m3fn:
    case DType::float8_e5m2: put(static_cast<std::uint8_t>(i % 0x7e)); break;
    case DType::int64: put(ints); break;
    case DType::int32: put(static_cast<std::int32_t>(ints)); break;
    case DType::int16: put(static_cast<std::int16_t>(ints)); break;
    case DType::int8: put(static_cast<std::int8_t>(ints)); break;
    case DType::uint64: put(uints); break;
    case DType::uint32: put(static_cast<std::uint32_t>(uints)); break;
    case DType::uint16: put(static_cast<std::uint16_t>(uints)); break;
    case DType::uint8: put(static_cast<std::uint8_t>(uints)); break;
    case DType::bool_: put(static_cast<std::uint8_t>(i % 3 == 0)); break;
    case DType::complex64: {
      const float parts[2] = {static_cast<float>(v), -static_cast<float>(v)};
      std::memcpy(out, parts, sizeof parts);
      break;
    }
    case DType::complex128: {
      const double parts[2] = {v, -v};
      std::memcpy(out, parts, sizeof parts);
      break;
    }
  }
}

// The box `box` of a tensor of `shape`, filled with its known elements.
ckpt::Tensor fill(DType dtype, const ckpt::Shape& shape, const Box& box) {
  ckpt::Tensor t = ckpt::Tensor::uninitialized(dtype, ckpt::Shape(box.sizes.begin(), box.sizes.end()));
  const std::size_t item = ckpt::dtype_size(dtype);
  auto out = t.mutable_bytes();
  const std::size_t r = shape.size();
  std::vector<std::uint64_t> idx(r, 0);
  for (std::uint64_t n = 0; n < t.numel(); ++n) {
    std::uint64_t flat = 0;
    for (std::size_t k = 0; k < r; ++k) flat = flat * static_cast<std::uint64_t>(shape[k]) + box.offsets[k] + idx[k];
    element(dtype, flat, out.data() + n * item);
    for (std::size_t k = r; k-- > 0;) {
      if (++idx[k] < box.sizes[k]) break;
      idx[k] = 0;
    }
  }
  return t;
}

struct Spec {
  const char* name;
  ckpt::Role role;
  const char* section;  // extra sections
  DType dtype;
  ckpt::Shape shape;
  // How ranks hold it when saving: split along `dim` (-1: all of it on rank `owner`), in
  // `pieces_per_rank` pieces per rank (a rank's pieces are not next to each other).
  int dim;
  int pieces_per_rank = 1;
  int owner = 0;
};

std::vector<Spec> model(std::uint64_t big) {
  std::vector<Spec> m = {
      {"embed.weight", ckpt::Role::parameter, "", DType::float32, {37, 16}, 0},
      {"fc.weight", ckpt::Role::parameter, "", DType::bfloat16, {8, 21}, 1},
      {"fc.bias", ckpt::Role::parameter, "", DType::float16, {21}, 0},
      {"conv.weight", ckpt::Role::parameter, "", DType::float64, {9, 3, 5, 5}, 0, 2},
      {"bn.running_mean", ckpt::Role::buffer, "", DType::float32, {16}, -1, 1, 0},
      {"bn.num_batches_tracked", ckpt::Role::buffer, "", DType::int64, {}, -1, 1, 1},
      {"mask", ckpt::Role::buffer, "", DType::bool_, {5, 7}, 1},
      {"empty", ckpt::Role::parameter, "", DType::float32, {0, 4}, 0},
      {"few", ckpt::Role::parameter, "", DType::int8, {2}, 0},
      {"q.i16", ckpt::Role::parameter, "", DType::int16, {13, 2}, 0},
      {"q.i32", ckpt::Role::parameter, "", DType::int32, {3, 3, 3}, 2},
      {"q.u8", ckpt::Role::parameter, "", DType::uint8, {40}, 0, 3},
      {"q.u16", ckpt::Role::parameter, "", DType::uint16, {6}, 0},
      {"q.u32", ckpt::Role::parameter, "", DType::uint32, {6}, 0},
      {"q.u64", ckpt::Role::parameter, "", DType::uint64, {6}, 0},
      {"q.f8a", ckpt::Role::parameter, "", DType::float8_e4m3fn, {10}, 0},
      {"q.f8b", ckpt::Role::parameter, "", DType::float8_e5m2, {10}, 0},
      {"z.c64", ckpt::Role::parameter, "", DType::complex64, {5, 2}, 0},
      {"z.c128", ckpt::Role::parameter, "", DType::complex128, {4}, 0},
      {"exp_avg.fc.weight", ckpt::Role::extra, "optimizer", DType::float32, {8, 21}, 0},
      {"step", ckpt::Role::extra, "optimizer", DType::int32, {}, -1, 1, 0},
  };
  if (big > 0) m.push_back({"big", ckpt::Role::parameter, "", DType::float32, {static_cast<std::int64_t>(big / 4096), 1024}, 0});
  return m;
}

ckpt::TensorInfo info_of(const Spec& s) {
  ckpt::TensorInfo info;
  info.name = s.name;
  info.role = s.role;
  info.dtype = s.dtype;
  info.shape = s.shape;
  if (s.role == ckpt::Role::buffer) {
    info.collection = std::string(s.name) == "mask" ? "masks" : "batch_stats";
    info.persistent = std::string(s.name) != "mask";
  }
  if (s.role == ckpt::Role::extra) info.section = s.section;
  return info;
}

// The boxes rank `rank` holds when saving.
std::vector<Box> saved_boxes(const Spec& s) {
  if (s.dim < 0) {
    if (rank != s.owner % ranks) return {};
    Box b;
    for (auto d : s.shape) b.offsets.push_back(0), b.sizes.push_back(static_cast<std::uint64_t>(d));
    return {b};
  }
  std::vector<Box> out;
  const int parts = ranks * s.pieces_per_rank;
  for (int p = rank; p < parts; p += ranks)
    for (auto& b : ckpt::mpi::even_split(s.shape, static_cast<std::size_t>(s.dim), p, parts)) out.push_back(b);
  return out;
}

ckpt::mpi::LocalShards local_shards(const std::vector<Spec>& specs) {
  ckpt::mpi::LocalShards local;
  for (const auto& s : specs) {
    ckpt::mpi::ShardedTensor t{info_of(s), {}};
    for (const auto& box : saved_boxes(s)) t.blocks.push_back({box, fill(s.dtype, s.shape, box)});
    local.tensors.push_back(std::move(t));
  }
  local.metadata = {{"epoch", 3}, {"saved_by_ranks", ranks}};
  return local;
}

int failures = 0;
void check(bool ok, const std::string& what) {
  if (!ok) {
    ++failures;
    std::fprintf(stderr, "rank %d: FAIL: %s\n", rank, what.c_str());
  }
}

bool same(const ckpt::Tensor& got, const ckpt::Tensor& want) {
  return got.dtype() == want.dtype() && got.shape() == want.shape() &&
         std::equal(got.bytes().begin(), got.bytes().end(), want.bytes().begin(), want.bytes().end());
}

int finish() {
  int total = 0;
  MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  MPI_Finalize();
  return total == 0 ? 0 : 1;
}

int report(const ckpt::Error& e) {
  if (rank == 0) std::fprintf(stderr, "error: %s\n", e.what());
  MPI_Finalize();
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &ranks);
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() < 2) {
    std::fprintf(stderr, "usage: mpi_check save|load|serial|bad ... PATH\n");
    MPI_Finalize();
    return 2;
  }
  const std::string mode = args[0];
  ckpt::mpi::ParallelOptions options;
  std::uint64_t big = 0, many = 0;
  for (std::size_t i = 2; i < args.size(); ++i) {
    if (args[i] == "--overwrite") options.overwrite = true;
    if (args[i] == "--collective") options.collective_io = true;
    if (args[i] == "--size" && i + 1 < args.size()) big = std::stoull(args[++i]);
    if (args[i] == "--many" && i + 1 < args.size()) many = std::stoull(args[++i]);
    if (args[i] == "--fsize-rank" && i + 2 < args.size()) {
      const int who = std::stoi(args[i + 1]);
      const rlim_t limit = std::stoull(args[i + 2]);
      i += 2;
      if (who == rank) {
        rlimit rl{limit, limit};
        setrlimit(RLIMIT_FSIZE, &rl);
      }
    }
  }
  std::vector<Spec> specs = model(big);
  // --many N: N more small tensors, split by rows (names kept alive in `names`).
  static std::vector<std::string> names;
  for (std::uint64_t k = 0; k < many; ++k) names.push_back("many." + std::to_string(k));
  for (const auto& n : names) specs.push_back({n.c_str(), ckpt::Role::parameter, "", DType::float32, {4, 4}, 0});

  if (mode == "save") {
    try {
      ckpt::mpi::save(MPI_COMM_WORLD, args[1], local_shards(specs), options);
    } catch (const ckpt::Error& e) {
      return report(e);
    }
    return finish();
  }

  if (mode == "bad") {
    // args: bad KIND PATH
    const std::string kind = args[1], path = args[2];
    auto local = local_shards(specs);
    auto find = [&](const char* name) -> ckpt::mpi::ShardedTensor& {
      for (auto& t : local.tensors)
        if (t.info.name == name) return t;
      throw std::logic_error("no such tensor");
    };
    if (kind == "shape" && rank == ranks - 1) find("embed.weight").info.shape = {37, 17};
    if (kind == "dtype" && rank == ranks - 1) {
      auto& t = find("fc.bias");
      t.info.dtype = DType::float32;
      for (auto& b : t.blocks) b.data = fill(DType::float32, t.info.shape, b.box);
    }
    if (kind == "role" && rank == ranks - 1) find("embed.weight").info.role = ckpt::Role::buffer;
    if (kind == "overlap" && rank == ranks - 1) {
      auto& t = find("embed.weight");
      Box b{{0, 0}, {1, 16}};
      t.blocks.push_back({b, fill(DType::float32, t.info.shape, b)});
    }
    if (kind == "missing" && rank == ranks - 1) find("embed.weight").blocks.clear();
    if (kind == "outside" && rank == ranks - 1) find("fc.bias").blocks.at(0).box.offsets = {20};
    if (kind == "options" && rank == ranks - 1) options.collective_io = !options.collective_io;
    if (kind == "checksums" && rank == ranks - 1) options.checksums = false;
    std::string target = path;
    if (kind == "path" && rank == ranks - 1) target += ".other";
    try {
      ckpt::mpi::save(MPI_COMM_WORLD, target, local, options);
      if (rank == 0) std::fprintf(stderr, "error: the save succeeded\n");
      MPI_Finalize();
      return 3;
    } catch (const ckpt::Error& e) {
      if (rank == 0) std::printf("%s\n", e.what());
      MPI_Finalize();
      return 0;
    }
  }

  if (mode == "load-any") {
    // Any checkpoint ckpt reads (a distributed checkpoint's directory too): each rank loads its
    // rows of every tensor, compared with a serial read of the whole tensor.
    try {
      const auto got = ckpt::mpi::load(MPI_COMM_WORLD, args[1], [&](const ckpt::TensorInfo& t) {
        return ckpt::mpi::even_split(t.shape, 0, rank, ranks);
      });
      auto serial = ckpt::open(args[1]);
      // Inferred roles are marked so (kRoleSourceKey), and mpi::save would write them so.
      const auto mark = got.metadata.find(std::string(ckpt::kRoleSourceKey));
      check((serial->role_source() == ckpt::RoleSource::heuristic) ==
                (mark != got.metadata.end() && *mark == "heuristic"),
            "the role-source mark of the loaded metadata");
      std::size_t compared = 0;
      for (const auto& t : got.tensors) {
        const ckpt::Tensor whole = serial->read(t.info.name, t.info.role == ckpt::Role::extra ? t.info.section : "");
        const std::size_t item = ckpt::dtype_size(t.info.dtype);
        for (const auto& b : t.blocks) {
          // Rows [a, b) of a row-major tensor are one run of its bytes.
          std::uint64_t row = item;
          for (std::size_t k = 1; k < t.info.shape.size(); ++k) row *= static_cast<std::uint64_t>(t.info.shape[k]);
          const auto first = whole.bytes().begin() + static_cast<std::ptrdiff_t>((b.box.offsets.empty() ? 0 : b.box.offsets[0]) * row);
          check(std::equal(b.data.bytes().begin(), b.data.bytes().end(), first), "rows of " + t.info.name);
          ++compared;
        }
      }
      int total = static_cast<int>(compared), all = 0;
      MPI_Allreduce(&total, &all, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
      check(all > 0, "some blocks compared");
    } catch (const ckpt::Error& e) {
      return report(e);
    }
    return finish();
  }

  if (mode == "load-throw") {
    // The last rank's WantFn throws something that is not a std::exception: every rank fails.
    try {
      (void)ckpt::mpi::load(MPI_COMM_WORLD, args[1], [&](const ckpt::TensorInfo&) -> std::vector<Box> {
        if (rank == ranks - 1) throw 42;
        return {};
      });
    } catch (const ckpt::Error& e) {
      if (rank == 0) std::printf("%s\n", e.what());
      MPI_Finalize();
      return 0;
    }
    MPI_Finalize();
    return 3;
  }

  if (mode == "load") {
    // Split another way than saved: along the last dimension, three pieces per rank.
    ckpt::mpi::LocalShards got;
    try {
      got = ckpt::mpi::load(MPI_COMM_WORLD, args[1], [&](const ckpt::TensorInfo& t) {
        std::vector<Box> out;
        const std::size_t dim = t.shape.empty() ? 0 : t.shape.size() - 1;
        for (int p = rank; p < 3 * ranks; p += ranks)
          for (auto& b : ckpt::mpi::even_split(t.shape, dim, p, 3 * ranks)) out.push_back(b);
        return out;
      });
    } catch (const ckpt::Error& e) {
      return report(e);
    }
    std::size_t seen = 0;
    for (const auto& s : specs) {
      for (const auto& t : got.tensors) {
        if (t.info.name != s.name) continue;
        ++seen;
        const auto want = info_of(s);
        check(t.info.role == want.role && t.info.dtype == want.dtype && t.info.shape == want.shape &&
                  t.info.section == want.section && t.info.collection == want.collection &&
                  t.info.persistent == want.persistent,
              std::string("info of ") + s.name);
        for (const auto& b : t.blocks) check(same(b.data, fill(s.dtype, s.shape, b.box)), std::string("values of ") + s.name);
      }
    }
    check(got.metadata.value("epoch", 0) == 3, "metadata");
    (void)seen;
    return finish();
  }

  if (mode == "serial") {
    try {
      auto reader = ckpt::open(args[1]);
      check(reader->tensors().size() == specs.size(), "tensor count");
      for (const auto& s : specs) {
        const std::size_t i = reader->find(s.name, s.role == ckpt::Role::extra ? s.section : "");
        const auto want_info = info_of(s);
        const auto& info = reader->tensors()[i];
        check(info.role == want_info.role && info.collection == want_info.collection &&
                  info.persistent == want_info.persistent,
              std::string("role of ") + s.name);
        Box whole;
        for (auto d : s.shape) whole.offsets.push_back(0), whole.sizes.push_back(static_cast<std::uint64_t>(d));
        check(same(reader->read(i), fill(s.dtype, s.shape, whole)), std::string("values of ") + s.name);
      }
      const std::size_t verified = reader->verify();
      check(verified == specs.size(), "every tensor verified: " + std::to_string(verified));
      check(reader->metadata().value("epoch", 0) == 3, "metadata");
    } catch (const ckpt::Error& e) {
      return report(e);
    }
    return finish();
  }
  std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
  MPI_Finalize();
  return 2;
}

#include <catch2/catch.hpp>

#include <fmt/format.h>

#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <thread>

#include "core/chunks.h"
#include "helpers.h"

using namespace ckpt;
using ckpt::test::TempDir;

TEST_CASE("ckpt-h5 round-trips every dtype, rank 0, empty tensors and awkward keys", "[ckpt-h5]") {
  TempDir dir;
  const StateDict original = test::kitchen_sink();
  const auto path = dir / "model.ckpt.h5";
  WriteOptions options;
  SECTION("uncompressed") {}
  SECTION("zstd, small chunks") {
    options.compression = Compression::zstd;
    options.zstd_level = 5;
    options.chunk_bytes = 10000;
    options.min_compress_bytes = 1;
  }
  SECTION("zstd, one thread") {
    options.compression = Compression::zstd;
    options.threads = 1;
    options.chunk_bytes = 4096;
  }
  SECTION("no checksums") { options.checksums = false; }
  save(original, path, options);
  const StateDict loaded = load(path);
  test::require_same(original, loaded);
  CHECK(loaded.role_source() == RoleSource::stored);
  ReadOptions copies;  // the copy path, with read-ahead on another thread
  copies.zero_copy = false;
  test::require_same(original, load(path, copies));
  for (const unsigned threads : {1u, 3u}) {  // decompression on one thread, and on more than this machine may have
    copies.threads = threads;
    test::require_same(original, load(path, copies));
  }
  auto reader = open(path);
  CHECK(reader->format() == "ckpt-h5");
  CHECK(reader->format_version() == "1.0");
  CHECK(reader->checksum(0).has_value() == options.checksums);
}

TEST_CASE("ckpt-h5 uncompressed reads are zero-copy and aligned", "[ckpt-h5]") {
  TempDir dir;
  const StateDict original = test::kitchen_sink();
  save(original, dir / "m.ckpt.h5");
  std::vector<Tensor> kept;
  ReadOptions shared;  // read-only views of one mapping, down to the smallest tensor
  shared.writable = false;
  {
    auto reader = open(dir / "m.ckpt.h5", shared);
    for (std::size_t i = 0; i < reader->tensors().size(); ++i) {
      Tensor t = reader->read(i);
      INFO(reader->tensors()[i].name.substr(0, 40));
      if (t.nbytes() == 0) continue;
      CHECK(t.is_view());
      CHECK(reinterpret_cast<std::uintptr_t>(t.bytes().data()) % 64 == 0);
      kept.push_back(t);
    }
  }
  // Views outlive the reader: the mapping stays alive with them.
  CHECK(kept.front().equals(original.at("dtypes.float64")));

  ReadOptions copy;
  copy.zero_copy = false;
  CHECK_FALSE(open(dir / "m.ckpt.h5", copy)->read("big.weight").is_view());

  WriteOptions zstd;
  zstd.compression = Compression::zstd;
  save(original, dir / "z.ckpt.h5", zstd);
  CHECK_FALSE(open(dir / "z.ckpt.h5")->read("big.weight").is_view());
}

TEST_CASE("ckpt-h5 lists from the index without touching datasets", "[ckpt-h5]") {
  // The golden file misses the dataset of 'half': listing works, reading that tensor fails.
  ReadOptions direct;
  direct.isolate_hdf5 = false;
  auto reader = open("bad/missing_dataset.ckpt.h5", direct);
  REQUIRE(reader->tensors().size() == 12);
  CHECK(reader->tensors()[2].name == "half");
  CHECK(reader->tensors()[2].shape == Shape{3});
  CHECK_NOTHROW(reader->read("conv.weight"));
  CHECK_THROWS_WITH(reader->read("half"),
                    "bad/missing_dataset.ckpt.h5: tensor 'half': dataset /parameters/half is missing");
  // Isolated (the default), each dataset is checked in the helper before its first read, with
  // the same outcome.
  auto isolated = open("bad/missing_dataset.ckpt.h5");
  REQUIRE(isolated->tensors().size() == 12);
  CHECK_NOTHROW(isolated->read("conv.weight"));
  CHECK_THROWS_WITH(isolated->read("half"),
                    "bad/missing_dataset.ckpt.h5: tensor 'half': dataset /parameters/half is missing");
  CHECK_THROWS_WITH(isolated->read_all(),
                    "bad/missing_dataset.ckpt.h5: tensor 'half': dataset /parameters/half is missing");
}

TEST_CASE("ckpt-h5: a file that crashes HDF5 is an error, not a crash", "[ckpt-h5][isolate]") {
  // bad/crashes_hdf5.ckpt.h5 is a corrupt copy of good/h5py_spec.ckpt.h5 (an old-format object
  // header without checksums) on which HDF5 1.10.8 segfaults in H5O_msg_read.
  auto reader = open("bad/crashes_hdf5.ckpt.h5");
  CHECK_THROWS_WITH(reader->read_all(), "bad/crashes_hdf5.ckpt.h5: HDF5 crashed (SIGSEGV) reading the file's "
                                        "structure: the file is corrupt or malformed");
}

namespace {

// Runs `body` in a child process (so that what it does to the process, signals or threads or the
// working directory, stays there) with a deadline; true if it returned normally in time.
bool in_child(const std::function<void()>& body, unsigned seconds = 60) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);   // its own process group: whatever it forks is ended with it
    ::alarm(seconds);  // a hang ends the child with SIGALRM
    try {
      body();
    } catch (...) {
      ::_exit(2);
    }
    ::_exit(0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  ::kill(-pid, SIGKILL);  // a grandchild left hanging would hold the test's output open
  return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

std::vector<std::byte> bytes_of(const std::filesystem::path& path) {
  const std::string text = test::read_file(path);
  std::vector<std::byte> bytes(text.size());
  std::memcpy(bytes.data(), text.data(), text.size());
  return bytes;
}

}  // namespace

TEST_CASE("the structure check is never fooled: ignored SIGCHLD, another working directory, a moved file",
          "[ckpt-h5][isolate]") {
  // With SIGCHLD ignored (servers do) an exit status is lost: the check answers through a pipe.
  CHECK(in_child([] {
    std::signal(SIGCHLD, SIG_IGN);
    CHECK_THROWS_AS(open_memory(bytes_of("bad/crashes_hdf5.ckpt.h5"))->read_all(), Error);
    CHECK_THROWS_AS(open("bad/crashes_hdf5.ckpt.h5")->read_all(), Error);
  }));
  // The helper has a working directory of its own: requests name files absolutely, and it checks
  // that it sees the very file the reader has open.
  CHECK(in_child([] {
    (void)open("good/h5py_spec.ckpt.h5")->read_all();  // the helper runs from here on
    std::filesystem::current_path("bad");
    CHECK_THROWS_WITH(open("crashes_hdf5.ckpt.h5")->read_all(),
                      "crashes_hdf5.ckpt.h5: HDF5 crashed (SIGSEGV) reading the file's structure: the file is corrupt or "
                      "malformed");
  }));
  // A file moved away and replaced under a reader: a check of the new file would prove nothing.
  TempDir dir;
  std::filesystem::copy_file("good/h5py_spec.ckpt.h5", dir / "m.ckpt.h5");
  auto reader = open(dir / "m.ckpt.h5");
  std::filesystem::rename(dir / "m.ckpt.h5", dir / "old.ckpt.h5");
  std::filesystem::copy_file("bad/crashes_hdf5.ckpt.h5", dir / "m.ckpt.h5");
  try {
    (void)reader->read("mask");  // the dataset HDF5 crashes on in the other file
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::io);
    CHECK_THAT(e.what(), Catch::Matchers::Contains("no longer the one that was opened"));
  }
}

TEST_CASE("checkpoints in memory are checked in a fork, safely while other threads use HDF5", "[ckpt-h5][isolate]") {
  TempDir dir;
  save(test::kitchen_sink(), dir / "k.ckpt.h5");
  const auto bytes = bytes_of(dir / "k.ckpt.h5");
  CHECK(in_child([&] {
    std::thread files([&] {
      for (int i = 0; i < 100; ++i) (void)open(dir / "k.ckpt.h5")->read_all();
    });
    for (int i = 0; i < 20; ++i) (void)open_memory(bytes, nullptr)->read_all();
    files.join();
  }));
  // One dataset that crashes HDF5 does not take the others with it.
  auto reader = open_memory(bytes_of("bad/crashes_hdf5.ckpt.h5"));
  std::size_t read = 0;
  for (std::size_t i = 0; i < reader->tensors().size(); ++i) {
    try {
      (void)reader->read(i);
      ++read;
    } catch (const Error&) {
    }
  }
  CHECK(read >= reader->tensors().size() - 2);
}

TEST_CASE("ckpt-h5 with 10,000 tensors lists and reads by name", "[ckpt-h5]") {
  TempDir dir;
  StateDict s;
  for (int i = 0; i < 10000; ++i)
    s.add_parameter(fmt::format("layers.{}.weight", i), test::pattern_tensor(DType::float16, {4}, i));
  save(s, dir / "many.ckpt.h5");
  auto reader = open(dir / "many.ckpt.h5");
  REQUIRE(reader->tensors().size() == 10000);
  CHECK(reader->tensors()[9999].name == "layers.9999.weight");
  CHECK(reader->read("layers.1234.weight").equals(s.at("layers.1234.weight")));
}

TEST_CASE("ckpt-h5 writes are atomic", "[ckpt-h5][atomic]") {
  TempDir dir;
  const auto path = dir / "m.ckpt.h5";
  StateDict first;
  first.add_parameter("w", test::pattern_tensor(DType::float32, {8}, 1));
  save(first, path);
  const std::string before = test::read_file(path);

  // A source that fails half-way, as a crashed conversion would.
  class Failing : public Source {
   public:
    explicit Failing(const StateDict& s) : inner_(s) {}
    const std::vector<TensorInfo>& tensors() const override { return inner_.tensors(); }
    const Metadata& metadata() const override { return inner_.metadata(); }
    Tensor read(std::size_t i) override {
      if (i == 2) throw Error(ErrorCode::io, "input.pt", "read failed");
      return inner_.read(i);
    }

   private:
    StateDictSource inner_;
  };
  StateDict big;
  for (int i = 0; i < 4; ++i) big.add_parameter("p" + std::to_string(i), test::pattern_tensor(DType::float32, {64, 1000}, i));
  WriteOptions zstd;  // chunks of the first tensors still queued for compression when it fails
  zstd.compression = Compression::zstd;
  zstd.chunk_bytes = 4096;
  for (const WriteOptions& options : {WriteOptions{}, zstd}) {
    Failing failing(big);
    CHECK_THROWS_WITH(save(failing, path, options), "input.pt: read failed");
    CHECK(test::read_file(path) == before);
    std::size_t files = 0;
    for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator(dir.path())) ++files;
    CHECK(files == 1);  // no temporary left behind
  }

  WriteOptions keep;
  keep.overwrite = false;
  CHECK_THROWS_WITH(save(first, path, keep), path.string() + ": already exists (not overwriting)");
  CHECK_THROWS_WITH(save(first, dir / "missing-dir" / "m.ckpt.h5"),
                    Catch::Matchers::StartsWith((dir / "missing-dir" / "m.ckpt.h5").string() +
                                                ": cannot create a temporary file in"));
}

TEST_CASE("ckpt-h5 reads files h5py wrote by the spec", "[ckpt-h5][peer]") {
  for (const char* file : {"good/h5py_spec.ckpt.h5", "good/minor_newer.ckpt.h5"}) {
    INFO(file);
    auto reader = open(file);
    CHECK(reader->format_version() == (std::string(file).find("minor") != std::string::npos ? "1.7" : "1.0"));
    const StateDict s = reader->read_all();
    REQUIRE(s.size() == 12);
    const auto conv = s.at("conv.weight").as<float>();
    for (std::size_t i = 0; i < conv.size(); ++i) CHECK(conv[i] == 0.5f * static_cast<float>(i));
    CHECK(s.at("a/b").as<double>()[1] == 2.25);
    CHECK(s.at("half").as<float16_bits>()[0].bits == 0x3c00);
    CHECK(s.at("bf").as<bfloat16_bits>()[2].bits == 0x4060);
    CHECK(s.at("cplx").bytes().size() == 16);  // two complex64 elements
    CHECK(s.at("cplx").dtype() == DType::complex64);
    CHECK(s.at("empty").shape() == Shape{0, 3});
    const auto big = s.at("zstd.weight").as<float>();  // h5py's own chunking through the plugin
    REQUIRE(big.size() == 33 * 65);
    for (std::size_t i = 0; i < big.size(); ++i) REQUIRE(big[i] == static_cast<float>(i));
    const Entry* mean = s.find("bn.running_mean");
    CHECK(mean->role == Role::buffer);
    CHECK(mean->collection == "batch_stats");
    CHECK(s.at("bn.num_batches_tracked").as<std::int64_t>()[0] == 7);
    CHECK_FALSE(s.find("mask")->persistent);
    CHECK(!s.at("mask").as<bool>()[1]);
    CHECK(s.at("f8").dtype() == DType::float8_e4m3fn);
    CHECK(s.find("optimizer", "state.0.step")->tensor.as<std::int64_t>()[0] == 5);
    CHECK(s.metadata()["epoch"] == 3);
    CHECK(s.metadata()["config"]["depth"] == 18);
  }
}

TEST_CASE("chunk geometry and shuffle", "[ckpt-h5][chunks]") {
  using namespace ckpt::detail;
  CHECK(choose_chunk({1000, 256}, 4, 4096) == std::vector<std::uint64_t>{4, 256});
  CHECK(choose_chunk({10, 10}, 4, 1 << 20) == std::vector<std::uint64_t>{10, 10});
  CHECK(choose_chunk({3, 4, 100000}, 2, 4096) == std::vector<std::uint64_t>{1, 1, 2048});
  CHECK(chunk_origins({5, 3}, {2, 3}).size() == 3);
  CHECK(chunk_origins({0, 3}, {1, 3}).empty());
  // Only chunks of 1s, one dimension, then whole dimensions are runs of the tensor; others
  // (h5py's automatic chunking) interleave with their neighbours.
  CHECK(chunk_is_one_run({64, 32}, {4, 32}));
  CHECK(chunk_is_one_run({3, 4, 100000}, {1, 1, 2048}));
  CHECK(chunk_is_one_run({4, 8, 16}, {1, 3, 16}));
  CHECK_FALSE(chunk_is_one_run({64, 32}, {64, 16}));
  CHECK_FALSE(chunk_is_one_run({4, 8, 16}, {4, 8, 8}));
  CHECK_FALSE(chunk_is_one_run({768, 3072}, {48, 192}));
  CHECK(interior_chunk_start({64, 32}, {4, 32}, {8, 0}) == 256u);
  CHECK_FALSE(interior_chunk_start({64, 32}, {64, 16}, {0, 16}).has_value());
  CHECK_FALSE(interior_chunk_start({10, 10}, {4, 10}, {8, 0}).has_value());  // an edge chunk

  std::vector<std::byte> in(24), shuffled(24), back(24);
  for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<std::byte>(i);
  detail::shuffle(in, shuffled, 4);
  CHECK(shuffled[1] == std::byte{4});  // byte 0 of element 1
  CHECK(shuffled[6] == std::byte{1});  // byte 1 of element 0
  unshuffle(shuffled, back, 4);
  CHECK(back == in);

  // A 5x7 tensor in 2x3 chunks: copy out and back in reproduces it.
  std::vector<std::byte> tensor(35), rebuilt(35), chunk(6);
  for (std::size_t i = 0; i < 35; ++i) tensor[i] = static_cast<std::byte>(i + 1);
  for (const auto& origin : chunk_origins({5, 7}, {2, 3})) {
    copy_tensor_to_chunk(tensor, chunk, {5, 7}, {2, 3}, origin, 1);
    copy_chunk_to_tensor(chunk, rebuilt, {5, 7}, {2, 3}, origin, 1);
  }
  CHECK(rebuilt == tensor);
}

// Hidden: run by tests/peers/test_h5py_peer.py to get files for h5py to judge. Writes the kitchen
// sink uncompressed and with zstd, and the expected bytes of every tensor as JSON.
TEST_CASE("write peer fixtures", "[.fixture]") {
  const char* out = std::getenv("CKPT_FIXTURE_OUT");
  REQUIRE(out != nullptr);
  const std::filesystem::path dir(out);
  const StateDict s = test::kitchen_sink();
  save(s, dir / "sink.ckpt.h5");
  WriteOptions zstd;
  zstd.compression = Compression::zstd;
  zstd.chunk_bytes = 8192;
  save(s, dir / "sink.zstd.ckpt.h5", zstd);
  nlohmann::json expected = nlohmann::json::array();
  for (const auto& e : s.entries()) {
    std::string hex;
    for (auto b : e.tensor.bytes()) hex += fmt::format("{:02x}", static_cast<unsigned>(b));
    expected.push_back({{"name", e.name}, {"section", e.section_name()}, {"dtype", dtype_name(e.tensor.dtype())},
                        {"shape", e.tensor.shape()}, {"hex", hex}});
  }
  std::ofstream(dir / "sink.expected.json") << expected.dump();
}

TEST_CASE("ckpt-h5 catches a flipped byte on every read path", "[ckpt-h5][integrity]") {
  TempDir dir;
  StateDict s;
  // 12 MiB: large enough for the copy path's threaded hashing.
  s.add_parameter("big", test::pattern_tensor(DType::float32, {3, 1024, 1024}, 7));
  const auto path = dir / "m.ckpt.h5";
  save(s, path);
  {
    ReadOptions copy;
    copy.zero_copy = false;
    CHECK(open(path, copy)->read("big").equals(s.at("big")));
  }
  // Find the tensor's bytes in the file and flip one 9 MiB in.
  std::string bytes = test::read_file(path);
  const auto data = s.at("big").bytes();
  const auto at = bytes.find(std::string(reinterpret_cast<const char*>(data.data()), 64));
  REQUIRE(at != std::string::npos);
  bytes[at + (9u << 20)] ^= 0x01;
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  for (bool zero_copy : {true, false}) {
    INFO("zero_copy " << zero_copy);
    ReadOptions options;
    options.zero_copy = zero_copy;
    CHECK_THROWS_WITH(open(path, options)->read("big"), Catch::Matchers::Contains("tensor 'big': checksum mismatch"));
    options.verify_checksums = false;
    CHECK_NOTHROW(open(path, options)->read("big"));
  }
}

// Metadata nested 200,000 deep in a real file's /index: refused while parsing, before anything
// recursive (nlohmann's copy, dump) meets it; this crashed the reader with a stack overflow.
TEST_CASE("ckpt-h5: deeply nested metadata in the index is refused, not a crash", "[ckpt_h5][hostile]") {
  test::TempDir dir;
  StateDict state;
  state.add_parameter("w", Tensor::zeros(DType::float32, {2}));
  const std::string filler(400000, 'x');
  state.metadata()["m"] = filler;
  const auto path = dir / "deep.ckpt.h5";
  save(state, path);
  std::string bytes = test::read_file(path);
  const auto at = bytes.find('"' + filler + '"');
  REQUIRE(at != std::string::npos);
  const std::size_t half = (filler.size() + 2) / 2;
  bytes.replace(at, filler.size() + 2, std::string(half, '[') + std::string(half, ']'));
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
  CHECK_THROWS_WITH(open(path), path.string() + ": /index nests deeper than 128 levels");
}

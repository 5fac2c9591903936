// ckpt-bench: speed and memory of ckpt's readers and writers against baselines measured in the
// same run (a raw write/read of the same bytes). Not a test: it prints figures and ratios.
#include <fcntl.h>
#include <malloc.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <climits>
#include <cstring>
#include <fstream>
#include <functional>
#include <random>
#include <thread>

#include <fmt/format.h>

#include <boost/archive/text_iarchive.hpp>
#include <boost/archive/text_oarchive.hpp>
#include <boost/archive/xml_iarchive.hpp>
#include <boost/archive/xml_oarchive.hpp>

#include "ckpt/boost_serialization.h"
#include "ckpt/ckpt.h"

namespace {

using namespace ckpt;
using Clock = std::chrono::steady_clock;

double seconds_of(const std::function<void()>& fn) {
  const auto start = Clock::now();
  fn();
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Best of `repeats` runs: the least disturbed by other work on a shared machine.
double best_of(int repeats, const std::function<void()>& fn) {
  double best = 1e300;
  for (int i = 0; i < repeats; ++i) best = std::min(best, seconds_of(fn));
  return best;
}

std::uint64_t status_kib(const char* field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind(field, 0) == 0) return std::stoull(line.substr(std::strlen(field)));
  return 0;
}

// Resets the peak resident set size (VmHWM) to the current one (Linux >= 4.0).
void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }

// Values like trained weights: roughly normal, small; bit patterns vary as real ones do.
Tensor weights(Shape shape, std::uint64_t seed) {
  Tensor t = Tensor::zeros(DType::float32, std::move(shape));
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (float& v : t.as_mutable<float>()) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    const auto a = static_cast<float>(x & 0xffff) / 65536.0f, b = static_cast<float>((x >> 16) & 0xffff) / 65536.0f,
               c = static_cast<float>((x >> 32) & 0xffff) / 65536.0f;
    v = (a + b + c - 1.5f) * 0.05f;
  }
  return t;
}

// A transformer-like mix: large embedding and projection matrices, many mid-size ones, and lots
// of small norms, biases and integer buffers. About `target_mib` MiB.
StateDict synthetic_state(std::uint64_t target_mib) {
  StateDict s;
  const std::int64_t width = 1024;
  std::uint64_t bytes = 0, seed = 1;
  const std::uint64_t target = target_mib << 20;
  s.add_parameter("embed.weight", weights({8192, width}, seed++));  // 32 MiB
  bytes += 8192ull * width * 4;
  for (int layer = 0; bytes < target; ++layer) {
    const std::string p = fmt::format("layers.{}.", layer);
    auto add = [&](const std::string& name, Shape shape) {
      Tensor t = weights(std::move(shape), seed++);
      bytes += t.nbytes();
      s.add_parameter(p + name, std::move(t));
    };
    add("attn.qkv.weight", {3 * width, width});
    add("attn.qkv.bias", {3 * width});
    add("attn.out.weight", {width, width});
    add("attn.out.bias", {width});
    add("norm1.weight", {width});
    add("norm1.bias", {width});
    add("mlp.fc1.weight", {4 * width, width});
    add("mlp.fc1.bias", {4 * width});
    add("mlp.fc2.weight", {width, 4 * width});
    add("mlp.fc2.bias", {width});
    add("norm2.weight", {width});
    add("norm2.bias", {width});
    s.add_buffer(p + "attn.mask", Tensor::zeros(DType::bool_, {64, 64}));
    s.add_buffer(p + "norm1.running_mean", weights({width}, seed++));
    s.add_buffer(p + "steps", Tensor::zeros(DType::int64, {}));
  }
  s.metadata() = {{"benchmark", true}};
  return s;
}

std::uint64_t total_bytes(const StateDict& s) {
  std::uint64_t n = 0;
  for (const auto& e : s.entries()) n += e.tensor.nbytes();
  return n;
}

// The baseline: every tensor's bytes written back to back with write(2), fsync, rename: what any
// format must at least do, with the same durability as ckpt's atomic save.
void raw_write(const StateDict& s, const std::filesystem::path& path) {
  const auto temp = path.string() + ".tmp";
  const int fd = ::open(temp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error("cannot create " + temp);
  for (const auto& e : s.entries()) {
    const auto b = e.tensor.bytes();
    for (std::size_t done = 0; done < b.size();) {
      const auto n = ::write(fd, b.data() + done, b.size() - done);
      if (n <= 0) throw std::runtime_error("write failed");
      done += static_cast<std::size_t>(n);
    }
  }
  ::fsync(fd);
  ::close(fd);
  std::filesystem::rename(temp, path);
}

// Reads the raw file back into one fresh buffer per tensor.
void raw_read(const StateDict& s, const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  std::vector<Tensor> out;
  out.reserve(s.size());
  for (const auto& e : s.entries()) {
    Tensor t = Tensor::uninitialized(e.tensor.dtype(), e.tensor.shape());
    auto b = t.mutable_bytes();
    for (std::size_t done = 0; done < b.size();) {
      const auto n = ::read(fd, b.data() + done, b.size() - done);
      if (n <= 0) throw std::runtime_error("read failed");
      done += static_cast<std::size_t>(n);
    }
    out.push_back(std::move(t));
  }
  ::close(fd);
}

// Every byte of a view is touched, as a user of the loaded tensors would.
std::uint64_t touch(const StateDict& s) {
  std::uint64_t sum = 0;
  for (const auto& e : s.entries()) {
    const auto b = e.tensor.bytes();
    for (std::size_t i = 0; i < b.size(); i += 4096) sum += static_cast<unsigned char>(b[i]);
  }
  return sum;
}

void print_row(const std::string& what, double seconds, double baseline, std::uint64_t bytes, const std::string& note = {}) {
  fmt::print("  {:<44} {:>9.3f} s  {:>7.2f} GiB/s  {:>6.2f}x baseline  {}\n", what, seconds,
             static_cast<double>(bytes) / seconds / (1u << 30), seconds / baseline, note);
}

// --pt FILE: ckpt's reader on an existing .pt file (tools/bench-pytorch.py times torch.load on
// the same file in the same run and prints the ratios). Prints key=value lines.
int bench_pytorch(const std::filesystem::path& pt, const std::filesystem::path& dir, int repeats) {
  mallopt(M_MMAP_THRESHOLD, 1 << 20);  // as checkpoint-convert sets it (see there)
  const std::uint64_t rss_before = status_kib("VmRSS:");
  reset_peak_rss();
  const auto copy_path = dir / "copy.pt", h5_path = dir / "converted.ckpt.h5";
  const double convert_once = seconds_of([&] { (void)ckpt::convert(pt, h5_path); });
  const std::uint64_t peak_extra_kib = status_kib("VmHWM:") - rss_before;
  // As in the main benchmark: freed memory stays in the process, warmed once (see there).
  mallopt(M_MMAP_MAX, 0);
  mallopt(M_TRIM_THRESHOLD, INT_MAX);
  {
    const auto bytes = static_cast<std::int64_t>(std::filesystem::file_size(pt));
    std::vector<Tensor> warm;
    for (int i = 0; i < 2; ++i) warm.push_back(Tensor::zeros(DType::uint8, {bytes}));
  }
  ReadOptions copies;
  copies.zero_copy = false;
  const double full = best_of(repeats, [&] { (void)load(pt, copies); });
  const double views = best_of(repeats, [&] { (void)touch(load(pt)); });
  auto reader = open(pt);
  std::size_t middle = reader->tensors().size() / 2;
  const std::string name = reader->tensors()[middle].name;
  reader.reset();
  const double one = best_of(repeats, [&] { (void)open(pt)->read(name); });
  const double copy = best_of(repeats, [&] {
    std::filesystem::copy_file(pt, copy_path, std::filesystem::copy_options::overwrite_existing);
    const int fd = ::open(copy_path.c_str(), O_RDONLY | O_CLOEXEC);
    ::fsync(fd);
    ::close(fd);
  });
  const double converted = std::min(convert_once, best_of(repeats - 1, [&] { (void)ckpt::convert(pt, h5_path); }));
  fmt::print("full_read_copies_s={:.4f}\nfull_read_views_touched_s={:.4f}\nopen_read_one_s={:.6f}\n", full, views, one);
  fmt::print("copy_file_s={:.4f}\nconvert_to_ckpt_h5_s={:.4f}\nconvert_peak_extra_mib={:.1f}\n", copy, converted,
             static_cast<double>(peak_extra_kib) / 1024);
  return 0;
}

bool selected(const std::string& list, const char* label) {
  return list.empty() || ("," + list + ",").find("," + std::string(label) + ",") != std::string::npos;
}

// --matrix: every conversion between every pair of formats of the synthetic state, each timed
// against a plain copy of its input (copy_file + fsync) just before it, with the peak resident
// memory it adds (VmHWM after resetting it, minus VmRSS before). With repeats > 1, copy and
// conversion alternate that many times and the best of each counts (the disk of a shared VM
// gave the same conversion anywhere from 1.5 s to 3.7 s).
int bench_matrix(std::uint64_t size_mib, const std::filesystem::path& dir, const std::string& from, const std::string& to,
                 int repeats) {
  mallopt(M_MMAP_THRESHOLD, 1 << 20);  // as checkpoint-convert sets it (see there)
  struct Format {
    const char* label;
    const char* extension;
    Compression compression;
  };
  const Format formats[] = {{"ckpt-h5", ".ckpt.h5", Compression::none},   {"ckpt-h5+zstd", ".z.ckpt.h5", Compression::zstd},
                            {"safetensors", ".safetensors", Compression::none}, {"pytorch", ".pt", Compression::none},
                            {"flax", ".msgpack", Compression::none},      {"numpy", ".npz", Compression::none},
                            {"boost-text", ".boost.txt", Compression::none}, {"boost-xml", ".boost.xml", Compression::none},
                            {"boost-binary", ".boost.bin", Compression::none}};
  {
    fmt::print("building a {} MiB synthetic state dict and writing it in {} formats...\n", size_mib, std::size(formats));
    const StateDict state = synthetic_state(size_mib);
    for (const auto& f : formats) {
      WriteOptions o;
      o.compression = f.compression;
      save(state, dir / (std::string("src") + f.extension), o);
    }
  }
  // "out/in": the output's size over the input's. A conversion writes its output, the copy writes
  // the input again: where the output is larger (decompressing, base64), so is the least it takes.
  fmt::print("\n{:<14} {:<14} {:>9} {:>9} {:>8} {:>12} {:>7}\n", "from", "to", "seconds", "copy s", "x copy", "peak +MiB",
             "out/in");
  for (const auto& a : formats) {
    if (!selected(from, a.label)) continue;
    const auto in = dir / (std::string("src") + a.extension);
    const auto copy_path = dir / "copy.bin";
    // The copy is timed right before each conversion: on a shared machine the disk's speed drifts
    // within a run, and a baseline measured once per input made the ratios swing by 3x.
    const auto time_copy = [&] {
      const double seconds = seconds_of([&] {
        std::filesystem::copy_file(in, copy_path, std::filesystem::copy_options::overwrite_existing);
        const int fd = ::open(copy_path.c_str(), O_RDONLY | O_CLOEXEC);
        ::fsync(fd);
        ::close(fd);
      });
      std::filesystem::remove(copy_path);
      return seconds;
    };
    for (const auto& b : formats) {
      if (!selected(to, b.label)) continue;
      const auto out = dir / (std::string("dst") + b.extension);
      ConvertOptions options;
      options.write.compression = b.compression;
      double copy = 1e300, t = 1e300;
      std::uint64_t peak_kib = 0, out_size = 0;
      for (int r = 0; r < std::max(repeats, 1); ++r) {
        copy = std::min(copy, time_copy());
        const std::uint64_t rss_before = status_kib("VmRSS:");
        reset_peak_rss();
        t = std::min(t, seconds_of([&] { (void)ckpt::convert(in, out, options); }));
        peak_kib = std::max(peak_kib, status_kib("VmHWM:") - rss_before);
        out_size = std::filesystem::file_size(out);
        std::filesystem::remove(out);
      }
      fmt::print("{:<14} {:<14} {:>9.3f} {:>9.3f} {:>7.2f}x {:>12.1f} {:>7.2f}\n", a.label, b.label, t, copy, t / copy,
                 static_cast<double>(peak_kib) / 1024,
                 static_cast<double>(out_size) / static_cast<double>(std::filesystem::file_size(in)));
      std::fflush(stdout);
    }
  }
  return 0;
}

// Flushes a written file to stable storage, as ckpt's writers do before their rename.
void fsync_path(const std::filesystem::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || ::fsync(fd) != 0) throw std::runtime_error("cannot fsync " + path.string());
  ::close(fd);
}

// Runs a program (no shell) and waits; throws unless it exits 0.
void run_program(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw std::runtime_error(argv[0] + " failed");
}

// --peers: each conversion that makes new bytes against the tool that does the same work, in the
// same run, best of `repeats` (alternating): into ckpt-h5+zstd against zstd's CLI compressing the
// same tensor bytes (zstd -1 -T0, output fsynced), out of it against zstd -d -T0; Boost text and
// xml against Boost's own archive writer and reader of the same StateDict (the files are
// byte-identical); and an uncompressed conversion against a durable copy (copy + fsync).
int bench_peers(std::uint64_t size_mib, const std::filesystem::path& dir, int repeats) {
  mallopt(M_MMAP_THRESHOLD, 1 << 20);  // as checkpoint-convert sets it (see there)
  fmt::print("building a {} MiB synthetic state dict...\n", size_mib);
  const StateDict state = synthetic_state(size_mib);
  const auto raw = dir / "raw.bin", raw_zst = dir / "raw.zst", raw_back = dir / "raw.back", st = dir / "in.safetensors",
             h5z = dir / "z.ckpt.h5", out_st = dir / "out.safetensors", copy = dir / "copy.bin",
             out_pt = dir / "out.pt";
  raw_write(state, raw);
  save(state, st);
  WriteOptions zstd_options;
  zstd_options.compression = Compression::zstd;
  ConvertOptions to_zstd;
  to_zstd.write.compression = Compression::zstd;
  const std::string threads = fmt::format("-T{}", std::thread::hardware_concurrency());
  struct Row {
    std::string work, peer;
    double ckpt, other;
    std::string target;
  };
  std::vector<Row> rows;
  // Each run starts with nothing left to write back (sync): the files written before would
  // otherwise slow whichever fsync comes next. Boost's own archives, 10-20x slower, run once.
  auto pair = [&](std::string work, std::string peer, const std::function<void()>& mine,
                  const std::function<void()>& theirs, std::string target, int peer_repeats = 0) {
    double a = 1e300, b = 1e300;
    for (int r = 0; r < std::max(repeats, 1); ++r) {
      if (r < (peer_repeats ? peer_repeats : std::max(repeats, 1))) {
        ::sync();
        b = std::min(b, seconds_of(theirs));
      }
      ::sync();
      a = std::min(a, seconds_of(mine));
    }
    rows.push_back({std::move(work), std::move(peer), a, b, std::move(target)});
    fmt::print("  {:<46} {:>8.3f} s   {:<44} {:>8.3f} s   {:>5.2f}x\n", rows.back().work, a, rows.back().peer, b, a / b);
    std::fflush(stdout);
  };
  fmt::print("\n  {:<46} {:>10}   {:<44} {:>10}   {:>6}\n", "ckpt", "", "peer, same work", "", "ratio");
  pair("safetensors -> ckpt-h5+zstd (level 1)", "zstd -1 -T0 of the same bytes, fsync",
       [&] { (void)convert(st, h5z, to_zstd); },
       [&] {
         run_program({"zstd", "-q", "-f", "-1", threads, raw.string(), "-o", raw_zst.string()});
         fsync_path(raw_zst);
       },
       "<= 1.2x");
  pair("ckpt-h5+zstd -> safetensors", "zstd -d -T0 to a file, fsync",
       [&] { (void)convert(h5z, out_st); },
       [&] {
         run_program({"zstd", "-q", "-f", "-d", threads, raw_zst.string(), "-o", raw_back.string()});
         fsync_path(raw_back);
       },
       "<= 1.2x");
  for (const bool xml : {false, true}) {
    const char* kind = xml ? "xml" : "text";
    const auto mine_path = dir / fmt::format("ckpt.boost.{}", xml ? "xml" : "txt");
    const auto theirs_path = dir / fmt::format("boost.boost.{}", xml ? "xml" : "txt");
    pair(fmt::format("save as Boost {} (ckpt::save)", kind), fmt::format("boost::archive::{}_oarchive, fsync", kind),
         [&] { save(state, mine_path); },
         [&] {
           {
             std::ofstream out(theirs_path, std::ios::binary | std::ios::trunc);
             if (xml) {
               boost::archive::xml_oarchive archive(out);
               archive << boost::serialization::make_nvp("state_dict", state);
             } else {
               boost::archive::text_oarchive archive(out);
               archive << boost::serialization::make_nvp("state_dict", state);
             }
           }
           fsync_path(theirs_path);
         },
         ">= 2x faster", 1);
    ReadOptions copies;
    copies.zero_copy = false;
    pair(fmt::format("load Boost {} (ckpt::load)", kind), fmt::format("boost::archive::{}_iarchive", kind),
         [&] { (void)load(mine_path, copies); },
         [&] {
           std::ifstream in(mine_path, std::ios::binary);
           StateDict loaded;
           if (xml) {
             boost::archive::xml_iarchive archive(in, boost::archive::no_xml_tag_checking);
             archive >> boost::serialization::make_nvp("state_dict", loaded);
           } else {
             boost::archive::text_iarchive archive(in);
             archive >> boost::serialization::make_nvp("state_dict", loaded);
           }
         },
         ">= 2x faster", 1);
  }
  pair("safetensors -> pytorch (uncompressed)", "copy of the input + fsync",
       [&] { (void)convert(st, out_pt); },
       [&] {
         std::filesystem::copy_file(st, copy, std::filesystem::copy_options::overwrite_existing);
         fsync_path(copy);
       },
       "<= 1.5x");
  fmt::print("\n| work | ckpt | peer (same work, same run) | peer | ratio | target |\n|---|---|---|---|---|---|\n");
  for (const auto& r : rows)
    fmt::print("| {} | {:.2f} s | {} | {:.2f} s | {:.2f}x | {} |\n", r.work, r.ckpt, r.peer, r.other, r.ckpt / r.other,
               r.target);
  return 0;
}

// Runs a program (no shell), waits, and returns its peak resident set size in KiB (getrusage of
// that child alone, through wait4); throws unless it exits 0.
std::uint64_t run_measured(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  struct rusage usage {};
  ::wait4(pid, &status, 0, &usage);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw std::runtime_error(argv[0] + " failed");
  return static_cast<std::uint64_t>(usage.ru_maxrss);
}

// --dcp DIR: consolidating a PyTorch distributed checkpoint (made by tests/peers/make_dcp.py
// --big-mib) into one safetensors file with checkpoint-convert, against a durable copy of its
// .distcp files (copy_file + fsync each) in the same run, alternating, best of `repeats`, each after
// a sync; and the converter's peak resident memory against the checkpoint's largest tensor.
int bench_dcp(const std::filesystem::path& dcp, const std::filesystem::path& dir, int repeats) {
  const auto convert_tool = std::filesystem::read_symlink("/proc/self/exe").parent_path() / "checkpoint-convert";
  const auto reader = open(dcp);
  std::uint64_t largest = 0, total = 0;
  for (const auto& t : reader->tensors()) {
    largest = std::max(largest, t.nbytes());
    total += t.nbytes();
  }
  std::vector<std::filesystem::path> files;
  std::uint64_t file_bytes = 0;
  for (const auto& e : std::filesystem::directory_iterator(dcp))
    if (e.path().extension() == ".distcp") {
      files.push_back(e.path());
      file_bytes += e.file_size();
    }
  std::sort(files.begin(), files.end());
  fmt::print("{}: {} tensors, {:.1f} MiB, largest {:.1f} MiB; {} .distcp files, {:.1f} MiB\n", dcp.string(),
             reader->tensors().size(), static_cast<double>(total) / (1 << 20), static_cast<double>(largest) / (1 << 20),
             files.size(), static_cast<double>(file_bytes) / (1 << 20));
  const auto out = dir / "consolidated.safetensors", copies = dir / "copy";
  std::filesystem::create_directories(copies);
  double copy = 1e300, convert = 1e300;
  std::uint64_t peak_kib = 0;
  for (int r = 0; r < std::max(repeats, 1); ++r) {
    ::sync();
    copy = std::min(copy, seconds_of([&] {
      for (const auto& f : files) {
        const auto to = copies / f.filename();
        std::filesystem::copy_file(f, to, std::filesystem::copy_options::overwrite_existing);
        fsync_path(to);
      }
    }));
    std::filesystem::remove_all(copies);
    std::filesystem::create_directories(copies);
    ::sync();
    std::uint64_t peak = 0;
    convert = std::min(convert, seconds_of([&] {
      peak = run_measured({convert_tool.string(), dcp.string(), out.string(), "--force", "--quiet"});
    }));
    peak_kib = std::max(peak_kib, peak);
    std::filesystem::remove(out);
    fmt::print("  run {}: copy {:.3f} s, convert {:.3f} s, peak RSS {:.1f} MiB\n", r + 1, copy, convert,
               static_cast<double>(peak) / 1024);
    std::fflush(stdout);
  }
  const double peak_mib = static_cast<double>(peak_kib) / 1024, largest_mib = static_cast<double>(largest) / (1 << 20);
  fmt::print("\n| work | seconds | durable copy of the .distcp files | ratio | target |\n|---|---|---|---|---|\n");
  fmt::print("| DCP -> safetensors (checkpoint-convert) | {:.2f} s | {:.2f} s | {:.2f}x | <= 1.5x |\n", convert, copy,
             convert / copy);
  fmt::print("\n| peak RSS of checkpoint-convert | largest tensor | peak - largest | target |\n|---|---|---|---|\n");
  fmt::print("| {:.1f} MiB | {:.1f} MiB | {:.1f} MiB | < largest + 64 MiB |\n", peak_mib, largest_mib, peak_mib - largest_mib);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t size_mib = 1024;
  std::size_t many = 10000;
  int repeats = 3;
  std::string dir_arg;
  CLI::App app{"Times ckpt's readers and writers against a raw write/read of the same bytes in the same run,\n"
               "and reports zero-copy, listing and memory figures. Needs about 4x --size-mib of free disk.",
               "ckpt-bench"};
  app.add_option("--size-mib", size_mib, "Size of the synthetic state dict in MiB")->capture_default_str();
  app.add_option("--many", many, "Tensors in the listing benchmark file")->capture_default_str();
  app.add_option("--repeats", repeats, "Runs of each read measurement (the best counts)")->capture_default_str();
  app.add_option("--dir", dir_arg, "Directory for the files (default: a new one under the temp dir)");
  std::string pt;
  app.add_option("--pt", pt, "Only time ckpt's reader and conversion on this .pt file (see tools/bench-pytorch.py)");
  bool matrix = false;
  std::string from, to;
  int matrix_repeats = 1;
  app.add_flag("--matrix", matrix, "Only time conversions between every pair of formats (against a copy of the input)");
  app.add_option("--from", from, "With --matrix: only these input formats (comma-separated labels, e.g. flax,numpy)");
  app.add_option("--to", to, "With --matrix: only these output formats (as --from)");
  app.add_option("--matrix-repeats", matrix_repeats,
                 "With --matrix: alternate copy and conversion this many times, the best of each counts")
      ->capture_default_str();
  bool peers = false;
  app.add_flag("--peers", peers,
               "Only time the conversions that make new bytes against the tool doing the same work: zstd's CLI, "
               "Boost's own archives, a durable copy (best of --repeats)");
  std::string dcp;
  app.add_option("--dcp", dcp,
                 "Only time checkpoint-convert consolidating this PyTorch distributed checkpoint's directory into "
                 "safetensors against a durable copy of its .distcp files, with its peak memory (make one with "
                 "/usr/bin/python3 tests/peers/make_dcp.py OUT --big-mib 1024: OUT/big)");
  CLI11_PARSE(app, argc, argv);

  const std::filesystem::path dir =
      dir_arg.empty() ? std::filesystem::temp_directory_path() / fmt::format("ckpt-bench-{}", ::getpid()) : std::filesystem::path(dir_arg);
  std::filesystem::create_directories(dir);
  // The single-purpose modes; the files go with their temporary directory.
  auto run_mode = [&](const std::function<int()>& mode) {
    int rc = 1;
    try {
      rc = mode();
    } catch (const std::exception& e) {
      fmt::print(stderr, "ckpt-bench: error: {}\n", e.what());
    }
    if (dir_arg.empty()) std::filesystem::remove_all(dir);
    return rc;
  };
  if (matrix) return run_mode([&] { return bench_matrix(size_mib, dir, from, to, matrix_repeats); });
  if (peers) return run_mode([&] { return bench_peers(size_mib, dir, repeats); });
  if (!pt.empty()) return run_mode([&] { return bench_pytorch(pt, dir, repeats); });
  if (!dcp.empty()) return run_mode([&] { return bench_dcp(dcp, dir, repeats); });
  try {
    fmt::print("building a {} MiB synthetic state dict...\n", size_mib);
    const StateDict state = synthetic_state(size_mib);
    const std::uint64_t bytes = total_bytes(state);
    fmt::print("{} tensors, {:.1f} MiB, in {}\n\n", state.size(), static_cast<double>(bytes) / (1 << 20), dir.string());

    const auto raw = dir / "raw.bin", h5 = dir / "model.ckpt.h5", h5z = dir / "model.zstd.ckpt.h5",
               st = dir / "model.safetensors";
    fmt::print("save, each with fsync and rename (best of {}):\n", repeats);
    const double raw_w = best_of(repeats, [&] { raw_write(state, raw); });
    print_row("raw write (baseline)", raw_w, raw_w, bytes);
    const std::uint64_t rss_before = status_kib("VmRSS:");
    reset_peak_rss();
    const double h5_w = seconds_of([&] { save(state, h5); });
    const std::uint64_t peak_extra_kib = status_kib("VmHWM:") - rss_before;
    const double h5_w_best = std::min(h5_w, best_of(repeats - 1, [&] { save(state, h5); }));
    print_row("ckpt-h5 save, uncompressed", h5_w_best, raw_w, bytes);
    WriteOptions zstd;
    zstd.compression = Compression::zstd;
    const std::uint64_t rss_before_z = status_kib("VmRSS:");
    reset_peak_rss();
    const double h5z_w = seconds_of([&] { save(state, h5z, zstd); });
    const std::uint64_t peak_extra_z_kib = status_kib("VmHWM:") - rss_before_z;
    print_row(fmt::format("ckpt-h5 save, zstd level {}", zstd.zstd_level), h5z_w, raw_w, bytes,
              fmt::format("file {:.1f}% of raw", 100.0 * static_cast<double>(std::filesystem::file_size(h5z)) /
                                                     static_cast<double>(bytes)));
    const double st_w = best_of(repeats, [&] { save(state, st); });
    print_row("safetensors save", st_w, raw_w, bytes);

    // Fresh memory is expensive on some VMs (the first touch of a page is a hypervisor fault), and
    // glibc returns large blocks to the kernel on free, so whichever contender runs first would pay
    // for it. From here on freed memory stays in the process, warmed once, for every contender alike.
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, INT_MAX);
    {
      std::vector<Tensor> warm;
      for (int i = 0; i < 3; ++i) warm.push_back(Tensor::zeros(DType::uint8, {static_cast<std::int64_t>(bytes)}));
    }
    fmt::print("\nfull load, every tensor materialized in memory (best of {}, page cache warm):\n", repeats);
    const double raw_r = best_of(repeats, [&] { raw_read(state, raw); });
    print_row("raw read (baseline)", raw_r, raw_r, bytes);
    ReadOptions copy;
    copy.zero_copy = false;
    ReadOptions copy_noverify = copy;
    copy_noverify.verify_checksums = false;
    ReadOptions views_noverify;
    views_noverify.verify_checksums = false;
    // Isolation (the default) parses the file's HDF5 structure in a helper process first.
    auto direct = [](ReadOptions o) {
      o.isolate_hdf5 = false;
      return o;
    };
    print_row("ckpt-h5 load, copies, checksums verified", best_of(repeats, [&] { (void)load(h5, copy); }), raw_r, bytes);
    print_row("  same, without HDF5 isolation", best_of(repeats, [&] { (void)load(h5, direct(copy)); }), raw_r, bytes);
    print_row("ckpt-h5 load, copies, no verification", best_of(repeats, [&] { (void)load(h5, copy_noverify); }),
              raw_r, bytes);
    print_row("  same, without HDF5 isolation", best_of(repeats, [&] { (void)load(h5, direct(copy_noverify)); }),
              raw_r, bytes);
    ReadOptions shared_views;
    shared_views.writable = false;
    print_row("ckpt-h5 load, writable views (default), verified", best_of(repeats, [&] { (void)load(h5); }), raw_r, bytes);
    print_row("ckpt-h5 load, read-only views, verified", best_of(repeats, [&] { (void)load(h5, shared_views); }), raw_r,
              bytes);
    print_row("ckpt-h5 load, zero-copy views, every page touched",
              best_of(repeats, [&] { (void)touch(load(h5, views_noverify)); }), raw_r, bytes);
    print_row("ckpt-h5 zstd load, verified", best_of(repeats, [&] { (void)load(h5z); }), raw_r, bytes);
    print_row("safetensors load, copies, no verification", best_of(repeats, [&] { (void)load(st, copy_noverify); }),
              raw_r, bytes);

    fmt::print("\nzero-copy open + read of one tensor (layers.0.mlp.fc1.weight, 16 MiB), best of {}:\n", repeats);
    auto one = [&](const ReadOptions& o) {
      return best_of(repeats, [&] { (void)open(h5, o)->read("layers.0.mlp.fc1.weight"); }) * 1000;
    };
    fmt::print("  {:<44} {:>9.3f} ms\n", "checksum verified", one(ReadOptions{}));
    fmt::print("  {:<44} {:>9.3f} ms\n", "no verification", one(views_noverify));
    fmt::print("  {:<44} {:>9.3f} ms\n", "checksum verified, without HDF5 isolation", one(direct(ReadOptions{})));
    fmt::print("  {:<44} {:>9.3f} ms\n", "no verification, without HDF5 isolation", one(direct(views_noverify)));

    fmt::print("\nlisting a file of {} tensors (best of {}):\n", many, repeats);
    StateDict small;
    for (std::size_t i = 0; i < many; ++i)
      small.add_parameter(fmt::format("blocks.{}.layer.{}.weight", i / 10, i % 10), weights({16}, i));
    const auto many_path = dir / "many.ckpt.h5";
    const double many_w = seconds_of([&] { save(small, many_path); });
    std::size_t listed = 0;
    const double list = best_of(repeats, [&] { listed = open(many_path)->tensors().size(); });
    const double list_direct = best_of(repeats, [&] { listed = open(many_path, direct(ReadOptions{}))->tensors().size(); });
    fmt::print("  {:<44} {:>9.3f} ms ({} tensors; writing took {:.2f} s)\n", "open + list names, roles, dtypes, shapes",
               list * 1000, listed, many_w);
    fmt::print("  {:<44} {:>9.3f} ms\n", "  same, without HDF5 isolation", list_direct * 1000);
    const auto many_st = dir / "many.safetensors";
    const double many_st_w = seconds_of([&] { save(small, many_st); });
    const double list_st = best_of(repeats, [&] { listed = open(many_st)->tensors().size(); });
    fmt::print("  {:<44} {:>9.3f} ms ({} tensors; writing took {:.2f} s)\n", "safetensors: open + list", list_st * 1000,
               listed, many_st_w);

    fmt::print("\npeak memory beyond the state while saving (VmHWM - VmRSS before):\n");
    fmt::print("  {:<44} {:>9.1f} MiB\n", "ckpt-h5 save, uncompressed", static_cast<double>(peak_extra_kib) / 1024);
    fmt::print("  {:<44} {:>9.1f} MiB\n", "ckpt-h5 save, zstd", static_cast<double>(peak_extra_z_kib) / 1024);
  } catch (const std::exception& e) {
    fmt::print(stderr, "ckpt-bench: error: {}\n", e.what());
    if (dir_arg.empty()) std::filesystem::remove_all(dir);
    return 1;
  }
  if (dir_arg.empty()) std::filesystem::remove_all(dir);
  return 0;
}

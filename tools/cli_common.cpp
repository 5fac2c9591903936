#include "cli_common.h"

#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>

#include <fmt/format.h>

#include "ckpt/error.h"

namespace ckpt::cli {

std::uint64_t parse_size(const std::string& text) {
  std::uint64_t value = 0;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, value);
  if (ec != std::errc() || ptr == text.data())
    throw Error(ErrorCode::invalid_argument, "", fmt::format("size '{}': expected a number with an optional unit", text));
  const std::string unit(ptr, end);
  static const std::map<std::string, std::uint64_t> units = {
      {"", 1},          {"B", 1},           {"KB", 1000},       {"MB", 1000000},     {"GB", 1000000000},
      {"TB", 1000000000000}, {"KiB", 1ull << 10}, {"MiB", 1ull << 20}, {"GiB", 1ull << 30}, {"TiB", 1ull << 40}};
  const auto it = units.find(unit);
  if (it == units.end() || value == 0)
    throw Error(ErrorCode::invalid_argument, "",
                fmt::format("size '{}': expected a positive number and one of B, KB, MB, GB, TB, KiB, MiB, GiB, TiB",
                            text));
  std::uint64_t bytes = 0;
  if (__builtin_mul_overflow(value, it->second, &bytes)) throw Error(ErrorCode::invalid_argument, "", fmt::format("size '{}' is too large", text));
  return bytes;
}

std::string human_bytes(std::uint64_t bytes) {
  if (bytes < 1024) return fmt::format("{} B", bytes);
  const char* units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  double value = static_cast<double>(bytes) / 1024;
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  return fmt::format("{:.1f} {}", value, units[unit]);
}

std::string one_line(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    // Keep well-formed UTF-8 sequences; escape control characters and stray bytes.
    std::size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    bool valid = n > 0 && i + n <= text.size();
    for (std::size_t k = 1; valid && k < n; ++k) valid = (static_cast<unsigned char>(text[i + k]) >> 6) == 0x2;
    if (!valid || c < 0x20 || c == 0x7f) {
      out += fmt::format("\\x{:02x}", c);
      continue;
    }
    out.append(text.substr(i, n));
    i += n - 1;
  }
  return out;
}

void print_error(const char* tool, const std::string& message) noexcept {
  // stdio, not fmt: fmt::print throws when stderr cannot be written (2>/dev/full, ulimit -f), and
  // this runs in exception handlers, where a throw would end the program.
  std::fprintf(stderr, "%s: error: %s\n", tool, message.c_str());
  std::fflush(stderr);
}

int run_guarded(const char* tool, const std::function<int()>& body) {
  auto finish = [] {
    try {
      finish_progress();
    } catch (...) {
    }
  };
  int rc = kError;
  try {
    rc = body();
  } catch (const Error& e) {
    finish();
    print_error(tool, one_line(e.what()));
    return e.code() == ErrorCode::integrity ? kIntegrity : e.code() == ErrorCode::invalid_argument ? kUsage : kError;
  } catch (const std::filesystem::filesystem_error& e) {
    // std::filesystem's own wording ("filesystem error: ... [path]") as FILE: what.
    finish();
    print_error(tool, one_line(e.path1().string()) + ": " + one_line(e.code().message()));
    return kError;
  } catch (const std::exception& e) {
    finish();
    print_error(tool, one_line(e.what()));
    return kError;
  }
  // What was printed must have been written (a full disk, >/dev/full): otherwise exit 0 would
  // claim output that is not there.
  if (std::fflush(stdout) != 0 || std::ferror(stdout)) {
    print_error(tool, std::string("cannot write the output: ") + std::strerror(errno));
    return kError;
  }
  return rc;
}

namespace {
bool g_progress_drawn = false;
}

ProgressFn terminal_progress(const std::string& label) {
  if (!isatty(STDERR_FILENO)) return {};
  auto last = std::make_shared<std::chrono::steady_clock::time_point>();
  return [label, last](std::uint64_t done, std::uint64_t total) {
    const auto now = std::chrono::steady_clock::now();
    if (done != total && now - *last < std::chrono::milliseconds(100)) return;
    *last = now;
    const int percent = total ? static_cast<int>(100.0 * static_cast<double>(done) / static_cast<double>(total)) : 100;
    fmt::print(stderr, "\r{} {:3d}% {} / {}\x1b[K", label, percent, human_bytes(done), human_bytes(total));
    std::fflush(stderr);
    g_progress_drawn = true;
  };
}

void finish_progress() {
  if (!g_progress_drawn) return;
  fmt::print(stderr, "\r\x1b[K");
  std::fflush(stderr);
  g_progress_drawn = false;
}

}  // namespace ckpt::cli

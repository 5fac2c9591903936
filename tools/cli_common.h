// Shared by the command-line tools: exit codes, error reporting, sizes, progress.
#pragma once

#include <cstdint>
#include <exception>
#include <functional>
#include <string>
#include <string_view>

#include "ckpt/options.h"

namespace ckpt::cli {

// Documented exit codes (README.md, --help).
enum Exit : int {
  kOk = 0,
  kError = 1,      // the input could not be read or the output written
  kUsage = 2,      // bad command line
  kIntegrity = 3,  // a checksum did not match (corrupt data)
  kDiffer = 4,     // checkpoint-inspect --diff: the checkpoints differ
};

// "5GB" (10^9), "500MiB" (2^20), "1024" (bytes): a size for --max-shard-size. Throws
// invalid_argument naming the text.
std::uint64_t parse_size(const std::string& text);

// "1.5 MiB", "512 B".
std::string human_bytes(std::uint64_t bytes);

// `text` with control characters and bytes that are not UTF-8 escaped as \xNN: always one line.
std::string one_line(std::string_view text);

// Runs `body`, turning exceptions into one line "TOOL: error: ..." on stderr and an exit code.
// "TOOL: error: MESSAGE" on stderr; never throws (stderr may be unwritable).
void print_error(const char* tool, const std::string& message) noexcept;
int run_guarded(const char* tool, const std::function<int()>& body);

// A progress callback that draws "label  42% 1.2 GiB / 2.9 GiB" on stderr when stderr is a
// terminal (and nothing otherwise). Clear the line with finish_progress().
ProgressFn terminal_progress(const std::string& label);
void finish_progress();

}  // namespace ckpt::cli

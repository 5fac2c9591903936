#include "util/isolate.h"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <exception>

#include "util/bytes.h"

namespace ckpt::detail {
namespace {

void write_all(int fd, const std::string& data) {
  std::size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

}  // namespace

void run_isolated(const std::string& file, const std::function<void()>& fn) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) fail(ErrorCode::io, file, "cannot create a pipe: {}", std::strerror(errno));
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    fail(ErrorCode::io, file, "cannot fork to check the file: {}", std::strerror(errno));
  }
  if (pid == 0) {
    // Child: report "<code digit><file>\n<message>" for an Error, nothing on success; _exit skips
    // atexit handlers and stdio buffers that belong to the parent.
    ::close(fds[0]);
    std::string report;
    try {
      fn();
    } catch (const Error& e) {
      report = std::to_string(static_cast<int>(e.code())) + e.file() + '\n' + e.message();
    } catch (const std::exception& e) {
      report = std::to_string(static_cast<int>(ErrorCode::format)) + file + '\n' + e.what();
    } catch (...) {
      report = std::to_string(static_cast<int>(ErrorCode::format)) + file + "\nunknown failure";
    }
    write_all(fds[1], report);
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string report;
  char buffer[4096];
  while (true) {
    const ssize_t n = ::read(fds[0], buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    report.append(buffer, static_cast<std::size_t>(n));
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFSIGNALED(status))
    fail(ErrorCode::format, file, "HDF5 crashed ({}) reading the file's structure: the file is corrupt or malformed",
         sigabbrev_np(WTERMSIG(status)) ? std::string("SIG") + sigabbrev_np(WTERMSIG(status))
                                        : "signal " + std::to_string(WTERMSIG(status)));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail(ErrorCode::format, file, "the check of the file's structure failed (exit status {})", WEXITSTATUS(status));
  if (report.empty()) return;
  const auto newline = report.find('\n');
  const int code = report[0] - '0';
  throw Error(static_cast<ErrorCode>(code), report.substr(1, newline - 1), report.substr(newline + 1));
}

}  // namespace ckpt::detail

#include "util/isolate.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>

#include "util/bytes.h"

extern char** environ;

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

std::string read_all(int fd) {
  std::string out;
  char buffer[4096];
  while (true) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return out;
    out.append(buffer, static_cast<std::size_t>(n));
  }
}

// The helper program: $CKPT_H5_CHECK, else beside this library (build tree) or in ../libexec
// (installed). Empty when not found, or when CKPT_H5_CHECK is "-" (use fork).
std::string find_helper() {
  if (const char* env = std::getenv("CKPT_H5_CHECK"); env != nullptr && *env != '\0')
    return std::string(env) == "-" ? std::string() : std::string(env);
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&find_helper), &info) == 0 || info.dli_fname == nullptr) return {};
  const std::filesystem::path library_dir = std::filesystem::path(info.dli_fname).parent_path();
  for (const auto& candidate : {library_dir / "ckpt-h5-check", library_dir / ".." / "libexec" / "ckpt-h5-check"})
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
  return {};
}

// Turns the child's exit status and report into nothing (success) or a thrown Error.
void conclude(const std::string& file, int status, const std::string& report) {
  if (WIFSIGNALED(status)) {
    const char* abbrev = sigabbrev_np(WTERMSIG(status));
    fail(ErrorCode::format, file, "HDF5 crashed ({}) reading the file's structure: the file is corrupt or malformed",
         abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(WTERMSIG(status)));
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    fail(ErrorCode::format, file, "the check of the file's structure failed (exit status {})", WEXITSTATUS(status));
  if (report.empty()) return;
  const auto newline = report.find('\n');
  const int code = report[0] - '0';
  if (newline == std::string::npos || code < 0 || code > static_cast<int>(ErrorCode::invalid_argument))
    fail(ErrorCode::format, file, "the check of the file's structure reported nonsense");
  throw Error(static_cast<ErrorCode>(code), report.substr(1, newline - 1), report.substr(newline + 1));
}

int wait_for(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

}  // namespace

std::string isolation_report(const std::exception_ptr& error, const std::string& file) {
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    return std::to_string(static_cast<int>(e.code())) + e.file() + '\n' + e.message();
  } catch (const std::exception& e) {
    return std::to_string(static_cast<int>(ErrorCode::format)) + file + '\n' + e.what();
  } catch (...) {
    return std::to_string(static_cast<int>(ErrorCode::format)) + file + "\nunknown failure";
  }
}

void run_isolated(const std::string& file, const std::vector<std::string>& helper_args,
                  const std::function<void()>& fn) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) fail(ErrorCode::io, file, "cannot create a pipe: {}", std::strerror(errno));
  static const std::string helper = find_helper();
  if (!helper.empty()) {
    // posix_spawn does not copy this process's page tables, unlike fork().
    std::vector<std::string> args{helper};
    args.insert(args.end(), helper_args.begin(), helper_args.end());
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, helper.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    if (rc != 0) {
      ::close(fds[0]);
      fail(ErrorCode::io, file, "cannot start {}: {}", helper, std::strerror(rc));
    }
    const std::string report = read_all(fds[0]);
    ::close(fds[0]);
    conclude(file, wait_for(pid), report);
    return;
  }
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    fail(ErrorCode::io, file, "cannot fork to check the file: {}", std::strerror(errno));
  }
  if (pid == 0) {
    // _exit skips atexit handlers and stdio buffers that belong to the parent.
    ::close(fds[0]);
    std::string report;
    try {
      fn();
    } catch (...) {
      report = isolation_report(std::current_exception(), file);
    }
    write_all(fds[1], report);
    ::_exit(0);
  }
  ::close(fds[1]);
  const std::string report = read_all(fds[0]);
  ::close(fds[0]);
  conclude(file, wait_for(pid), report);
}

}  // namespace ckpt::detail

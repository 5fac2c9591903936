#include "util/isolate.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <optional>

#include "util/bytes.h"
#include "util/mapped_file.h"  // UniqueFd

extern char** environ;

// The sanitizers' runtime, when linked in (weak: null otherwise).
extern "C" __attribute__((weak)) void __sanitizer_set_death_callback(void (*callback)(void));

namespace ckpt::detail {
namespace {

// Requests: u32 count, then per argument u32 length and bytes. Answers: one byte, kPassed or
// kChanged. A child that dies answers nothing.
constexpr char kPassed = 'k', kChanged = 'c';

[[noreturn]] void report_changed(const std::string& file) {
  fail(ErrorCode::io, file, "the file on disk is no longer the one that was opened (replaced or moved since): reopen it");
}

// Runs `fn` as a check and says how it went (any error but FileChanged is the in-process run's to
// report).
char answer_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const FileChanged&) {
    return kChanged;
  } catch (...) {
  }
  return kPassed;
}
bool send_all(int fd, const void* data, std::size_t size) {
  const auto* p = static_cast<const char*>(data);
  while (size > 0) {
    const ssize_t n = ::send(fd, p, size, MSG_NOSIGNAL);  // no SIGPIPE if the helper died
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

bool receive_all(int fd, void* data, std::size_t size) {
  auto* p = static_cast<char*>(data);
  while (size > 0) {
    const ssize_t n = ::read(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    p += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

// Sends the first byte of `data` with `attached` (a descriptor, SCM_RIGHTS), the rest as send_all.
bool send_with_fd(int fd, const void* data, std::size_t size, int attached) {
  if (attached < 0 || size == 0) return send_all(fd, data, size);
  char control[CMSG_SPACE(sizeof(int))] = {};
  iovec iov{const_cast<void*>(data), 1};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
  cmsg->cmsg_level = SOL_SOCKET;
  cmsg->cmsg_type = SCM_RIGHTS;
  cmsg->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(cmsg), &attached, sizeof(int));
  ssize_t n;
  do n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n != 1) return false;
  return send_all(fd, static_cast<const char*>(data) + 1, size - 1);
}

// Receives the first byte into `data` with the descriptor that came with it (or -1), then the rest.
bool receive_with_fd(int fd, void* data, std::size_t size, int& attached) {
  attached = -1;
  if (size == 0) return true;
  char control[CMSG_SPACE(sizeof(int))] = {};
  iovec iov{data, 1};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n != 1) return false;
  for (cmsghdr* cmsg = CMSG_FIRSTHDR(&msg); cmsg != nullptr; cmsg = CMSG_NXTHDR(&msg, cmsg))
    if (cmsg->cmsg_level == SOL_SOCKET && cmsg->cmsg_type == SCM_RIGHTS && cmsg->cmsg_len == CMSG_LEN(sizeof(int)))
      std::memcpy(&attached, CMSG_DATA(cmsg), sizeof(int));
  return receive_all(fd, static_cast<char*>(data) + 1, size - 1);
}

[[noreturn]] void report_crash(const std::string& file, int status) {
  if (WIFSIGNALED(status)) {
    const char* abbrev = sigabbrev_np(WTERMSIG(status));
    fail(ErrorCode::format, file, "HDF5 crashed ({}) reading the file's structure: the file is corrupt or malformed",
         abbrev ? std::string("SIG") + abbrev : "signal " + std::to_string(WTERMSIG(status)));
  }
  fail(ErrorCode::format, file, "the check of the file's structure ended early (exit status {})",
       WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

// The child's exit status; nullopt when it cannot be known (SIGCHLD ignored: the kernel reaped it).
std::optional<int> wait_for(pid_t pid) {
  int status = 0;
  while (true) {
    if (::waitpid(pid, &status, 0) == pid) return status;
    if (errno != EINTR) return std::nullopt;
  }
}

[[noreturn]] void report_death(const std::string& file, std::optional<int> status) {
  if (status) report_crash(file, *status);
  fail(ErrorCode::format, file, "the check of the file's structure died before answering: the file is corrupt or malformed");
}

// The helper program: $CKPT_H5_CHECK, else beside this library (build tree), in ../libexec
// (installed) or in the install's libexec directory. Empty when not found, or when CKPT_H5_CHECK
// is "-" (use fork).
std::string find_helper() {
  if (const char* env = std::getenv("CKPT_H5_CHECK"); env != nullptr && *env != '\0')
    return std::string(env) == "-" ? std::string() : std::string(env);
  Dl_info info{};
  if (dladdr(reinterpret_cast<void*>(&find_helper), &info) == 0 || info.dli_fname == nullptr) return {};
  const std::filesystem::path library_dir = std::filesystem::path(info.dli_fname).parent_path();
  // A program linking libckpt.a finds the helper where the install put it.
  for (const auto& candidate : {library_dir / "ckpt-h5-check", library_dir / ".." / "libexec" / "ckpt-h5-check",
                                std::filesystem::path(CKPT_INSTALL_LIBEXECDIR) / "ckpt-h5-check"})
    if (::access(candidate.c_str(), X_OK) == 0) return candidate.string();
  return {};
}

// The running helper, shared by every reader of this process.
class Helper {
 public:
  explicit Helper(std::string program) : program_(std::move(program)) {}

  void check(const std::string& file, const std::vector<std::string>& request, int fd) {
    std::lock_guard lock(mutex_);
    if (pid_ > 0 && owner_ != ::getpid()) forget();  // we are a fork()ed copy: start our own
    if (pid_ <= 0) start(file);
    std::string message;
    auto put32 = [&](std::uint32_t v) { message.append(reinterpret_cast<const char*>(&v), 4); };
    put32(static_cast<std::uint32_t>(request.size()));
    for (const auto& arg : request) {
      put32(static_cast<std::uint32_t>(arg.size()));
      message += arg;
    }
    char answer = 0;
    if (send_with_fd(socket_, message.data(), message.size(), fd) && receive_all(socket_, &answer, 1)) {
      if (answer == kChanged) report_changed(file);
      return;
    }
    // The helper died on this file.
    const auto status = wait_for(pid_);
    forget();
    report_death(file, status);
  }

 private:
  void start(const std::string& file) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
      fail(ErrorCode::io, file, "cannot create a socket pair: {}", std::strerror(errno));
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, sv[1], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&actions, sv[1], STDOUT_FILENO);
    char* argv[] = {program_.data(), nullptr};
    pid_t pid = 0;
    const int rc = posix_spawn(&pid, program_.c_str(), &actions, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(sv[1]);
    if (rc != 0) {
      ::close(sv[0]);
      fail(ErrorCode::io, file, "cannot start {}: {}", program_, std::strerror(rc));
    }
    pid_ = pid;
    owner_ = ::getpid();
    socket_ = sv[0];
  }

  void forget() {
    if (owner_ == ::getpid() && socket_ >= 0) ::close(socket_);
    socket_ = -1;
    pid_ = -1;
  }

  std::mutex mutex_;
  std::string program_;
  pid_t pid_ = -1;
  pid_t owner_ = -1;
  int socket_ = -1;
};

// The child answers through a pipe once its check is over: a check passes only on that answer,
// never on an exit status that may be unknowable (SIGCHLD ignored) or mistaken.
void run_forked(const std::string& file, const std::function<void()>& fn) {
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0) fail(ErrorCode::io, file, "cannot create a pipe: {}", std::strerror(errno));
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(pipe_fds[0]);
    ::close(pipe_fds[1]);
    fail(ErrorCode::io, file, "cannot fork to check the file: {}", std::strerror(errno));
  }
  if (pid == 0) {
    ::close(pipe_fds[0]);
    // Under a sanitizer (a fuzzer's build), a crash here is the child's own, reported to the parent
    // as a corrupt file: not a crash of the program that forked (libFuzzer's death callback would
    // record the input as a finding of its own).
    if (__sanitizer_set_death_callback != nullptr) __sanitizer_set_death_callback(nullptr);
    const char answer = answer_of(fn);
    (void)!::write(pipe_fds[1], &answer, 1);
    ::_exit(0);  // skips atexit handlers and stdio buffers that belong to the parent
  }
  ::close(pipe_fds[1]);
  char answer = 0;
  const bool answered = receive_all(pipe_fds[0], &answer, 1);
  ::close(pipe_fds[0]);
  const auto status = wait_for(pid);
  if (!answered) report_death(file, status);
  if (answer == kChanged) report_changed(file);
}

}  // namespace

void run_isolated(const std::string& file, const std::vector<std::string>& request, int fd,
                  const std::function<void()>& fn) {
  static const std::string program = find_helper();
  if (program.empty() || request.empty()) return run_forked(file, fn);
  static Helper* helper = new Helper(program);  // never destroyed: may be used during exit
  helper->check(file, request, fd);
}

void serve_isolated_requests(int in, int out,
                             const std::function<void(const std::vector<std::string>&, int fd)>& handle) {
  while (true) {
    std::uint32_t count = 0;
    int received = -1;
    if (!receive_with_fd(in, &count, 4, received)) {
      if (received >= 0) ::close(received);
      return;
    }
    const UniqueFd attached(received);
    std::vector<std::string> request(count);
    for (auto& arg : request) {
      std::uint32_t size = 0;
      if (!receive_all(in, &size, 4)) return;
      arg.resize(size);
      if (!receive_all(in, arg.data(), size)) return;
    }
    const char answer = answer_of([&] { handle(request, attached.get()); });
    if (::write(out, &answer, 1) != 1) return;
  }
}

}  // namespace ckpt::detail

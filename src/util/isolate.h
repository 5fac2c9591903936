// Running a parser of untrusted input in another process, so that a crash in a C library (HDF5
// 1.10 can crash on malformed object headers) becomes an error instead of killing the program.
#pragma once

#include <exception>
#include <functional>
#include <string>
#include <vector>

namespace ckpt::detail {

// Runs the check in a child process: the helper program `ckpt-h5-check` with `helper_args` when
// it is found (next to the library, or $CKPT_H5_CHECK), which costs the same whatever the size of
// this process; otherwise (or with CKPT_H5_CHECK=-) a fork() running `fn`. A ckpt::Error raised in the child is thrown here
// (same code and message); death by a signal becomes a format error naming `file`. The child's
// work is not kept: callers redo it in-process once the child has shown it is safe.
void run_isolated(const std::string& file, const std::vector<std::string>& helper_args,
                  const std::function<void()>& fn);

// What a child writes to report an Error (and nothing on success); the helper program uses it.
std::string isolation_report(const std::exception_ptr& error, const std::string& file);

}  // namespace ckpt::detail

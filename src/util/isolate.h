// Running a parser of untrusted input in a child process, so that a crash in a C library (HDF5
// 1.10 can crash on malformed object headers) becomes an error instead of killing the program.
#pragma once

#include <functional>
#include <string>

namespace ckpt::detail {

// Runs `fn` in a forked child. A ckpt::Error thrown there is thrown here (same code and message);
// death by a signal becomes a format error naming `file`. The child's work is not kept: callers
// redo it in-process once the child has shown it is safe (the libraries involved are deterministic).
void run_isolated(const std::string& file, const std::function<void()>& fn);

}  // namespace ckpt::detail

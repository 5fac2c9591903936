// Running a parser of untrusted input in another process first, so that a crash in a C library
// (HDF5 1.10 can crash on malformed object headers) becomes an error instead of killing the
// program. The child only has to survive: errors it meets are met again, and reported, by the
// in-process code that runs the same calls afterwards.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace ckpt::detail {

// Thrown by a check that cannot look at the file it was asked about, because the file at that
// path is no longer the one the reader has open (replaced, moved, deleted): the check then fails
// with an io error, and never passes a file it did not see.
struct FileChanged {};

// Runs a check in a child process. Preferred: the helper program `ckpt-h5-check` (found beside
// the library, in ../libexec, or at $CKPT_H5_CHECK), started once per process and kept: each
// check is then a request over a socket, and costs the same whatever the size of this process.
// Otherwise (or with CKPT_H5_CHECK=-) a fork() running `fn`. Death of the child by a signal
// becomes a format error naming `file`; the helper is restarted for the next check.
// An empty `request` (what is checked is in this process's memory, where the helper cannot see it)
// always forks. `fd` (if not -1) goes to the helper with the request (SCM_RIGHTS): the file the
// caller has open, checked as it is whatever has become of its path since.
void run_isolated(const std::string& file, const std::vector<std::string>& request, int fd,
                  const std::function<void()>& fn);

// The helper's side: reads requests from `in` (a socket), calls `handle` for each with the
// descriptor that came with it, or -1 (the descriptor is closed afterwards); its exceptions are
// swallowed, as the in-process run reports them, except FileChanged, which is answered as such;
// answers on `out`; returns at end of input.
void serve_isolated_requests(int in, int out,
                             const std::function<void(const std::vector<std::string>&, int fd)>& handle);

}  // namespace ckpt::detail

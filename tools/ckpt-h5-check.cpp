// ckpt-h5-check: the child process in which the ckpt-h5 reader lets HDF5 parse an untrusted file
// first (HDF5 1.10 can crash on malformed metadata). Not meant to be run by people: it prints
// nothing on success and an error report for the library on failure; it crashes where HDF5 does.
#include <cstdio>
#include <exception>

#include "ckpt_h5/check.h"
#include "util/isolate.h"

int main(int argc, char** argv) {
  std::filesystem::path path;
  ckpt::detail::ckpt_h5::CheckStage stage;
  ckpt::ReadOptions options;
  if (!ckpt::detail::ckpt_h5::parse_check_arguments(argc, argv, path, stage, options)) {
    std::fprintf(stderr, "usage: ckpt-h5-check FILE listing|datasets MAX_HEADER_BYTES MAX_RANK\n");
    return 2;
  }
  try {
    ckpt::detail::ckpt_h5::check_structure(path, stage, options);
  } catch (...) {
    const std::string report = ckpt::detail::isolation_report(std::current_exception(), path.string());
    std::fwrite(report.data(), 1, report.size(), stdout);
  }
  return 0;
}

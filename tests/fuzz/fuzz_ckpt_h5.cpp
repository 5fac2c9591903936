// libFuzzer target: the ckpt-h5 reader on a checkpoint held in memory (HDF5's core driver), with
// HDF5's parsing checked in a fork() first as the reader always does, then the index, the chunk
// index and the zstd chunk path (see fuzz_input.h).
#include "fuzz_input.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  return fuzz_format(data, size, "ckpt-h5");
}

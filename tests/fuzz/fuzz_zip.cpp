// libFuzzer target: the zip reader alone (end records, zip64, central directory, local headers,
// stored and deflated entries with their CRC-32).
#include <cstddef>
#include <cstdint>
#include <span>

#include "ckpt/error.h"
#include "zip/zip.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    ckpt::detail::zip::ZipLimits limits;
    limits.max_inflated_bytes = 1u << 24;  // keeps each run small; the limit itself is what is tested
    const ckpt::detail::zip::Archive archive(std::as_bytes(std::span(data, size)), "fuzz", limits);
    for (const auto& entry : archive.entries()) {
      try {
        (void)archive.data_offset(entry);
        (void)archive.read(entry);
      } catch (const ckpt::Error&) {
      }
    }
  } catch (const ckpt::Error&) {
  }
  return 0;
}

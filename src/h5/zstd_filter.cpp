#include "h5/zstd_filter.h"

#include <zstd.h>

#include <cstdlib>

namespace ckpt::detail::h5 {
namespace {

// HDF5 filter callback: returns the new data size, 0 on failure. Buffers are malloc'd (the plugin
// does not link HDF5, so H5allocate_memory is not available to it).
std::size_t zstd_filter(unsigned flags, std::size_t cd_nelmts, const unsigned cd_values[], std::size_t nbytes,
                        std::size_t* buf_size, void** buf) {
  if (flags & H5Z_FLAG_REVERSE) {
    const unsigned long long size = ZSTD_getFrameContentSize(*buf, nbytes);
    if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > kMaxChunkBytes) return 0;
    void* out = std::malloc(size == 0 ? 1 : size);
    if (out == nullptr) return 0;
    const std::size_t n = ZSTD_decompress(out, size, *buf, nbytes);
    if (ZSTD_isError(n) || n != size) {
      std::free(out);
      return 0;
    }
    std::free(*buf);
    *buf = out;
    *buf_size = size == 0 ? 1 : size;
    return n;
  }
  const int level = cd_nelmts > 0 ? static_cast<int>(cd_values[0]) : ZSTD_CLEVEL_DEFAULT;
  const std::size_t bound = ZSTD_compressBound(nbytes);
  void* out = std::malloc(bound);
  if (out == nullptr) return 0;
  const std::size_t n = ZSTD_compress(out, bound, *buf, nbytes, level);
  if (ZSTD_isError(n)) {
    std::free(out);
    return 0;
  }
  std::free(*buf);
  *buf = out;
  *buf_size = bound;
  return n;
}

}  // namespace

const H5Z_class2_t kZstdFilterClass = {
    H5Z_CLASS_T_VERS,
    static_cast<H5Z_filter_t>(kZstdFilterId),
    1,  // encoder present
    1,  // decoder present
    "zstd (ckpt)",
    nullptr,  // can_apply
    nullptr,  // set_local
    zstd_filter,
};

}  // namespace ckpt::detail::h5

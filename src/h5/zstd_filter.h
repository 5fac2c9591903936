// The zstd HDF5 filter (registered id 32015, cd_values[0] = compression level; one zstd frame per
// chunk, with its content size in the frame header). Compiled into the library, where it is
// registered in-process, and into the standalone plugin that h5dump and h5py load.
#pragma once

#include <hdf5.h>

#include "core/chunks.h"
#include "h5/h5.h"

namespace ckpt::detail::h5 {

extern const H5Z_class2_t kZstdFilterClass;

}  // namespace ckpt::detail::h5

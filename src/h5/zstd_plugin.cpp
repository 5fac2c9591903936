// Entry points of the standalone HDF5 filter plugin (libckpt_h5zstd.so). Point HDF5_PLUGIN_PATH
// at the directory holding it and h5dump, h5py or any HDF5 program reads ckpt-h5 zstd datasets.
#include <H5PLextern.h>

#include "h5/zstd_filter.h"

extern "C" {
H5PL_type_t H5PLget_plugin_type(void) { return H5PL_TYPE_FILTER; }
const void* H5PLget_plugin_info(void) { return &ckpt::detail::h5::kZstdFilterClass; }
}

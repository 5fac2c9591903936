// ckpt: neural-network checkpoints with parameters and buffers kept apart.
//
//   #include <ckpt/ckpt.h>
//   ckpt::StateDict state = ckpt::load("model.safetensors");      // any supported format
//   ckpt::save(state, "model.ckpt.h5", {.compression = ckpt::Compression::zstd});
//   auto reader = ckpt::open("model.ckpt.h5");                     // lazy: lists without reading
//   ckpt::Tensor w = reader->read("fc.weight");                     // zero-copy when uncompressed
//
// ckpt-h5 file layout (version 1.0; the full specification is format-spec/ckpt-h5.md):
//
//   /                       attrs: ckpt_format = "ckpt-h5", ckpt_version = uint32 {1, 0}
//   /index                  JSON: every tensor's name, section, dtype, shape, checksum; metadata
//   /parameters/<key>       datasets of parameters (key percent-encoded: '%' '/' NUL)
//   /buffers/<key>          datasets of buffers
//   /sections/<name>/<key>  datasets of further sections (optimizer state, ...)
#pragma once

#include "ckpt/boost_archive.h"
#include "ckpt/ckpt_h5.h"
#include "ckpt/convert.h"
#include "ckpt/dcp.h"
#include "ckpt/diff.h"
#include "ckpt/dtype.h"
#include "ckpt/error.h"
#include "ckpt/flax.h"
#include "ckpt/io.h"
#include "ckpt/layout.h"
#include "ckpt/numpy.h"
#include "ckpt/options.h"
#include "ckpt/pytorch.h"
#include "ckpt/roles.h"
#include "ckpt/safetensors.h"
#include "ckpt/state_dict.h"
#include "ckpt/stats.h"
#include "ckpt/tensor.h"
#include "ckpt/version.h"

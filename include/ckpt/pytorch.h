// PyTorch checkpoints (torch.save, zip format of PyTorch >= 1.6), read without Python or
// libtorch. The pickle inside is parsed by a restricted reader that runs nothing; only the
// allow-listed constructors of tensors and state_dicts are interpreted, and a pickle that names
// any other callable (os.system, eval, ...) is refused as unsafe.
//
// So far: state_dicts (a dict or OrderedDict of tensors, scalars kept as metadata), typed
// storages, parameters, shared storages, views with offsets and strides (non-contiguous and
// stride-0 tensors are materialized contiguous), big-endian files. Roles are inferred as for any
// file without them (ckpt/roles.h). Not yet: whole training checkpoints (nested dicts), the legacy
// pre-1.6 format, whole pickled modules, TorchScript, and writing .pt.
#pragma once

#include <filesystem>
#include <memory>

#include "ckpt/io.h"

namespace ckpt {

std::unique_ptr<Reader> open_pytorch(const std::filesystem::path& path, const ReadOptions& options = {});

}  // namespace ckpt

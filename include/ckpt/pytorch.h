// PyTorch checkpoints (torch.save: the zip format of PyTorch >= 1.6 and the legacy format before
// it), read without Python or libtorch. The pickle inside is parsed by a restricted reader that runs nothing; classes it
// instantiates stay inert objects, and a pickle that calls anything but the allow-listed tensor
// and container constructors (os.system, eval, ...) is refused as unsafe, naming the callable.
//
// Read: state_dicts; whole training checkpoints ({"model", "optimizer", "epoch"}: see
// ReadOptions::model_key and format-spec/conventions.md §4); whole pickled modules
// (torch.save(model)), with exact roles from each module's _parameters and _buffers; typed
// storages, parameters, shared storages, views with offsets and strides (non-contiguous and
// stride-0 tensors are materialized contiguous), big-endian files. State_dicts get inferred roles
// (ckpt/roles.h). Not yet: TorchScript, UntypedStorage (_rebuild_tensor_v3, PyTorch >= 2), legacy
// storage views, and writing .pt.
#pragma once

#include <filesystem>
#include <memory>

#include "ckpt/io.h"

namespace ckpt {

std::unique_ptr<Reader> open_pytorch(const std::filesystem::path& path, const ReadOptions& options = {});

// A torch.save zip of the model's tensors (parameters and buffers, in order) that
// torch.load(weights_only=True) loads as an OrderedDict; roles and metadata ride along in an
// entry torch ignores (format-spec/conventions.md §4). Refuses, before creating anything, dtypes
// without a torch typed storage (float8, uint16/32/64) and extra sections (not yet written).
void write_pytorch(Source& source, const std::filesystem::path& path, const WriteOptions& options = {});

}  // namespace ckpt

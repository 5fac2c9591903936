// PyTorch checkpoints (torch.save: the zip format of PyTorch >= 1.6 and the legacy format before
// it), read without Python or libtorch. The pickle inside is parsed by a restricted reader that runs nothing; classes it
// instantiates stay inert objects, and a pickle that calls anything but the allow-listed tensor
// and container constructors (os.system, eval, ...) is refused as unsafe, naming the callable.
//
// Read: state_dicts; whole training checkpoints ({"model", "optimizer", "epoch"}: see
// ReadOptions::model_key and format-spec/conventions.md §4); whole pickled modules
// (torch.save(model)), with exact roles from each module's _parameters and _buffers; TorchScript
// archives (torch.jit.save), with exact roles from the classes' __parameters__ and __buffers__;
// typed storages and UntypedStorage (_rebuild_tensor_v3), parameters, shared storages, views with
// offsets and strides (non-contiguous and stride-0 tensors are materialized contiguous), legacy
// storage views, big-endian files. State_dicts get inferred roles (ckpt/roles.h).
#pragma once

#include "ckpt/api.h"

#include <filesystem>
#include <memory>

#include "ckpt/io.h"

CKPT_API_BEGIN

namespace ckpt {

// The metadata key under which the reader records a checkpoint's shape, so that a writer can give
// it back: {"model_key": "model", "int_keys": [["optimizer", "state"]]} (the dotted key of the
// model's dict, "" for the top level; the key paths of dicts whose keys were integers).
inline constexpr std::string_view kTorchCheckpointKey = "ckpt.torch";
// The metadata key under which the reader records, for a pickled module or a TorchScript file,
// each module's class by module path: {"": "torchvision.models.resnet.ResNet",
// "conv1": "torch.nn.modules.conv.Conv2d", ...} (TorchScript's "__torch__." prefix and
// "___torch_mangle_N" parts removed). The layout mapping uses it to tell an Embedding from a
// Linear without bias, and a ConvTranspose from a Conv, where a state_dict alone cannot.
inline constexpr std::string_view kTorchModulesKey = "ckpt.modules";

std::unique_ptr<Reader> open_pytorch(const std::filesystem::path& path, const ReadOptions& options = {});

// A torch.save zip. A bare state_dict becomes an OrderedDict of the model's tensors (parameters
// and buffers, in order) that torch.load(weights_only=True) loads; a checkpoint (metadata under
// kTorchCheckpointKey, or extra sections) becomes the dict torch had, with the model's
// OrderedDict, the extra sections' tensors (an optimizer's state) and the metadata in place.
// Roles and metadata also ride in an entry torch ignores (format-spec/conventions.md §4).
// Refuses, before creating anything, dtypes torch 1.13 cannot load (float8, uint16/32/64).
void write_pytorch(Source& source, const std::filesystem::path& path, const WriteOptions& options = {});

}  // namespace ckpt

CKPT_API_END

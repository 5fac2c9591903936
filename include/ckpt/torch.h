// libtorch integration (CMake target ckpt::torch, library libckpt_torch; built when CMake finds
// libtorch with find_package(Torch), Debian 12: libtorch-dev 1.13.1).
//
// Load any checkpoint ckpt reads into a torch::nn::Module, parameters and buffers matched by name
// and role; save a module, or a module and its optimizer, into any format ckpt writes; move
// tensors between ckpt::Tensor and torch::Tensor.
//
// The namespace is ckpt::libtorch rather than ckpt::torch: with `using namespace ckpt;` in a user's
// file, a namespace ckpt::torch would make every `torch::nn::...` ambiguous.
//
// Only the CPU is exercised by the tests (Debian's libtorch has no CUDA); a module on another device
// is loaded through copies to its device, and saved through copies to the CPU.
#pragma once

#include "ckpt/api.h"

#include <cstddef>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>
#include <torch/types.h>

#include "ckpt/io.h"
#include "ckpt/state_dict.h"

CKPT_API_BEGIN
namespace ckpt::libtorch {

// ---- dtypes ------------------------------------------------------------------------------------
// The torch dtype of a ckpt dtype: float64/32/16, bfloat16, int64/32/16/8, uint8, bool,
// complex64/128. nullopt for float8_e4m3fn, float8_e5m2, uint16/32/64, which libtorch 1.13 lacks.
std::optional<::torch::Dtype> to_torch_dtype(DType dtype) noexcept;
// The inverse; nullopt for torch dtypes ckpt lacks (quantized, complex32, ...).
std::optional<DType> from_torch_dtype(::torch::Dtype dtype) noexcept;

// ---- tensors -----------------------------------------------------------------------------------
// ckpt::Tensor -> torch::Tensor (CPU, contiguous). Zero-copy when `tensor` is writable (memory it
// owns, or a private copy-on-write mapping of its file: ReadOptions::writable, the default): the
// torch tensor then holds a copy of the ckpt::Tensor, and with it the mapping, alive. In-place
// writes through the torch tensor change that memory, so every ckpt::Tensor sharing it sees them,
// and never the file (a mapped tensor's pages are copied as they are first written). A read-only
// view (ReadOptions::writable = false) is copied, since torch has no read-only tensors and a write
// would fault; so is everything when `copy` is true. Throws invalid_argument for a dtype libtorch
// lacks.
::torch::Tensor to_torch(const Tensor& tensor, bool copy = false);

// torch::Tensor -> ckpt::Tensor. A dense, contiguous CPU tensor is shared without a copy (the
// ckpt::Tensor keeps its storage alive; writes through either are seen by both); anything else
// (another device, sparse or mkldnn layout, strides, conjugate or negative views) is first made a
// dense contiguous CPU tensor. The result does not track gradients. A shared tensor points into
// the torch storage: resizing the torch tensor in place (resize_, set_ to a larger size) can
// reallocate that storage and leave the ckpt::Tensor dangling. Throws invalid_argument for a
// quantized tensor or a dtype ckpt lacks.
Tensor from_torch(const ::torch::Tensor& tensor);

// ---- loading a module --------------------------------------------------------------------------
struct LoadOptions {
  // Every problem (below) is an error, thrown before any tensor of the module changes. false:
  // what matches is loaded, the rest is returned in the report.
  bool strict = true;
  // A file tensor of another dtype than the module's is converted (torch's copy_ rules) instead of
  // being a problem.
  bool allow_dtype_conversion = false;
  // Adopt the file's tensors instead of copying into the module's: each parameter and buffer is
  // re-pointed (Tensor::set_data, so optimizers holding it keep working) at the tensor ckpt read,
  // a copy-on-write mapping of the file where its bytes lie as they are (no copy at all), else the
  // memory ckpt read it into. Training then writes private copies of the pages it touches; the file
  // never changes. Tensors needing a dtype conversion are copied as usual, and so are tensors under
  // 256 KiB (ReadOptions::writable). The other way does not hold: pages the module has not written
  // yet still read the file, so the file must stay as it is while the module lives. Rewritten in
  // place (Python's torch.save(path), cp, open(path, "wb")) the module silently takes its new
  // values; truncated, reading the module's tensors raises SIGBUS. ckpt's own writers replace a
  // file by renaming a new one over it, which is safe.
  bool zero_copy = false;
  // The module's names are looked up in the file as `prefix + name` ("model." or "module." when a
  // wrapper's keys were saved).
  std::string prefix;
  // Module buffers that the file does not hold by design: Python's `persistent=False` buffers,
  // which libtorch does not know of. Not reported missing; loaded if the file has them.
  std::vector<std::string> non_persistent;
  // How the file is read (model_key for nested .pt checkpoints, verify_checksums, ...).
  // zero_copy and writable are set by this struct's zero_copy.
  ReadOptions read;
};

// One reason why a file and a module do not match.
struct Problem {
  enum class Kind {
    missing,     // in the module, not in the file
    unexpected,  // in the file's model, not in the module
    shape,       // shapes differ
    dtype,       // dtypes differ (and LoadOptions::allow_dtype_conversion is false)
    role,        // a parameter in one is a buffer in the other
  };
  Kind kind;
  std::string name;    // the module's name (for `unexpected`, the file's without the prefix)
  std::string detail;  // "file float64, module float32"; "file [3, 4], module [4, 3]"
};
// "missing", "unexpected", "shape", "dtype", "role".
const char* problem_kind_name(Problem::Kind kind) noexcept;

struct LoadReport {
  // Every mismatch, in the module's order (then the file's unexpected tensors in its order).
  // Empty after a strict load, which throws instead.
  std::vector<Problem> problems;
  // Tensors of the module given the file's values.
  std::size_t loaded = 0;
  // What was decided without being a problem, one line each: roles that differ in a file whose
  // roles are only inferred (a plain state_dict), a Flax file mapped to torch's layout, what the
  // reader noted.
  std::vector<std::string> notes;
  bool ok() const noexcept { return problems.empty(); }
  // "2 problems (1 missing, 1 shape): missing 'fc.weight' (module parameter float32 [2, 8]);
  // shape 'conv1.weight' (file [8, 3, 5, 5], module [8, 3, 3, 3])", on one line.
  std::string summary() const;
};

// Load the model state of a checkpoint in any format ckpt reads into `module`: its
// named_parameters() and named_buffers(), recursively, matched by name to the file's model
// (parameters and buffers; a nested .pt's model dict, see ReadOptions::model_key). A Flax file is
// first mapped to torch's layout, with the module's shapes as the template (ckpt/layout.h).
//
// Every problem is found from the listing before a byte is read; then every tensor to load is read
// (and its checksum verified) before the first one is given to the module: a failed load, strict
// or not, from bad data or a mismatch, leaves the module as it was. Tensors whose bytes lie in the
// file as they are cost nothing to hold meanwhile (mappings); compressed or byte-swapped ones
// (ckpt-h5 zstd, deflated .npz, big-endian files) are decoded into memory first, so the whole model
// is then briefly held twice.
//
// Roles are compared when the file records them exactly (ckpt-h5, ckpt's conventions, pickled
// modules, TorchScript, Flax collections); a plain state_dict's roles are inferred from names, so
// there a difference is a note and the module's role wins. A non-persistent buffer in the file that
// the module lacks is skipped.
//
// Strict: throws ckpt::Error (invalid_argument, naming the file) listing every problem on one line.
// Values are copied into the module's tensors under torch::NoGradGuard (or adopted: zero_copy).
LoadReport load(::torch::nn::Module& module, const std::filesystem::path& path,
                const LoadOptions& options = {});
// An open Reader (a file in memory, ...): as above, but read as `reader` was opened, so zero_copy
// adopts the file's memory only if it was opened with ReadOptions::writable (the default).
LoadReport load(::torch::nn::Module& module, Reader& reader, const LoadOptions& options = {});
// From memory, or through a Source such as map_layout's (roles compared as its role_source() allows;
// a Source that is a Reader goes to the overload above).
LoadReport load(::torch::nn::Module& module, const StateDict& state, const LoadOptions& options = {});
LoadReport load(::torch::nn::Module& module, Source& source, const LoadOptions& options = {});

// ---- saving a module ---------------------------------------------------------------------------
struct SaveOptions {
  // Module buffers saved as non-persistent (kept out of a .pt's state_dict and of safetensors, as
  // Python's `persistent=False`): libtorch does not record persistence.
  std::vector<std::string> non_persistent;
  WriteOptions write;
  // save_training: the key (section) of the optimizer's state.
  std::string optimizer_key = "optimizer";
};

// The module's parameters and buffers as Python's state_dict() orders them (per module: its
// parameters, its buffers, then its submodules), each sharing the module's memory (from_torch):
// copy what must outlive later training steps.
StateDict state_dict(const ::torch::nn::Module& module, const SaveOptions& options = {});
// Save them into any format ckpt writes (by options.write.format or the extension). A .pt holds
// the state_dict that Python's `module.load_state_dict(torch.load(path), strict=True)` accepts.
void save(const ::torch::nn::Module& module, const std::filesystem::path& path,
          const SaveOptions& options = {});

// ---- training state: model, optimizer, epoch ---------------------------------------------------
// Python's training checkpoint `torch.save({"model": model.state_dict(), "optimizer":
// optimizer.state_dict(), "epoch": 3, ...}, path)`, and the same written from C++.
//
// Optimizers: torch::optim::SGD, Adam and AdamW. Param groups are matched by order, and
// parameters within a group by order (Python numbers them 0, 1, ... across the groups in order);
// each state tensor must have its parameter's shape. Group options are taken from the file (lr,
// betas, eps, weight_decay, amsgrad; lr, momentum, dampening, weight_decay, nesterov). Refused:
// other optimizer classes, group counts or sizes that differ, state of the other optimizer kind,
// `maximize: true` (libtorch lacks it), and a step that is not a whole number. Python's
// implementation choices (foreach, capturable, differentiable, fused) are ignored with a note.
// Adam and AdamW files have the same shape (torch 1.13's AdamW groups merely lack 'differentiable'
// and 'fused', as older torch's Adam groups do), so the file cannot say which it was: load a
// Python AdamW checkpoint into a torch::optim::AdamW. Loaded into an Adam, it loads without an
// error, its decoupled weight decay becomes Adam's L2 term, and training diverges from Python's
// from the first step.
struct TrainingOptions {
  LoadOptions load;
  // The section holding the optimizer state (the .pt's top-level key).
  std::string optimizer_key = "optimizer";
};
// Restores module and optimizer together: both are checked (and every tensor read) before either
// changes. Returns the module's report; the metadata (epoch, ...) is in `metadata` if given,
// without ckpt's own records. A Flax file holds no optimizer state torch can use, and is not
// mapped here (load() maps it).
LoadReport load_training(::torch::nn::Module& module, ::torch::optim::Optimizer& optimizer,
                         const std::filesystem::path& path, const TrainingOptions& options = {},
                         Metadata* metadata = nullptr);
// The optimizer's state as Python's optimizer.state_dict() has it, added to `state` (section
// `optimizer_key`: "state.<i>.exp_avg" ...; metadata `optimizer_key`.param_groups), with the
// record (ckpt/pytorch.h kTorchCheckpointKey) that makes a .pt writer give Python the dict
// {"model": ..., optimizer_key: ..., plus `state`'s other metadata}.
void add_optimizer(StateDict& state, const ::torch::optim::Optimizer& optimizer,
                   const std::string& optimizer_key = "optimizer");
// save(module) plus add_optimizer (under options.optimizer_key) plus `metadata` (such as
// {"epoch": 3}) in one file.
void save_training(const ::torch::nn::Module& module, const ::torch::optim::Optimizer& optimizer,
                   const std::filesystem::path& path, const Metadata& metadata = Metadata::object(),
                   const SaveOptions& options = {});

}  // namespace ckpt::libtorch
CKPT_API_END

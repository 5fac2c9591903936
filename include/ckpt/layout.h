// PyTorch <-> Flax layout mapping (format-spec/conventions.md §7): renames and transposes the
// model's tensors between torch's module layout and Flax linen's, as a Source adapter that
// transforms each tensor when it is read.
//
// Decided per module (the name up to its last dot) from roles, leaf names and ranks, never by
// substrings of names:
//   BatchNorm (buffers running_mean and running_var): weight -> scale, bias -> bias,
//     running_mean / running_var -> mean / var in collection batch_stats, num_batches_tracked
//     dropped (its value kept in metadata, restored on the way back);
//   other rank-1 weight (LayerNorm, GroupNorm): weight -> scale;
//   rank-2 weight: Linear, weight [out, in] -> kernel [in, out]; Embedding -> embedding. A 2-D
//     weight without a bias could be either: it is an Embedding when declared
//     (LayoutOptions::embedding), when the file names the module's class (metadata
//     kTorchModulesKey, from pickled modules and TorchScript), when the template holds
//     `<module>.embedding` of its shape, or when the module's name says so (emb, embed,
//     embedding(s), wte, wpe, embed_*, *_embeddings, ...); every decision made from the name or
//     by default (Linear) is reported in LayoutReport::notes;
//   rank 3-5 weight: ConvNd, weight [out, in/groups, *k] -> kernel [*k, in/groups, out];
//     ConvTransposeNd when its class is named, declared or evident from its bias, weight [in, out, *k] -> kernel
//     [*k, in, out] spatially flipped (flax's ConvTranspose does not flip, torch's does).
// Anything else (a bias alone, custom buffers, LSTM weights ...) cannot be placed: it is listed
// by name, and mapping fails unless LayoutOptions::keep_unmapped. What torch -> flax decided is
// recorded in metadata, so flax -> torch gives every tensor back bit-identical.
#pragma once

#include "ckpt/api.h"

#include <memory>
#include <string>
#include <vector>

#include "ckpt/io.h"

CKPT_API_BEGIN

namespace ckpt {

enum class Layout { flax, torch };

struct LayoutOptions {
  Layout target = Layout::flax;
  bool keep_unmapped = false;     // carry tensors that cannot be placed over unchanged
  // ECMAScript regexes matched against whole module names (torch; "emb" names the module "emb",
  // not "emb_proj"): modules that are Embeddings, and ConvTranspose layers.
  std::string embedding;
  std::string conv_transpose;
  // The target layout's tensors (names and shapes), e.g. listed from a Flax checkpoint of the same
  // model: a 2-D weight without a bias is an Embedding if this holds `<module>.embedding` of its
  // shape, a Linear if it holds `<module>.kernel` of the transposed shape. May be empty.
  std::vector<TensorInfo> template_tensors;
};

struct LayoutReport {
  std::vector<std::string> dropped;   // num_batches_tracked (values kept in metadata)
  std::vector<std::string> unmapped;  // could not be placed (kept unchanged if allowed)
  // One line per kind of decision made without proof (from names, or by default), naming the
  // tensors: what a careful user should check.
  std::vector<std::string> notes;
};

// A Source over `inner` in the target layout. Throws invalid_argument (naming `file`) listing
// the tensors that cannot be placed, unless options.keep_unmapped. `inner` must outlive it.
std::unique_ptr<Source> map_layout(Source& inner, const LayoutOptions& options, const std::string& file,
                                   LayoutReport* report = nullptr);

// The metadata key recording what a torch -> flax mapping decided.
inline constexpr std::string_view kLayoutKey = "ckpt.layout";

}  // namespace ckpt

CKPT_API_END

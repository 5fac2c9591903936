// PyTorch <-> Flax layout mapping: a plan per tensor (rename, role, permutation with optional
// spatial flips), decided per module from roles, leaf names and ranks (ckpt/layout.h), applied
// when each tensor is read.
#include "ckpt/layout.h"

#include <algorithm>
#include <cstring>
#include <optional>
#include <map>
#include <regex>

#include "ckpt/pytorch.h"
#include "util/bytes.h"

namespace ckpt {
namespace {

using detail::fail;
using detail::quote;

// How one output tensor is made.
struct Op {
  std::optional<std::size_t> inner;  // the source tensor; none: `constant`
  std::vector<std::size_t> perm;     // output axis k is input axis perm[k]; empty: as is
  std::vector<bool> flip;            // input axes read backwards (per input axis; empty: none)
  Tensor constant;
};

Tensor apply(const Tensor& in, const Op& op, const TensorInfo& out_info) {
  if (op.perm.empty() && op.flip.empty()) return in;
  Tensor out = Tensor::uninitialized(out_info.dtype, out_info.shape);
  const std::size_t rank = in.shape().size(), itemsize = dtype_size(in.dtype());
  std::vector<std::uint64_t> in_stride(rank, 1);
  for (std::size_t k = rank; k-- > 1;) in_stride[k - 1] = in_stride[k] * static_cast<std::uint64_t>(in.shape()[k]);
  // Output index -> input offset, walking the output in row-major order.
  std::vector<std::int64_t> index(rank, 0);
  const std::uint64_t numel = shape_numel(out_info.shape);
  const std::byte* src = in.bytes().data();
  std::byte* dst = out.mutable_bytes().data();
  for (std::uint64_t n = 0; n < numel; ++n) {
    std::uint64_t at = 0;
    for (std::size_t k = 0; k < rank; ++k) {
      const std::size_t axis = op.perm[k];
      std::int64_t i = index[k];
      if (!op.flip.empty() && op.flip[axis]) i = in.shape()[axis] - 1 - i;
      at += static_cast<std::uint64_t>(i) * in_stride[axis];
    }
    std::memcpy(dst + n * itemsize, src + at * itemsize, itemsize);
    for (std::size_t k = rank; k-- > 0;) {
      if (++index[k] < out_info.shape[k]) break;
      index[k] = 0;
    }
  }
  return out;
}

class LayoutSource final : public Source {
 public:
  LayoutSource(Source& inner, std::vector<TensorInfo> infos, std::vector<Op> ops, Metadata metadata)
      : inner_(inner), infos_(std::move(infos)), ops_(std::move(ops)), metadata_(std::move(metadata)) {}
  const std::vector<TensorInfo>& tensors() const override { return infos_; }
  const Metadata& metadata() const override { return metadata_; }
  RoleSource role_source() const noexcept override { return inner_.role_source(); }
  Tensor read(std::size_t index) override {
    const Op& op = ops_.at(index);
    if (!op.inner) return op.constant;
    return apply(inner_.read(*op.inner), op, infos_[index]);
  }

 private:
  Source& inner_;
  std::vector<TensorInfo> infos_;
  std::vector<Op> ops_;
  Metadata metadata_;
};

std::pair<std::string, std::string> split_last(const std::string& name) {
  const auto dot = name.rfind('.');
  if (dot == std::string::npos) return {"", name};
  return {name.substr(0, dot), name.substr(dot + 1)};
}
std::string join(const std::string& module, const std::string& leaf) { return module.empty() ? leaf : module + "." + leaf; }

// Whole-name match, as --buffers: "emb" names the module "emb", not "emb_proj".
bool matches(const std::string& pattern, const std::string& module) {
  if (pattern.empty()) return false;
  try {
    return std::regex_match(module, std::regex(pattern));
  } catch (const std::regex_error& e) {
    throw Error(ErrorCode::invalid_argument, "", fmt::format("layout regex {}: {}", quote(pattern), e.what()));
  }
}

// Evidence from a module's own name (its last dot-separated component) that it is an Embedding:
// the names embedding layers get in torchvision, huggingface transformers and Meta's models
// (emb, embed, embedding(s), wte, wpe, embed_tokens, tok_embeddings, word_embeddings, ...).
bool named_like_embedding(const std::string& module) {
  const auto dot = module.rfind('.');
  const std::string_view last = dot == std::string::npos ? std::string_view(module) : std::string_view(module).substr(dot + 1);
  for (std::string_view exact : {"emb", "embed", "embedding", "embeddings", "wte", "wpe"})
    if (last == exact) return true;
  if (last.starts_with("embed_") || last.starts_with("embedding_")) return true;  // embed_tokens, embed_positions
  for (std::string_view end : {"_emb", "_embed", "_embedding", "_embeddings"})  // tok_embeddings, word_embeddings
    if (last.ends_with(end)) return true;
  return false;
}

// Up to `max` quoted names, then "and N more".
std::string name_list(const std::vector<std::string>& names, std::size_t max = 8) {
  std::string list;
  for (std::size_t k = 0; k < names.size() && k < max; ++k) list += (k ? ", " : "") + quote(names[k]);
  if (names.size() > max) list += fmt::format(" and {} more", names.size() - max);
  return list;
}

// The module's class as the .pt reader recorded it (pickled modules and TorchScript), or "".
std::string module_class(const Metadata& metadata, const std::string& module) {
  if (!metadata.is_object()) return {};
  const auto classes = metadata.find(std::string(kTorchModulesKey));
  if (classes == metadata.end() || !classes->is_object()) return {};
  const auto cls = classes->find(module);
  return cls != classes->end() && cls->is_string() ? cls->get<std::string>() : std::string();
}
bool class_is(const std::string& cls, std::initializer_list<std::string_view> names) {
  const auto dot = cls.rfind('.');
  const std::string_view last = dot == std::string::npos ? std::string_view(cls) : std::string_view(cls).substr(dot + 1);
  return std::find(names.begin(), names.end(), last) != names.end() && cls.starts_with("torch.nn.");
}

bool listed(const Metadata& list, const std::string& module) {
  if (!list.is_array()) return false;
  for (const auto& m : list)
    if (m.is_string() && m.get<std::string>() == module) return true;
  return false;
}

// Permutations for a weight of rank r (2 + n spatial axes). torch -> flax: [O, I, *k] -> [*k, I, O]
// for Conv and [I, O, *k] -> [*k, I, O] for ConvTranspose (the leading pair swapped or not).
std::vector<std::size_t> to_flax_perm(std::size_t r, bool transpose) {
  std::vector<std::size_t> p;
  for (std::size_t k = 2; k < r; ++k) p.push_back(k);
  p.push_back(transpose ? 0 : 1);
  p.push_back(transpose ? 1 : 0);
  return p;
}
// flax -> torch: [*k, I, O] -> [O, I, *k] (Conv) or [I, O, *k] (ConvTranspose).
std::vector<std::size_t> to_torch_perm(std::size_t r, bool transpose) {
  std::vector<std::size_t> p = {transpose ? r - 2 : r - 1, transpose ? r - 1 : r - 2};
  for (std::size_t k = 0; k + 2 < r; ++k) p.push_back(k);
  return p;
}

Shape permuted(const Shape& shape, const std::vector<std::size_t>& perm) {
  Shape out;
  for (auto axis : perm) out.push_back(shape[axis]);
  return out;
}

struct Builder {
  Source& inner;
  const LayoutOptions& options;
  const std::string& file;
  std::vector<TensorInfo> infos;
  std::vector<Op> ops;
  std::vector<bool> placed;
  LayoutReport report;

  void emit(std::size_t i, std::string name, Role role, std::string collection, std::vector<std::size_t> perm = {},
            std::vector<bool> flip = {}) {
    TensorInfo info = inner.tensors()[i];
    info.name = std::move(name);
    info.role = role;
    info.collection = std::move(collection);
    info.persistent = true;
    if (!perm.empty()) info.shape = permuted(info.shape, perm);
    Op op;
    op.inner = i;
    op.perm = std::move(perm);
    op.flip = std::move(flip);
    if (!op.flip.empty() && op.perm.empty())
      for (std::size_t k = 0; k < info.shape.size(); ++k) op.perm.push_back(k);
    infos.push_back(std::move(info));
    ops.push_back(std::move(op));
    placed[i] = true;
  }

  // Extra sections (optimizer state) pass through as they are.
  void pass_extras() {
    const auto& src = inner.tensors();
    for (std::size_t i = 0; i < src.size(); ++i)
      if (src[i].role == Role::extra) {
        infos.push_back(src[i]);
        Op op;
        op.inner = i;
        ops.push_back(std::move(op));
        placed[i] = true;
      }
  }

  // Tensors that could not be placed: an error listing them, or carried over unchanged.
  void finish_unplaced(const char* target) {
    const auto& src = inner.tensors();
    std::vector<std::string> names;
    for (std::size_t i = 0; i < src.size(); ++i)
      if (!placed[i]) names.push_back(src[i].role == Role::extra ? src[i].section + "/" + src[i].name : src[i].name);
    report.unmapped = names;
    if (names.empty()) return;
    if (!options.keep_unmapped) {
      std::string list;
      for (std::size_t k = 0; k < names.size() && k < 20; ++k) list += (k ? ", " : "") + quote(names[k]);
      if (names.size() > 20) list += fmt::format(" and {} more", names.size() - 20);
      fail(ErrorCode::invalid_argument, file,
           "{} tensor{} cannot be placed in the {} layout: {} (use --keep-unmapped to carry them over unchanged)",
           names.size(), names.size() == 1 ? "" : "s", target, list);
    }
    for (std::size_t i = 0; i < src.size(); ++i)
      if (!placed[i]) {
        infos.push_back(src[i]);
        Op op;
        op.inner = i;
        ops.push_back(std::move(op));
      }
  }
};

std::unique_ptr<Source> to_flax(Source& inner, const LayoutOptions& options, const std::string& file,
                                LayoutReport* report) {
  const auto& src = inner.tensors();
  Builder b{inner, options, file, {}, {}, std::vector<bool>(src.size(), false), {}};
  // The model's tensors by module, in order of first appearance.
  std::vector<std::string> modules;
  std::map<std::string, std::map<std::string, std::size_t>> leaves;
  for (std::size_t i = 0; i < src.size(); ++i) {
    if (src[i].role == Role::extra) continue;
    auto [module, leaf] = split_last(src[i].name);
    if (!leaves.count(module)) modules.push_back(module);
    leaves[module][leaf] = i;
  }
  Metadata record = {{"from", "torch"},
                     {"order", Metadata::array()},
                     {"num_batches_tracked", Metadata::object()},
                     {"embedding", Metadata::array()},
                     {"conv_transpose", Metadata::array()}};
  for (std::size_t i = 0; i < src.size(); ++i)
    if (src[i].role != Role::extra) record["order"].push_back(src[i].name);
  std::map<std::string, Shape> target;  // the template's tensors: name -> shape
  for (const auto& t : options.template_tensors)
    if (t.role != Role::extra) target.emplace(t.name, t.shape);
  std::vector<std::string> by_name, assumed_linear, assumed_conv;  // decisions made without proof
  for (const auto& module : modules) {
    const auto& has = leaves[module];
    auto find = [&](const char* leaf) -> std::optional<std::size_t> {
      auto it = has.find(leaf);
      return it == has.end() ? std::nullopt : std::optional<std::size_t>(it->second);
    };
    const auto weight = find("weight"), bias = find("bias"), mean = find("running_mean"), var = find("running_var"),
               tracked = find("num_batches_tracked");
    const auto name = [&](const char* leaf) { return join(module, leaf); };
    const auto is_buffer = [&](std::optional<std::size_t> i) { return i && src[*i].role == Role::buffer; };
    if (is_buffer(mean) && is_buffer(var) && src[*mean].shape.size() == 1 && src[*var].shape.size() == 1) {
      // BatchNorm.
      if (weight && src[*weight].shape.size() == 1) b.emit(*weight, name("scale"), Role::parameter, "");
      if (bias && src[*bias].shape.size() == 1) b.emit(*bias, name("bias"), Role::parameter, "");
      b.emit(*mean, name("mean"), Role::buffer, "batch_stats");
      b.emit(*var, name("var"), Role::buffer, "batch_stats");
      if (tracked && src[*tracked].shape.empty() && src[*tracked].dtype == DType::int64) {
        const Tensor t = inner.read(*tracked);
        record["num_batches_tracked"][module] = t.as<std::int64_t>()[0];
        b.placed[*tracked] = true;
        b.report.dropped.push_back(name("num_batches_tracked"));
      }
      continue;
    }
    if (!weight || src[*weight].role != Role::parameter) continue;
    const std::size_t rank = src[*weight].shape.size();
    const bool bias_ok = !bias || (src[*bias].role == Role::parameter && src[*bias].shape.size() == 1);
    if (!bias_ok) continue;
    const auto& wshape = src[*weight].shape;
    if (rank == 1) {  // LayerNorm, GroupNorm, BatchNorm without running statistics
      b.emit(*weight, name("scale"), Role::parameter, "");
    } else if (rank == 2) {
      // An Embedding is a 2-D weight without a bias, as is a Linear(bias=False): decided by the
      // user's declaration, the class the file names, the target template's names and shapes,
      // then the module's name; what is still ambiguous becomes a Linear and is reported.
      const std::string cls = module_class(inner.metadata(), module);
      const Shape transposed_shape = {wshape[1], wshape[0]};
      bool embedding = false;
      if (matches(options.embedding, module)) {
        if (bias) continue;  // an Embedding has no bias: not what was declared
        embedding = true;
      } else if (!cls.empty()) {
        embedding = class_is(cls, {"Embedding"});
        if (embedding && bias) continue;
      } else if (!bias) {
        if (const auto t = target.find(name("embedding")); t != target.end() && t->second == wshape) {
          embedding = true;
        } else if (const auto k = target.find(name("kernel")); k != target.end() && k->second == transposed_shape) {
          embedding = false;
        } else if (named_like_embedding(module)) {
          embedding = true;
          by_name.push_back(src[*weight].name);
        } else {
          assumed_linear.push_back(src[*weight].name);
        }
      }
      if (embedding) {
        b.emit(*weight, name("embedding"), Role::parameter, "");
        record["embedding"].push_back(module);
      } else {
        b.emit(*weight, name("kernel"), Role::parameter, "", {1, 0});
      }
    } else if (rank >= 3 && rank <= 5) {
      const bool evident = bias && src[*bias].shape[0] == wshape[1] && wshape[0] != wshape[1];
      const bool declared =
          matches(options.conv_transpose, module) ||
          class_is(module_class(inner.metadata(), module), {"ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d"});
      // A ConvTranspose whose bias is longer than its weight's second axis has groups > 1,
      // which Flax's ConvTranspose lacks: not placed.
      if (declared && bias && src[*bias].shape[0] != wshape[1]) continue;
      // Without a bias, or with one as long as both channel axes, a Conv and a ConvTranspose look
      // the same: a Conv by default, reported.
      if (!declared && !evident && (!bias || wshape[0] == wshape[1]) && module_class(inner.metadata(), module).empty())
        assumed_conv.push_back(src[*weight].name);
      if (declared || evident) {
        std::vector<bool> flip(rank, false);
        for (std::size_t k = 2; k < rank; ++k) flip[k] = true;
        b.emit(*weight, name("kernel"), Role::parameter, "", to_flax_perm(rank, true), flip);
        record["conv_transpose"].push_back(module);
      } else {
        b.emit(*weight, name("kernel"), Role::parameter, "", to_flax_perm(rank, false));
      }
    } else {
      continue;
    }
    if (bias) b.emit(*bias, name("bias"), Role::parameter, "");
  }
  if (!by_name.empty())
    b.report.notes.push_back(fmt::format(
        "{} 2-D weight{} without a bias taken for an Embedding by the module's name: {} (a Linear? leave it out of "
        "--embedding and give --template)",
        by_name.size(), by_name.size() == 1 ? "" : "s", name_list(by_name)));
  if (!assumed_linear.empty())
    b.report.notes.push_back(fmt::format(
        "{} 2-D weight{} without a bias and no recorded class taken for a Linear (kernel transposed): {} (an "
        "Embedding? name it with --embedding REGEX or give --template)",
        assumed_linear.size(), assumed_linear.size() == 1 ? "" : "s", name_list(assumed_linear)));
  if (!assumed_conv.empty())
    b.report.notes.push_back(fmt::format(
        "{} weight{} of rank 3-5 whose bias cannot tell (none, or in = out channels) and no recorded class taken for "
        "a Conv: {} (a ConvTranspose? name it with --conv-transpose REGEX)",
        assumed_conv.size(), assumed_conv.size() == 1 ? "" : "s", name_list(assumed_conv)));
  b.pass_extras();
  b.finish_unplaced("flax");
  Metadata metadata = inner.metadata().is_object() ? inner.metadata() : Metadata::object();
  metadata[std::string(kLayoutKey)] = record;
  if (report) *report = b.report;
  return std::make_unique<LayoutSource>(inner, std::move(b.infos), std::move(b.ops), std::move(metadata));
}

std::unique_ptr<Source> to_torch(Source& inner, const LayoutOptions& options, const std::string& file,
                                 LayoutReport* report) {
  const auto& src = inner.tensors();
  Builder b{inner, options, file, {}, {}, std::vector<bool>(src.size(), false), {}};
  const Metadata& meta = inner.metadata();
  const Metadata record = meta.is_object() && meta.contains(kLayoutKey) ? meta[std::string(kLayoutKey)] : Metadata::object();
  const Metadata transposed = record.value("conv_transpose", Metadata::array());
  const Metadata counts = record.value("num_batches_tracked", Metadata::object());
  std::vector<std::string> modules;
  std::map<std::string, std::map<std::string, std::size_t>> params, stats;
  for (std::size_t i = 0; i < src.size(); ++i) {
    if (src[i].role == Role::extra) continue;
    auto [module, leaf] = split_last(src[i].name);
    // Parameters, and the batch_stats collection; other buffers cannot be placed.
    if (src[i].role == Role::buffer && src[i].collection != "batch_stats") continue;
    auto& into = src[i].role == Role::parameter ? params : stats;
    if (!params.count(module) && !stats.count(module)) modules.push_back(module);
    into[module][leaf] = i;
  }
  for (const auto& module : modules) {
    auto find = [&](auto& map, const char* leaf) -> std::optional<std::size_t> {
      auto m = map.find(module);
      if (m == map.end()) return std::nullopt;
      auto it = m->second.find(leaf);
      return it == m->second.end() ? std::nullopt : std::optional<std::size_t>(it->second);
    };
    const auto name = [&](const char* leaf) { return join(module, leaf); };
    const auto kernel = find(params, "kernel"), embedding = find(params, "embedding"), scale = find(params, "scale"),
               bias = find(params, "bias"), mean = find(stats, "mean"), var = find(stats, "var");
    const int kinds = !!kernel + !!embedding + !!scale;
    if (kinds > 1) continue;  // not one layer: left unplaced
    if (bias && src[*bias].shape.size() != 1) continue;
    if (kernel) {
      const std::size_t rank = src[*kernel].shape.size();
      if (rank == 2) {
        b.emit(*kernel, name("weight"), Role::parameter, "", {1, 0});
      } else if (rank >= 3 && rank <= 5) {
        if (listed(transposed, module) || matches(options.conv_transpose, module)) {
          std::vector<bool> flip(rank, false);
          for (std::size_t k = 0; k + 2 < rank; ++k) flip[k] = true;
          b.emit(*kernel, name("weight"), Role::parameter, "", to_torch_perm(rank, true), flip);
        } else {
          b.emit(*kernel, name("weight"), Role::parameter, "", to_torch_perm(rank, false));
        }
      } else {
        continue;
      }
    } else if (embedding && src[*embedding].shape.size() == 2) {
      b.emit(*embedding, name("weight"), Role::parameter, "");
    } else if (scale && src[*scale].shape.size() == 1) {
      b.emit(*scale, name("weight"), Role::parameter, "");
    } else if (!(mean && var)) {
      continue;
    }
    if (bias) b.emit(*bias, name("bias"), Role::parameter, "");
    if (mean && var && src[*mean].shape.size() == 1 && src[*var].shape.size() == 1) {
      b.emit(*mean, name("running_mean"), Role::buffer, std::string(kDefaultBufferCollection));
      b.emit(*var, name("running_var"), Role::buffer, std::string(kDefaultBufferCollection));
      // num_batches_tracked as torch->flax recorded it, else 0 (a fresh BatchNorm's value).
      TensorInfo info;
      info.name = name("num_batches_tracked");
      info.role = Role::buffer;
      info.collection = std::string(kDefaultBufferCollection);
      info.dtype = DType::int64;
      Op op;
      op.constant = Tensor::zeros(DType::int64, {});
      const auto it = counts.find(module);
      if (it != counts.end() && it->is_number_integer()) {
        const auto value = it->get<std::int64_t>();
        std::memcpy(op.constant.mutable_bytes().data(), &value, 8);
      }
      b.infos.push_back(std::move(info));
      b.ops.push_back(std::move(op));
    }
  }
  b.pass_extras();
  b.finish_unplaced("torch");
  // torch's own order when torch -> flax recorded it.
  if (record.contains("order") && record["order"].is_array()) {
    std::map<std::string, std::size_t> rank;
    for (const auto& n : record["order"])
      if (n.is_string()) rank.emplace(n.get<std::string>(), rank.size());
    std::vector<std::size_t> order(b.infos.size());
    for (std::size_t k = 0; k < order.size(); ++k) order[k] = k;
    std::stable_sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) {
      const auto rx = b.infos[x].role == Role::extra ? rank.end() : rank.find(b.infos[x].name);
      const auto ry = b.infos[y].role == Role::extra ? rank.end() : rank.find(b.infos[y].name);
      const std::size_t kx = rx == rank.end() ? SIZE_MAX : rx->second, ky = ry == rank.end() ? SIZE_MAX : ry->second;
      return kx < ky;
    });
    std::vector<TensorInfo> infos;
    std::vector<Op> ops;
    for (auto k : order) {
      infos.push_back(std::move(b.infos[k]));
      ops.push_back(std::move(b.ops[k]));
    }
    b.infos = std::move(infos);
    b.ops = std::move(ops);
  }
  Metadata metadata = meta.is_object() ? meta : Metadata::object();
  metadata.erase(std::string(kLayoutKey));
  if (report) *report = b.report;
  return std::make_unique<LayoutSource>(inner, std::move(b.infos), std::move(b.ops), std::move(metadata));
}

}  // namespace

std::unique_ptr<Source> map_layout(Source& inner, const LayoutOptions& options, const std::string& file,
                                   LayoutReport* report) {
  return options.target == Layout::flax ? to_flax(inner, options, file, report) : to_torch(inner, options, file, report);
}

}  // namespace ckpt

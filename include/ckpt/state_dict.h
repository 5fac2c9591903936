// The model state of a checkpoint: parameters and buffers in insertion order, further named
// sections for state that is neither (optimizer moments, step counts), and metadata.
#pragma once

#include "ckpt/api.h"

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "ckpt/tensor.h"

CKPT_API_BEGIN

namespace ckpt {

// Checkpoint-level metadata: a JSON object (string keys to strings, integers, floats, bools and
// nested lists/maps), insertion-ordered. Integers and floats stay distinct.
using Metadata = nlohmann::ordered_json;

enum class Role {
  parameter,  // trained by the optimizer
  buffer,     // saved but never trained (BatchNorm statistics, masks, counters)
  extra,      // a tensor of a further section, such as "optimizer"
};

// "parameter", "buffer", "extra".
const char* role_name(Role role) noexcept;

// Section names of the model: parameters and buffers. Other sections hold Role::extra tensors.
inline constexpr std::string_view kParametersSection = "parameters";
inline constexpr std::string_view kBuffersSection = "buffers";

// The collection a buffer belongs to when nothing says otherwise (Flax collections such as
// "batch_stats" and "cache" are carried by name).
inline constexpr std::string_view kDefaultBufferCollection = "buffers";

// Where the roles in a StateDict came from.
enum class RoleSource {
  stored,     // recorded by the format itself (ckpt-h5 sections)
  metadata,   // recorded by ckpt's convention in a format without a slot for roles
  heuristic,  // inferred from dtypes and names (see format-spec/conventions.md)
  module,     // read from a pickled module's _parameters and _buffers (torch.save(model))
  torchscript,  // read from the __parameters__ and __buffers__ of TorchScript classes (torch.jit.save)
  none,       // not applicable (no tensors)
};
const char* role_source_name(RoleSource source) noexcept;

// The metadata key by which a file says that its roles were inferred (RoleSource::heuristic) when
// it was written, whatever its format stores: `"ckpt.role_source": "heuristic"`. save() sets it
// when its Source's roles were inferred (a plain state_dict converted to ckpt-h5) and removes it
// otherwise; a Reader finding it reports RoleSource::heuristic (format-spec/conventions.md §1).
inline constexpr std::string_view kRoleSourceKey = "ckpt.role_source";

// Everything about an entry except its data.
struct EntryInfo {
  std::string name;  // full key, e.g. "layer1.0.bn1.running_mean"; any UTF-8 string
  Role role = Role::parameter;
  // For Role::extra: the section name (not "parameters" or "buffers"). Empty otherwise.
  std::string section;
  // For Role::buffer: the collection (default kDefaultBufferCollection) and whether the buffer is
  // part of the module's state_dict (torch `persistent=`). Ignored otherwise.
  std::string collection;
  bool persistent = true;

  // "parameters", "buffers" or the extra section's name.
  std::string_view section_name() const noexcept;
};

// Description of a tensor in a checkpoint, as listed by a Reader without reading data.
struct TensorInfo : EntryInfo {
  DType dtype = DType::float32;
  Shape shape;
  std::uint64_t nbytes() const { return shape_nbytes(dtype, shape); }
};

struct Entry : EntryInfo {
  Tensor tensor;
  // The entry without its data: name, role, dtype, shape.
  TensorInfo info() const {
    TensorInfo out;
    static_cast<EntryInfo&>(out) = *this;
    out.dtype = tensor.dtype();
    out.shape = tensor.shape();
    return out;
  }
};

class StateDict {
 public:
  // Add a model parameter. Throws invalid_argument if `name` is already a parameter or buffer.
  Entry& add_parameter(std::string name, Tensor tensor);
  // Add a buffer; an empty collection means kDefaultBufferCollection.
  Entry& add_buffer(std::string name, Tensor tensor, bool persistent = true,
                    std::string collection = {});
  // Add a tensor to a further section (e.g. "optimizer"). Names are unique per section.
  Entry& add_extra(std::string section, std::string name, Tensor tensor);
  // Add any entry (role and section taken from `info`).
  Entry& add(EntryInfo info, Tensor tensor);

  // All entries, in insertion order. On a temporary (`for (auto& e : ckpt::load(path).entries())`)
  // the entries themselves are returned, moved out: a reference into the temporary would dangle
  // before the loop's first step. The same holds for at() and metadata().
  const std::vector<Entry>& entries() const& noexcept { return entries_; }
  std::vector<Entry>& entries() & noexcept { return entries_; }
  std::vector<Entry> entries() && noexcept { return std::move(entries_); }
  std::size_t size() const noexcept { return entries_.size(); }
  bool empty() const noexcept { return entries_.empty(); }

  // Model entry (parameter or buffer) by name, or an extra section's entry; nullptr if absent.
  // The mutable forms let a caller edit an entry's tensor (or replace it) in place; names, roles
  // and sections are changed by building a new StateDict.
  const Entry* find(std::string_view name) const;
  const Entry* find(std::string_view section, std::string_view name) const;
  Entry* find(std::string_view name);
  Entry* find(std::string_view section, std::string_view name);
  // Like find but throws invalid_argument naming the missing key.
  const Tensor& at(std::string_view name) const&;
  Tensor& at(std::string_view name) &;
  Tensor at(std::string_view name) &&;

  std::size_t count(Role role) const;
  // Extra section names in first-appearance order.
  std::vector<std::string> extra_sections() const;

  Metadata& metadata() & noexcept { return metadata_; }
  const Metadata& metadata() const& noexcept { return metadata_; }
  Metadata metadata() && noexcept { return std::move(metadata_); }

  RoleSource role_source() const noexcept { return role_source_; }
  void set_role_source(RoleSource source) noexcept { role_source_ = source; }

 private:
  std::vector<Entry> entries_;
  // key: section name + '\0' + entry name -> position in entries_
  std::unordered_map<std::string, std::size_t> index_;
  Metadata metadata_ = Metadata::object();
  RoleSource role_source_ = RoleSource::stored;
};

}  // namespace ckpt

CKPT_API_END
